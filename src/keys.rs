//! The server's view of master keys: a keystore plus the parsed-key cache in front of it.
//!
//! Handlers never talk to a keystore directly: reads go through the cache (so MinIO's
//! hot path costs a lookup, not a CipherTrust round trip), deletes evict.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheConfig, CacheStats, DEFAULT_PROBE_INTERVAL, KeyCache};
use crate::config::CacheExpiry;
use crate::crypto::{KeyVersion, OldestReader};
use crate::keystore::{KeyStore, KeyStoreError};

pub struct Keys {
    store: Arc<dyn KeyStore>,
    cache: KeyCache<Arc<KeyVersion>>,
}

impl Keys {
    /// Puts a cache with `expiry` in front of `store`, and starts the prober that tells
    /// the cache when the store goes offline.
    pub fn new(store: Arc<dyn KeyStore>, expiry: CacheExpiry) -> Keys {
        let cache = KeyCache::new(CacheConfig {
            any: expiry.any,
            unused: expiry.unused,
            offline: expiry.offline,
        });
        if let Err(e) = cache.watch(store.clone(), DEFAULT_PROBE_INTERVAL) {
            log::warn!("cannot start the keystore prober: {e}");
        }
        Keys { store, cache }
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// Stores a new key in the form `reader` reads; [`KeyStoreError::Exists`] if the
    /// name is taken. The cache is not filled: the first use reads the stored value back,
    /// so the server uses the key exactly as every other node sees it.
    pub fn create(
        &self,
        name: &str,
        key: &KeyVersion,
        reader: OldestReader,
    ) -> Result<(), KeyStoreError> {
        let encoded = zeroize::Zeroizing::new(key.encode_for(reader));
        self.store.create(name, encoded.as_bytes())
    }

    /// The parsed key `name`, from the cache when it holds it.
    ///
    /// A load that finds the keystore unreachable puts the cache into offline mode at once,
    /// rather than at the prober's next round (up to 10 s later): otherwise keys that were
    /// cached when the keystore went away could age out in between and fail although the
    /// `offline` window should have kept them. A load that reaches the keystore ends
    /// offline mode.
    pub fn get(&self, name: &str) -> Result<Arc<KeyVersion>, KeyStoreError> {
        self.cache.get_or_load(name, || {
            let stored = match self.store.get(name) {
                Ok(stored) => {
                    self.cache.set_offline(false);
                    stored
                }
                Err(e) => {
                    match e {
                        KeyStoreError::Unreachable(_) => self.cache.set_offline(true),
                        KeyStoreError::NotFound => self.cache.set_offline(false),
                        _ => {}
                    }
                    return Err(e);
                }
            };
            KeyVersion::parse(&stored).map(Arc::new).map_err(|e| {
                log::error!("stored key '{name}' cannot be read: {e}");
                KeyStoreError::Other(format!("stored key '{name}' cannot be read: {e}"))
            })
        })
    }

    /// The parsed key `name` if the cache holds it, never waiting for the keystore: what
    /// an event loop may ask (it must not wait for CipherTrust).
    pub fn get_cached(&self, name: &str) -> Option<Arc<KeyVersion>> {
        self.cache.get_fresh(name)
    }

    /// Deletes `name` from the keystore, then from the cache.
    pub fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let result = self.store.delete(name);
        self.cache.remove(name);
        result
    }

    /// Every key name starting with `prefix`, sorted, across all keystore pages.
    ///
    /// Asks for everything at once: the backends enumerate all names on every call (the
    /// CipherTrust store pages through all secrets, 200 per request), so asking page by
    /// page would repeat that work once per 1,024 names — 39 CipherTrust requests
    /// instead of 13 for 2,500 keys, each call with its own time budget, together past
    /// the route timeout when CipherTrust is slow. The loop remains for backends that
    /// return less than asked.
    pub fn list_all(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let mut names = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self.store.list(prefix, start.as_deref(), usize::MAX)?;
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
