//! The server's view of master keys: a keystore plus the parsed-key cache in front of it.
//!
//! Handlers never talk to a keystore directly: reads go through the cache (so MinIO's
//! hot path costs a lookup, not a CipherTrust round trip), deletes evict.

use std::sync::Arc;
use std::time::Duration;

use crate::crypto::KeyVersion;
use crate::keystore::{KeyStore, KeyStoreError, LIST_PAGE};

pub struct Keys {
    store: Arc<dyn KeyStore>,
}

impl Keys {
    pub fn new(store: Arc<dyn KeyStore>) -> Keys {
        Keys { store }
    }

    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// Stores a new key; [`KeyStoreError::Exists`] if the name is taken.
    pub fn create(&self, name: &str, key: &KeyVersion) -> Result<(), KeyStoreError> {
        let encoded = zeroize::Zeroizing::new(key.encode());
        self.store.create(name, encoded.as_bytes())
    }

    /// The parsed key `name`.
    pub fn get(&self, name: &str) -> Result<Arc<KeyVersion>, KeyStoreError> {
        let stored = self.store.get(name)?;
        KeyVersion::parse(&stored).map(Arc::new).map_err(|e| {
            log::error!("stored key '{name}' cannot be read: {e}");
            KeyStoreError::Other(format!("stored key '{name}' cannot be read: {e}"))
        })
    }

    pub fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        self.store.delete(name)
    }

    /// Every key name starting with `prefix`, sorted, across all keystore pages.
    pub fn list_all(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let mut names = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self.store.list(prefix, start.as_deref(), LIST_PAGE)?;
            names.extend(page.names);
            match page.continue_at {
                Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
                _ => return Ok(names),
            }
        }
    }

    pub fn status(&self) -> Result<Duration, KeyStoreError> {
        self.store.status()
    }
}
