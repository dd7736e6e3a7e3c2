//! Policies: which identity may call which API path.
//!
//! Rule semantics are chosen so that configs of both Go generations keep their meaning:
//! a rule is a glob (as in the 2023 servers: `*` matches within one path segment, `?` one
//! character other than `/`, `[a-z]` a class; as in Go's `path.Match`, a class matches
//! any character it admits, `/` included, so a deny rule such as
//! `/v1/key/generate[/]my-app` denies what the original denied), except that a `*` at the very end matches everything that
//! follows, `/` included (as in the last release, where a trailing `*` is a prefix match).
//! Key, policy and identity names never contain `/`, so for every real API path the two
//! generations agree under this rule; it only revives mid-path wildcards such as
//! `/v1/key/*/my-key`, which the last release silently treated as literal text.
//!
//! A rule that can never match any route is refused when the config is loaded (the
//! original silently ignores it, its issue #510). One exception keeps widely copied
//! MinIO configs working as their authors meant: a rule naming a prefix route without its
//! trailing slash, such as `/v1/key/bulk/decrypt`, covers that route for every name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::names::valid_name_char;
use crate::routes::{ROUTES, Route};

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as written in the config file.
    pub text: String,
    /// The pattern actually matched (differs from `text` only for the slash exception).
    pattern: String,
}

impl Rule {
    /// Parses and checks a rule; the error explains why it can never match.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        if !text.starts_with('/') {
            return Err(format!(
                "policy rule '{text}' must be an API path starting with '/', e.g. /v1/key/generate/my-app*"
            ));
        }
        if let Err(e) = check_syntax(text) {
            return Err(format!("policy rule '{text}' is malformed: it {e}"));
        }
        let pattern = match ROUTES
            .iter()
            .find(|r| r.is_prefix() && r.path.strip_suffix('/') == Some(text))
        {
            Some(route) => format!("{}*", route.path),
            None => text.to_string(),
        };
        if !ROUTES
            .iter()
            .any(|route| could_match(pattern.as_bytes(), route))
        {
            return Err(format!(
                "policy rule '{text}' matches no API path, so it would never apply; check the spelling against 'kes status --api' (e.g. /v1/key/generate/*)"
            ));
        }
        Ok(Rule {
            text: text.to_string(),
            pattern,
        })
    }

    /// Whether this rule matches the request `path` (without query string).
    pub fn matches(&self, path: &str) -> bool {
        glob(self.pattern.as_bytes(), path.as_bytes(), false)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Rule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Checks a pattern's syntax as Go's `path.Match` does: a Go server refuses (never
/// applies) a malformed pattern, so kes must not give one a meaning of its own.
pub fn check_syntax(pattern: &str) -> Result<(), &'static str> {
    let p = pattern.as_bytes();
    if !pattern.is_ascii() {
        // API paths are ASCII, so such a rule could never match; Go's matcher would also
        // read multi-byte characters where this one reads bytes.
        return Err("contains a character that is not ASCII");
    }
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => {
                if i + 1 >= p.len() {
                    return Err("ends with an escape character '\\'");
                }
                i += 2;
            }
            b'[' => i = class(p, i, 0)?.0,
            _ => i += 1,
        }
    }
    Ok(())
}

const UNCLOSED_CLASS: &str = "has an unclosed '[' character class";

/// Reads the character class at `p[start] == '['` with Go's grammar: `[`, an optional
/// `^`, one or more ranges `c` or `lo-hi`, `]`. Returns the index just past the `]` and
/// whether the class admits `c`. Go refuses what POSIX would accept: an empty class
/// (`[]`, `[^]`), a `]` first (`[]a]`), a `-` at either end (`[-a]`, `[a-]`).
fn class(p: &[u8], start: usize, c: u8) -> Result<(usize, bool), &'static str> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut admitted = false;
    let mut ranges = 0;
    loop {
        if ranges > 0 && p.get(i) == Some(&b']') {
            return Ok((i + 1, admitted != negated));
        }
        let (lo, next) = class_char(p, i)?;
        let (hi, next) = if p[next] == b'-' {
            class_char(p, next + 1)?
        } else {
            (lo, next)
        };
        admitted |= lo <= c && c <= hi;
        ranges += 1;
        i = next;
    }
}

