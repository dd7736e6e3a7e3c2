//! Key list patterns through the server, held against Go's own `path.Match` answers
//! (tests/vectors/policy-glob.json): the 2023 servers matched listing patterns with it.
//! kes agrees on every glob; a pattern without wildcards is a name prefix (the last
//! release's rule, which the 2023 SDK's `*` patterns keep their meaning under), and a
//! pattern Go calls malformed is refused with 400, never given a meaning of its own.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Kes, Pki};

const PREFIX: &str = "/v1/key/list/";

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[test]
fn key_list_patterns_answer_as_go_path_match() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/policy-glob.json")).unwrap();
    // pattern -> (malformed, names Go matches); and every key name the vectors use.
    let mut patterns: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for v in vectors["vectors"].as_array().unwrap() {
        let (Some(pattern), Some(path)) = (
            v["pattern"].as_str().unwrap().strip_prefix(PREFIX),
            v["path"].as_str().unwrap().strip_prefix(PREFIX),
        ) else {
            continue;
        };
        let entry = patterns.entry(pattern.to_string()).or_default();
        entry.0 = v["bad_pattern"].as_bool().unwrap();
        if is_name(path) {
            names.insert(path.to_string());
            if v["match"].as_bool().unwrap() {
                entry.1.insert(path.to_string());
            }
        }
    }
    assert!(
        patterns.len() >= 30 && names.len() >= 10,
        "{patterns:?} {names:?}"
    );

    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let kes = Kes::start(&pki, &config, &[]);
    let mut c = kes.client(&admin);
    for name in &names {
        assert_eq!(
            c.post(&format!("/v1/key/create/{name}"), b"").status,
            200,
            "{name}"
        );
    }
    let (mut globs, mut prefixes, mut refused) = (0, 0, 0);
    for (pattern, (malformed, go_names)) in &patterns {
        let resp = c.get(&format!("{PREFIX}{}", percent_encode(pattern)));
        if *malformed {
            assert_eq!(resp.status, 400, "{pattern}: {}", resp.text());
            assert!(
                resp.message().contains("is invalid"),
                "{pattern}: {}",
                resp.message()
            );
            refused += 1;
            continue;
        }
        assert_eq!(resp.status, 200, "{pattern}: {}", resp.text());
        let listed: BTreeSet<String> = resp.listed_names().into_iter().collect();
        let literal = pattern.trim_end_matches('*');
        if literal.contains(['*', '?', '[', '\\']) {
            // A glob: exactly Go's answer (no name has a '/', so the trailing star's
            // prefix rule changes nothing here).
            assert_eq!(&listed, go_names, "glob {pattern}");
            globs += 1;
        } else {
            // No wildcard but an optional trailing star: a name prefix.
            let expected: BTreeSet<String> = names
                .iter()
                .filter(|n| n.starts_with(literal))
                .cloned()
                .collect();
            assert_eq!(listed, expected, "prefix {pattern}");
            if pattern.ends_with('*') {
                assert_eq!(
                    &listed, go_names,
                    "for '{pattern}' the prefix is Go's answer too"
                );
            }
            prefixes += 1;
        }
    }
    assert!(
        globs >= 15 && prefixes >= 4 && refused >= 12,
        "{globs} {prefixes} {refused}"
    );
}

/// Each condition of the key list pattern check refuses on its own: the length, the
/// characters of the literal prefix, a second trailing star of a prefix, and a glob's
/// syntax. Policy and identity listings take a prefix with one optional star.
#[test]
fn invalid_list_patterns_are_refused_with_400() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\npolicy:\n  p:\n    allow: [/v1/status]\n    identities: [{}]\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            "0".repeat(64),
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &[]);
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/my-key", b"").status, 200);
    let long_ok = "a".repeat(80);
    let long_bad = "a".repeat(81);
    for (pattern, status) in [
        (long_ok.as_str(), 200),
        (long_bad.as_str(), 400),
        ("my-key", 200),
        ("my-key*", 200),
        ("my-key**", 400),
        ("my%2Ekey", 400), // '.'
        ("my%2Ek*", 400),
        ("my-*y", 200),   // a glob
        ("my%2E*y", 400), // a glob whose literal prefix is no name
        ("my-%5B", 400),  // '[': an unclosed class
        ("my-%5Bk%5D*", 200),
    ] {
        let resp = c.get(&format!("{PREFIX}{pattern}"));
        assert_eq!(resp.status, status, "{pattern}: {}", resp.text());
        if status == 400 {
            assert!(resp.message().contains("is invalid"), "{}", resp.message());
        }
    }
    for route in ["/v1/policy/list/", "/v1/identity/list/"] {
        for (pattern, status) in [
            ("", 200),
            ("*", 200),
            ("p*", 200),
            ("p**", 400),
            ("p%2E", 400),
            (long_ok.as_str(), 200),
            (long_bad.as_str(), 400),
        ] {
            let resp = c.get(&format!("{route}{pattern}"));
            assert_eq!(resp.status, status, "{route}{pattern}: {}", resp.text());
        }
    }
}
