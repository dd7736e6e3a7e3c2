//! The CipherTrust id of each resident key version kes has seen.
//!
//! CipherTrust keeps every version of a key as an object of its own, with its own id.
//! kes decrypts by that id, the form proven against a live CipherTrust Manager
//! (docs/ciphertrust.md, fidelity table): no public source shows a decrypt addressed by
//! name that honours an older version. A version's id never changes, so each is learned
//! once: from an encrypt answer, a lookup by name, a rotation, or a listing of the
//! name's versions, and then kept.
//!
//! Every id here came from CipherTrust for that exact name: the envelope of a ciphertext
//! names only a version, never an id, so a ciphertext can never point kes at another
//! key's version (its policy allows the name, not the id).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::sync::lock;

/// The most versions remembered, all keys together; past it the memory starts over
/// (each id costs one listing to learn again).
const MAX_VERSIONS: usize = 10_000;

#[derive(Default)]
pub(super) struct VersionIds {
    by_name: Mutex<Ids>,
}

#[derive(Default)]
struct Ids {
    names: HashMap<String, BTreeMap<u32, String>>,
    count: usize,
}

impl VersionIds {
    /// The id of `version` of key `name`, if known.
    pub(super) fn get(&self, name: &str, version: u32) -> Option<String> {
        lock(&self.by_name)
            .names
            .get(name)
            .and_then(|versions| versions.get(&version))
            .cloned()
    }

    /// Remembers that `version` of key `name` has the id `id`.
    pub(super) fn remember(&self, name: &str, version: u32, id: &str) {
        let mut ids = lock(&self.by_name);
        // The common case (every encrypt answer names a version seen before) allocates
        // nothing.
        if ids
            .names
            .get(name)
            .and_then(|v| v.get(&version))
            .is_some_and(|known| known == id)
        {
            return;
        }
        if ids.count >= MAX_VERSIONS {
            *ids = Ids::default();
        }
        let versions = ids.names.entry(name.to_string()).or_default();
        if versions.insert(version, id.to_string()).is_none() {
            ids.count += 1;
        }
    }

    /// Forgets every version of `name` (deleted, or gone behind kes's back).
    pub(super) fn forget(&self, name: &str) {
        let mut ids = lock(&self.by_name);
        if let Some(versions) = ids.names.remove(name) {
            ids.count -= versions.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_name_and_version_and_forgets_by_name() {
        let ids = VersionIds::default();
        ids.remember("a", 0, "id-a0");
        ids.remember("a", 1, "id-a1");
        ids.remember("b", 0, "id-b0");
        assert_eq!(ids.get("a", 0).as_deref(), Some("id-a0"));
        assert_eq!(ids.get("a", 1).as_deref(), Some("id-a1"));
        assert_eq!(ids.get("b", 1), None);
        ids.forget("a");
        assert_eq!(ids.get("a", 0), None);
        assert_eq!(ids.get("b", 0).as_deref(), Some("id-b0"));
        assert_eq!(lock(&ids.by_name).count, 1);
    }

    #[test]
    fn the_memory_is_bounded() {
        let ids = VersionIds::default();
        for v in 0..(MAX_VERSIONS as u32 + 5) {
            ids.remember("k", v, "id");
        }
        let count = lock(&ids.by_name).count;
        assert!((1..=MAX_VERSIONS).contains(&count), "{count}");
        // Remembering the same version again does not count twice.
        ids.remember("k", MAX_VERSIONS as u32 + 4, "id");
        assert_eq!(lock(&ids.by_name).count, count);
    }
}