/// One end of a class range at `p[i]`: any character but `-` and `]`, or an escaped one.
/// The class must go on after it. Returns the character and the index after it.
fn class_char(p: &[u8], mut i: usize) -> Result<(u8, usize), &'static str> {
    match p.get(i) {
        None => return Err(UNCLOSED_CLASS),
        Some(b'-' | b']') => {
            return Err(
                "has a '-' or ']' where a character class expects a character; escape it with '\\'",
            );
        }
        Some(b'\\') => i += 1,
        Some(_) => {}
    }
    let c = *p.get(i).ok_or(UNCLOSED_CLASS)?;
    if i + 1 >= p.len() {
        return Err(UNCLOSED_CLASS);
    }
    Ok((c, i + 1))
}

/// Glob match of pattern `p` against text `t`. With `open_end`, `t` continues with a
/// name of our choosing (any run of name characters): used to ask whether a pattern
/// can match some request of a prefix route.
fn glob(p: &[u8], t: &[u8], open_end: bool) -> bool {
    Glob {
        p,
        t,
        open_end,
        failed: Vec::new(),
    }
    .at(0, 0)
}

/// One glob match in progress. Each `*` tries every split of the text, so a pattern
/// with several stars could take exponential time; remembering the (pattern, text)
/// positions already known to fail keeps it at O(|pattern| × |text|). The memory is
/// only taken when a star that is not the last character is met.
struct Glob<'a> {
    p: &'a [u8],
    t: &'a [u8],
    open_end: bool,
    failed: Vec<bool>,
}

impl Glob<'_> {
    fn at(&mut self, pi: usize, ti: usize) -> bool {
        let (p, t) = (&self.p[pi..], &self.t[ti..]);
        if p.is_empty() {
            return t.is_empty();
        }
        if t.is_empty() && self.open_end {
            return can_match_some_name(p);
        }
        match p[0] {
            b'*' if p.len() == 1 => true,
            b'*' => {
                let width = self.t.len() + 1;
                if self.failed.is_empty() {
                    self.failed = vec![false; (self.p.len() + 1) * width];
                }
                let mut k = 0;
                loop {
                    let state = (pi + 1) * width + ti + k;
                    if !self.failed[state] {
                        if self.at(pi + 1, ti + k) {
                            return true;
                        }
                        self.failed[state] = true;
                    }
                    if k == t.len() || t[k] == b'/' {
                        return false;
                    }
                    k += 1;
                }
            }
            _ if t.is_empty() => false,
            b'?' => t[0] != b'/' && self.at(pi + 1, ti + 1),
            b'[' => match class(p, 0, t[0]) {
                Ok((end, admitted)) => admitted && self.at(pi + end, ti + 1),
                Err(_) => false,
            },
            b'\\' => p.len() > 1 && p[1] == t[0] && self.at(pi + 2, ti + 1),
            c => c == t[0] && self.at(pi + 1, ti + 1),
        }
    }
}

/// Whether some string of name characters (possibly empty) matches `p`.
fn can_match_some_name(p: &[u8]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => i += 1,
            b'?' => i += 1,
            b'[' => {
                let admits_a_name_char = (0u8..128).any(|c| {
                    valid_name_char(c) && class(p, i, c).is_ok_and(|(_, admitted)| admitted)
                });
                let Ok((end, _)) = class(p, i, 0) else {
                    return false;
                };
                if !admits_a_name_char {
                    return false;
                }
                i = end;
            }
            b'\\' => {
                if i + 1 >= p.len() || !valid_name_char(p[i + 1]) {
                    return false;
                }
                i += 2;
            }
            c if valid_name_char(c) => i += 1,
            _ => return false,
        }
    }
    true
}

/// Glob match of `text` against `pattern` with the rule semantics above (used for the
/// 2023 listing patterns too).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob(pattern.as_bytes(), text.as_bytes(), false)
}

fn could_match(pattern: &[u8], route: &Route) -> bool {
    glob(pattern, route.path.as_bytes(), route.is_prefix())
}

/// A policy of the config file (`policy:`), after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    pub identities: Vec<String>,
}

/// A named policy of the config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

