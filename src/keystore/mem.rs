//! The in-memory keystore used by `--dev`: nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{KeyStore, KeyStoreError, ListPage, StoredValue, page_of};

/// Keys in a map in this process's memory. Values are wiped when deleted or dropped.
#[derive(Default)]
pub struct MemKeyStore {
    /// Sorted, so that listing needs no sort.
    keys: RwLock<BTreeMap<String, StoredValue>>,
}

impl MemKeyStore {
    pub fn new() -> MemKeyStore {
        MemKeyStore::default()
    }
}

impl KeyStore for MemKeyStore {
    fn describe(&self) -> String {
        "in-memory (nothing persists)".to_owned()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        // A panic elsewhere while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so a poisoned lock is usable.
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.contains_key(name) {
            return Err(KeyStoreError::Exists);
        }
        keys.insert(name.to_owned(), StoredValue::new(value.to_vec()));
        Ok(())
    }

    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.get(name).cloned().ok_or(KeyStoreError::NotFound)
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.remove(name).map(drop).ok_or(KeyStoreError::NotFound)
    }

    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let names: Vec<String> = keys.keys().cloned().collect();
        Ok(page_of(&names, prefix, start, limit))
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        drop(self.keys.read().unwrap_or_else(PoisonError::into_inner));
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn create_get_list_delete() {
        let store = MemKeyStore::new();
        assert_eq!(store.get("a").unwrap_err(), KeyStoreError::NotFound);
        store.create("key-b", b"B").unwrap();
        store.create("key-a", b"A").unwrap();
        store.create("other", b"O").unwrap();
        assert_eq!(
            store.create("key-a", b"again").unwrap_err(),
            KeyStoreError::Exists
        );
        assert_eq!(*store.get("key-a").unwrap(), b"A");

        let page = store.list("key-", None, 1).unwrap();
        assert_eq!(page.names, ["key-a"]);
        assert_eq!(page.continue_at.as_deref(), Some("key-b"));
        let page = store.list("key-", page.continue_at.as_deref(), 1).unwrap();
        assert_eq!(page.names, ["key-b"]);
        assert_eq!(page.continue_at, None);
        assert_eq!(
            store.list("", None, 10).unwrap().names,
            ["key-a", "key-b", "other"]
        );

        store.delete("key-a").unwrap();
        assert_eq!(store.delete("key-a").unwrap_err(), KeyStoreError::NotFound);
        assert_eq!(store.get("key-a").unwrap_err(), KeyStoreError::NotFound);
        assert!(store.status().is_ok());
    }

    #[test]
    fn concurrent_creates_of_one_name_store_exactly_one() {
        let store = Arc::new(MemKeyStore::new());
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16u8)
            .map(|i| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create("race", &[i]).map(|()| i)
                })
            })
            .collect();
        let winners: Vec<u8> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap().ok())
            .collect();
        assert_eq!(winners.len(), 1);
        assert_eq!(*store.get("race").unwrap(), [winners[0]]);
    }
}
