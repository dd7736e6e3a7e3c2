//! The in-memory keystore used by `--dev`: nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{KeyStore, KeyStoreError, ListPage, StoredValue, page_of};

#[derive(Default)]
pub struct MemKeyStore {
    keys: Mutex<BTreeMap<String, StoredValue>>,
}

impl MemKeyStore {
    pub fn new() -> MemKeyStore {
        MemKeyStore::default()
    }
}

impl KeyStore for MemKeyStore {
    fn describe(&self) -> String {
        "in-memory (nothing persists)".into()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.contains_key(name) {
            return Err(KeyStoreError::Exists);
        }
        keys.insert(name.to_string(), StoredValue::new(value.to_vec()));
        Ok(())
    }

    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(name).cloned().ok_or(KeyStoreError::NotFound)
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(name).map(drop).ok_or(KeyStoreError::NotFound)
    }

    fn list(&self, prefix: &str, start: Option<&str>, limit: usize) -> Result<ListPage, KeyStoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = keys.keys().cloned().collect();
        Ok(page_of(&names, prefix, start, limit))
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        Ok(start.elapsed())
    }
}
