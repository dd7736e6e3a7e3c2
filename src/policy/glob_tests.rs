//! The matcher's memory of failed (pattern, text) positions must never change an
//! answer: every pattern and text up to a small size, against the plain recursive
//! matcher it speeds up.

use super::glob_match;

/// The rule semantics without the memory: exponential, fine for short inputs.
fn plain(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') if p.len() == 1 => true,
        Some(b'*') => {
            for k in 0..=t.len() {
                if plain(&p[1..], &t[k..]) {
                    return true;
                }
                if k == t.len() || t[k] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => t.first().is_some_and(|&c| c != b'/') && plain(&p[1..], &t[1..]),
        Some(&c) => t.first() == Some(&c) && plain(&p[1..], &t[1..]),
    }
}

/// Every string of length up to `max` over `alphabet`.
fn all_strings(alphabet: &[u8], max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{}", c as char)))
            .collect();
        out.extend(last.iter().cloned());
    }
    out
}

#[test]
fn remembering_failed_positions_never_changes_an_answer() {
    let patterns = all_strings(b"*?a/", 5);
    let texts = all_strings(b"ab/", 6);
    let mut matched = 0;
    for p in &patterns {
        for t in &texts {
            let expected = plain(p.as_bytes(), t.as_bytes());
            assert_eq!(glob_match(p, t), expected, "pattern {p:?}, text {t:?}");
            matched += usize::from(expected);
        }
    }
    // Both answers are well represented.
    assert!(matched > 10_000 && matched < patterns.len() * texts.len() / 2);
}

#[test]
fn many_stars_in_a_row_and_stars_at_the_start_of_the_text() {
    for (p, t, expected) in [
        ("**a", "a", true),
        ("**a", "ba", true),
        ("**a*", "b", false),
        ("***", "", true),
        ("**/*", "a/", true),
        ("a**b*", "ab", true),
        ("*a*a*a", "aaa", true),
        ("*a*a*a", "aa/a", false),
    ] {
        assert_eq!(glob_match(p, t), expected, "pattern {p:?}, text {t:?}");
        assert_eq!(plain(p.as_bytes(), t.as_bytes()), expected, "{p:?} {t:?}");
    }
}