impl Policy {
    /// Deny wins; otherwise any allow rule admits; otherwise refused.
    pub fn allows(&self, path: &str) -> bool {
        !self.deny.iter().any(|r| r.matches(path)) && self.allow.iter().any(|r| r.matches(path))
    }
}

/// Who may do what: the admin identity and the identity → policy assignment.
#[derive(Debug, Default)]
pub struct Authorizer {
    pub admin: Option<String>,
    pub policies: BTreeMap<String, Arc<Policy>>,
    by_identity: HashMap<String, Arc<Policy>>,
}

/// The result of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admin,
    Allowed,
    Denied,
}

impl Authorizer {
    pub fn new(admin: Option<String>, policies: &BTreeMap<String, PolicyConfig>) -> Authorizer {
        let mut out = Authorizer {
            admin,
            ..Authorizer::default()
        };
        for (name, cfg) in policies {
            let policy = Arc::new(Policy {
                name: name.clone(),
                allow: cfg.allow.clone(),
                deny: cfg.deny.clone(),
            });
            for id in &cfg.identities {
                out.by_identity.insert(id.clone(), policy.clone());
            }
            out.policies.insert(name.clone(), policy);
        }
        out
    }

    pub fn verify(&self, identity: &str, path: &str) -> Verdict {
        if self.is_admin(identity) {
            return Verdict::Admin;
        }
        match self.by_identity.get(identity) {
            Some(policy) if policy.allows(path) => Verdict::Allowed,
            _ => Verdict::Denied,
        }
    }

    pub fn is_admin(&self, identity: &str) -> bool {
        !identity.is_empty() && self.admin.as_deref() == Some(identity)
    }

    /// The policy assigned to `identity`, if any.
    pub fn policy_of(&self, identity: &str) -> Option<&Arc<Policy>> {
        self.by_identity.get(identity)
    }

