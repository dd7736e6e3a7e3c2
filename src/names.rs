//! The rules for key, policy and identity names, as both Go generations accept them.
//!
//! Pure rules with no other part of kes beneath them: the handlers check request paths
//! with them, the config its `policy:` and `keys:` sections, the policy module the names a
//! rule's pattern can match.

/// Whether `c` may appear in a key, policy or identity name.
pub fn valid_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Names accepted by either Go generation: 1 to 80 of `A-Z a-z 0-9 - _`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 80 && name.bytes().all(valid_name_char)
}

/// A listing pattern: a name prefix, optionally ending in `*`; empty or `*` for all.
/// Returns the prefix, or `None` if the pattern is invalid.
pub fn list_prefix(pattern: &str) -> Option<&str> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    (prefix.is_empty() || (prefix.len() <= 80 && prefix.bytes().all(valid_name_char)))
        .then_some(prefix)
}
