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
    use std::sync::Arc;

    use super::*;

    #[test]
    fn create_get_list_delete() {
        crate::keystore::contract::create_get_list_delete(&MemKeyStore::new());
    }

    #[test]
    fn concurrent_creates_of_one_name_store_exactly_one() {
        crate::keystore::contract::concurrent_creates_store_exactly_one(Arc::new(
            MemKeyStore::new(),
        ));
    }
}