    /// Every assigned identity with its policy, sorted by identity.
    pub fn assignments(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .by_identity
            .iter()
            .map(|(id, p)| (id.as_str(), p.name.as_str()))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod glob_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        Rule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn trailing_star_is_a_prefix_of_the_last_release() {
        let r = rule("/v1/key/generate/my-app*");
        assert!(r.matches("/v1/key/generate/my-app"));
        assert!(r.matches("/v1/key/generate/my-app-1"));
        assert!(!r.matches("/v1/key/generate/other"));
        assert!(!r.matches("/v1/key/decrypt/my-app"));
        assert!(rule("/v1/*").matches("/v1/key/create/x"));
    }

    #[test]
    fn exact_rules_match_exactly() {
        let r = rule("/v1/status");
        assert!(r.matches("/v1/status"));
        assert!(!r.matches("/v1/status/x"));
        assert!(!r.matches("/v1/statu"));
    }

    #[test]
    fn mid_path_globs_of_2023_keep_their_meaning() {
        let r = rule("/v1/key/*/my-key");
        assert!(r.matches("/v1/key/decrypt/my-key"));
        assert!(r.matches("/v1/key/generate/my-key"));
        assert!(!r.matches("/v1/key/generate/my-key2"));
        let r = rule("/v1/key/[cg]*/app-?");
        assert!(r.matches("/v1/key/create/app-1"));
        assert!(r.matches("/v1/key/generate/app-x"));
        assert!(!r.matches("/v1/key/decrypt/app-1"));
    }

    #[test]
    fn rules_that_match_no_route_are_refused() {
        for bad in [
            "/v1/key/genrate/*",
            "/v2/key/create/*",
            "v1/key/create/*",
            "/v1/key/create/a/b",
            "/v1/key/create/my.key",
            "/v1/key/create/[abc",
            "/v1/stat",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn prefix_route_without_slash_covers_the_route() {
        let r = rule("/v1/key/bulk/decrypt");
        assert!(r.matches("/v1/key/bulk/decrypt/my-key"));
        assert!(!r.matches("/v1/key/decrypt/my-key"));
    }

    #[test]
    fn many_stars_do_not_take_exponential_time() {
        let pattern = format!("/v1/key/create/{}b", "*a".repeat(40));
        let path = format!("/v1/key/create/{}", "a".repeat(80));
        let started = std::time::Instant::now();
        assert!(!glob_match(&pattern, &path));
        assert!(Rule::parse(&pattern).is_ok());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_trailing_escape_matches_nothing_and_does_not_panic() {
        // Malformed for Go (path.Match answers false with ErrBadPattern); the callers
        // refuse such a pattern first, but the matcher itself must not read past it.
        assert!(!glob_match("/v1/key/x\\", "/v1/key/x\\"));
        assert!(!glob_match("/v1/key/x\\", "/v1/key/x"));
        assert!(!can_match_some_name(b"app\\"));
    }

    #[test]
    fn which_name_patterns_some_key_name_can_match() {
        for (pattern, some_name) in [
            (&b""[..], true),
            (b"*", true),
            (b"?", true),
            (b"my-app*", true),
            (b"[a-c]pp", true),
            (b"[^a-c]pp", true),
            (b"my\\-app", true),
            (b"a\\b\\c", true),
            // Nothing a name may contain: '/', '.', '!', an escaped '*'.
            (b"a/b", false),
            (b"my.key", false),
            (b"[!]", false),
            (b"[!]*", false),
            (b"a\\*", false),
            (b"\\*a", false),
            // What follows an escape is still checked.
            (b"abc\\-.", false),
            (b"a\\-b.c", false),
        ] {
            assert_eq!(
                can_match_some_name(pattern),
                some_name,
                "{}",
                String::from_utf8_lossy(pattern)
            );
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = Policy {
            name: "p".into(),
            allow: vec![rule("/v1/key/*")],
            deny: vec![rule("/v1/key/decrypt/secret*")],
        };
        assert!(p.allows("/v1/key/decrypt/public"));
        assert!(!p.allows("/v1/key/decrypt/secret-1"));
        assert!(!p.allows("/v1/status"));
    }

    fn authorizer() -> Authorizer {
        let policy = |allow: &[&str], identities: &[&str]| PolicyConfig {
            allow: allow.iter().map(|r| rule(r)).collect(),
            deny: vec![rule("/v1/key/decrypt/secret*")],
            identities: identities.iter().map(|s| s.to_string()).collect(),
        };
        let policies = BTreeMap::from([
            (
                "reader".to_string(),
                policy(&["/v1/key/decrypt/*"], &["id-r2", "id-r1"]),
            ),
            ("status".to_string(), policy(&["/v1/status"], &["id-s"])),
        ]);
        Authorizer::new(Some("id-admin".to_string()), &policies)
    }

    #[test]
    fn verify_answers_admin_allowed_or_denied_per_identity() {
        let auth = authorizer();
        assert_eq!(auth.verify("id-admin", "/v1/key/delete/x"), Verdict::Admin);
        assert_eq!(
            auth.verify("id-r1", "/v1/key/decrypt/app"),
            Verdict::Allowed
        );
        assert_eq!(
            auth.verify("id-r1", "/v1/key/decrypt/secret-1"),
            Verdict::Denied
        );
        assert_eq!(auth.verify("id-r1", "/v1/status"), Verdict::Denied);
        assert_eq!(auth.verify("id-s", "/v1/status"), Verdict::Allowed);
        assert_eq!(auth.verify("id-s", "/v1/key/decrypt/app"), Verdict::Denied);
        assert_eq!(auth.verify("id-unknown", "/v1/status"), Verdict::Denied);
    }

    #[test]
    fn only_the_configured_admin_is_admin_and_never_the_empty_identity() {
        let auth = authorizer();
        assert!(auth.is_admin("id-admin"));
        assert!(!auth.is_admin("id-r1"));
        assert!(!auth.is_admin(""));
        let no_admin = Authorizer::new(None, &BTreeMap::new());
        assert!(!no_admin.is_admin(""));
        assert!(!no_admin.is_admin("id-admin"));
        assert_eq!(no_admin.verify("", "/v1/status"), Verdict::Denied);
    }

    #[test]
    fn policies_are_found_by_identity_and_listed_sorted() {
        let auth = authorizer();
        assert_eq!(
            auth.policy_of("id-r2").map(|p| p.name.as_str()),
            Some("reader")
        );
        assert_eq!(
            auth.policy_of("id-s").map(|p| p.name.as_str()),
            Some("status")
        );
        assert!(auth.policy_of("id-admin").is_none());
        assert_eq!(
            auth.assignments(),
            [("id-r1", "reader"), ("id-r2", "reader"), ("id-s", "status")]
        );
    }
}
