//! Go's own `path.Match` answers (tests/vectors/policy-glob.json, produced by Go 1.21):
//! the matcher of the 2023 servers' policy rules and key list patterns. kes must agree
//! on every vector except for its two documented deviations, each asserted here:
//! - a trailing `*` also crosses a `/` (the last release's prefix rule), and
//! - a rule that can match no API path is refused when the config is loaded.
//!
//! A pattern Go calls malformed is refused as a rule and as a list pattern.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Rule, check_syntax, glob_match};

const VECTORS: &str = include_str!("../../tests/vectors/policy-glob.json");

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    pattern: String,
    path: String,
    #[serde(rename = "match")]
    matched: bool,
    bad_pattern: bool,
    trailing_star_crosses_slash: bool,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str::<Vectors>(VECTORS).unwrap().vectors
}

#[test]
fn every_go_path_match_vector_holds_apart_from_the_two_deviations() {
    let vectors = vectors();
    assert!(vectors.len() > 4000, "the vector file is complete");
    let (mut agreed, mut crossed) = (0, 0);
    let mut dead = BTreeSet::new();
    for v in &vectors {
        let what = format!("pattern {:?}, path {:?}", v.pattern, v.path);
        if v.bad_pattern {
            continue; // the next test
        }
        assert!(
            check_syntax(&v.pattern).is_ok(),
            "{what}: well formed for Go"
        );
        let ours = glob_match(&v.pattern, &v.path);
        if ours == v.matched {
            agreed += 1;
        } else {
            // Deviation 1, and only where the vectors say the prefix rule may differ:
            // kes matches more, through a trailing star, across a slash.
            assert!(
                v.trailing_star_crosses_slash && ours && !v.matched,
                "{what}: kes says {ours}, Go says {}",
                v.matched
            );
            assert!(
                v.pattern.ends_with('*') && !v.pattern.ends_with("\\*"),
                "{what}"
            );
            assert!(
                v.path.matches('/').count() > v.pattern.matches('/').count(),
                "{what}: the path goes on past the star's segment"
            );
            crossed += 1;
        }
        match Rule::parse(&v.pattern) {
            Ok(rule) => assert_eq!(rule.matches(&v.path), ours, "{what}: rule and glob agree"),
            Err(e) => {
                // Deviation 2: refused at load because no API path can match it.
                assert!(e.contains("matches no API path"), "{what}: {e}");
                dead.insert(v.pattern.clone());
            }
        }
    }
    // Every well-formed vector is either the same answer or the first deviation.
    assert_eq!((agreed, crossed), (2787, 58));
    // Exactly these well-formed patterns are dead rules. Each needs a route segment
    // that does not exist (`/v1/key/my-app`), a literal `*` or `!` in a name, an empty
    // range (`[z-a]`), a `/` inside a name (`…/decrypt/*/*`), or a `*`, `?` or a class
    // without `/` (Go's `[!a]` is '!' or 'a') where the route has its `/`; none can
    // match a request.
    let expected_dead: BTreeSet<String> = [
        "/v1/key/*-app",
        "/v1/key/*app*",
        "/v1/key/??",
        "/v1/key/[!]",
        "/v1/key/[a-z][0-9]*",
        r"/v1/key/[a\-z]*",
        "/v1/key/[z-a]*",
        r"/v1/key/\*",
        "/v1/key/bulk/decrypt/*/*",
        "/v1/key/bulk/decrypt/*/decrypt/*",
        "/v1/key/bulk/decrypt/[!]",
        "/v1/key/bulk/decrypt/[z-a]*",
        r"/v1/key/bulk/decrypt/\*",
        r"/v1/key/bulk/decrypt/my-app\*",
        "/v1/key/decrypt/*/*",
        "/v1/key/decrypt/*/decrypt/*",
        "/v1/key/decrypt/[!]",
        "/v1/key/decrypt/[z-a]*",
        r"/v1/key/decrypt/\*",
        r"/v1/key/decrypt/my-app\*",
        "/v1/key/generate*my-app",
        "/v1/key/generate/*/*",
        "/v1/key/generate/*/decrypt/*",
        "/v1/key/generate/[!]",
        "/v1/key/generate/[z-a]*",
        r"/v1/key/generate/\*",
        r"/v1/key/generate/my-app\*",
        "/v1/key/generate?my-app",
        "/v1/key/generate[!a]my-app",
        "/v1/key/list/*/*",
        "/v1/key/list/*/decrypt/*",
        "/v1/key/list/[!]",
        "/v1/key/list/[z-a]*",
        r"/v1/key/list/\*",
        r"/v1/key/list/my-app\*",
        "/v1/key/my-?pp*",
        "/v1/key/my-[!a]pp*",
        "/v1/key/my-[^a]pp*",
        "/v1/key/my-[a-c]pp*",
        "/v1/key/my-app",
        "/v1/key/my-app*",
        "/v1/key/my-app-*",
        "/v1/key/my-app-internal*",
        r"/v1/key/my-app\*",
        r"/v1/key/my\-app*",
        "/v1/key?generate/my-app",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(dead, expected_dead, "dead rules");
}

#[test]
fn patterns_go_calls_malformed_are_refused_as_rules_and_list_patterns() {
    let bad: BTreeSet<String> = vectors()
        .into_iter()
        .filter(|v| v.bad_pattern)
        .map(|v| v.pattern)
        .collect();
    assert!(bad.len() >= 12, "{bad:?}");
    for pattern in &bad {
        let err = check_syntax(pattern).expect_err(pattern);
        let rule = Rule::parse(pattern).expect_err(pattern);
        assert!(rule.contains("is malformed"), "{pattern}: {rule}");
        assert!(rule.contains(err), "{pattern}: {rule}");
    }
    // The forms POSIX would accept and Go refuses, each with its reason.
    for (pattern, reason) in [
        ("/v1/key/generate/[]a]*", "'-' or ']'"),
        ("/v1/key/generate/[a-]*", "'-' or ']'"),
        ("/v1/key/generate/[-a]*", "'-' or ']'"),
        ("/v1/key/generate/[^]", "'-' or ']'"),
        ("/v1/key/generate/[]", "'-' or ']'"),
        ("/v1/key/generate/[a-z", "unclosed"),
        ("/v1/key/generate/[a\\", "unclosed"),
        ("/v1/key/generate/my-app\\", "escape"),
        // What follows an escape is still checked.
        ("/v1/key/generate/my\\-app[", "unclosed"),
        ("/v1/key/generate/my\\-app[]*", "'-' or ']'"),
        ("/v1/key/generate/caf\u{e9}*", "not ASCII"),
    ] {
        let err = check_syntax(pattern).expect_err(pattern);
        assert!(err.contains(reason), "{pattern}: {err}");
    }
}

#[test]
fn escapes_and_ranges_inside_classes_match_as_go_does() {
    assert!(glob_match("/v1/key/x/[a\\-z]", "/v1/key/x/-"));
    assert!(!glob_match("/v1/key/x/[a\\-z]", "/v1/key/x/b"));
    assert!(glob_match("/v1/key/x/[\\]]", "/v1/key/x/]"));
    assert!(glob_match("/v1/key/x/[a-c\\-]", "/v1/key/x/-"));
    assert!(glob_match("/v1/key/x/[^a-c]", "/v1/key/x/d"));
    assert!(!glob_match("/v1/key/x/[^a-c]", "/v1/key/x/b"));
    assert!(glob_match("/v1/key/x/[!]", "/v1/key/x/!"));
    assert!(!glob_match("/v1/key/x/[!]", "/v1/key/x/a"));
    assert!(!glob_match("/v1/key/x/[z-a]", "/v1/key/x/m"));
    assert!(glob_match("/v1/key/x/[a-a]", "/v1/key/x/a"));
    assert!(!glob_match("/v1/key/x/[a-a]", "/v1/key/x/b"));
}

/// Go's `*` and `?` stop at a `/`; a class does not: it matches any character it admits.
#[test]
fn a_class_matches_a_slash_it_admits_and_stars_and_marks_never_do() {
    let path = "/v1/key/generate/my-app";
    for pattern in [
        "/v1/key/generate[/]my-app",
        "/v1/key/generate[^x]my-app",
        "/v1/key/generate[.-0]my-app",
        "/v1/key/generate[!-/]my-app",
        "/v1/key[/]generate[/]*",
    ] {
        assert!(glob_match(pattern, path), "{pattern}");
        let rule = Rule::parse(pattern).unwrap();
        assert!(rule.matches(path), "{pattern} as a rule");
    }
    for pattern in [
        "/v1/key/generate?my-app",
        "/v1/key/generate*my-app",
        "/v1/key/generate[^/]my-app",
        "/v1/key/generate[!a]my-app",
        "/v1/key/generate[a-z]my-app",
    ] {
        assert!(!glob_match(pattern, path), "{pattern}");
    }
    let cases = vectors();
    let at_a_slash: Vec<_> = cases
        .iter()
        .filter(|v| {
            !v.bad_pattern && v.matched && v.pattern.contains('[') && !v.pattern.contains('*')
        })
        .filter(|v| v.pattern.replace("[/]", "").matches('/').count() < v.path.matches('/').count())
        .collect();
    assert_eq!(at_a_slash.len(), 3, "the vectors' classes that match a '/'");
    for v in at_a_slash {
        assert!(glob_match(&v.pattern, &v.path), "{} {}", v.pattern, v.path);
    }
}
