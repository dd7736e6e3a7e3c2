//! The server's view of master keys: a keystore plus the parsed-key cache in front of it.
//!
//! Handlers never talk to a keystore directly: reads go through the cache (so MinIO's
//! hot path costs a lookup, not a CipherTrust round trip), deletes evict. Resident keys
//! seal and open data keys through the keystore, or under intermediate keys
//! (`intermediate`) when the CipherTrust section turns them on.

mod intermediate;

use std::sync::Arc;
use std::time::Duration;

pub use self::intermediate::{Ik, IkUse, IntermediateKeys, MAX_BYTES, MAX_ENTRIES};
use crate::cache::{CacheConfig, CacheStats, DEFAULT_PROBE_INTERVAL, KeyCache};
use crate::config::{CacheExpiry, IntermediateKeySettings};
use crate::crypto::{Cipher, KeyVersion, OldestReader};
use crate::keystore::sealed::{Envelope, IkEnvelope, is_reserved_context};
use crate::keystore::{KeyStore, KeyStoreError, StoredValue};
use crate::observe::IkStats;

/// A master key as the cache keeps it.
#[derive(Clone)]
pub enum MasterKey {
    /// A key kes holds: its stored value, parsed.
    Local(Arc<KeyVersion>),
    /// A key that never leaves the keystore; only the facts that are not secret are
    /// kept: that it exists, and its newest version (as of the load or a rotation).
    Resident { version: u32 },
}

/// A master key taken for a request on an event loop, which must be answered there
/// without waiting for the keystore.
#[derive(Clone)]
pub enum Warm {
    /// A key kes holds, from the key cache.
    Held(Arc<KeyVersion>),
    /// A resident key, and the intermediate key kept for this request (its use taken).
    Resident { version: u32, ik: Arc<Ik> },
}

pub struct Keys {
    store: Arc<dyn KeyStore>,
    cache: KeyCache<MasterKey>,
    iks: Arc<IntermediateKeys>,
}

impl Keys {
    /// Puts a cache with `expiry` in front of `store`, and starts the prober that tells
    /// the cache when the store goes offline. `intermediate`: resident keys seal data
    /// keys under intermediate keys (`None`: every use is a keystore call).
    pub fn new(
        store: Arc<dyn KeyStore>,
        expiry: CacheExpiry,
        intermediate: Option<IntermediateKeySettings>,
    ) -> Keys {
        let cache = KeyCache::new(CacheConfig {
            any: expiry.any,
            unused: expiry.unused,
            offline: expiry.offline,
        });
        if let Err(e) = cache.watch(store.clone(), DEFAULT_PROBE_INTERVAL) {
            log::warn!("cannot start the keystore prober: {e}");
        }
        Keys {
            store,
            cache,
            iks: IntermediateKeys::new(intermediate),
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether the cache serves in offline mode: the keystore was last found unreachable
    /// and `cache.expiry.offline` keeps cached keys in use meanwhile.
    pub fn serving_offline(&self) -> bool {
        self.cache.is_offline() && !self.cache.config().offline.is_zero()
    }

    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// Creates key `name`: a resident key when the keystore makes those, else a stored
    /// key made by `make`, in the form `reader` reads. [`KeyStoreError::Exists`] if the
    /// name is taken. The cache is not filled: the first use reads the stored value back,
    /// so the server uses the key exactly as every other node sees it.
    pub fn create(
        &self,
        name: &str,
        make: impl FnOnce() -> KeyVersion,
        reader: OldestReader,
    ) -> Result<(), KeyStoreError> {
        if self.store.creates_resident() {
            let version = self.store.create_resident(name)?;
            self.cache.remove(name);
            log::debug!("created resident key '{name}' (version {version})");
            return Ok(());
        }
        self.import(name, &make(), reader)
    }

    /// Creates `name` unless it exists (the `keys:` section of the config): resident when
    /// the keystore makes resident keys, else in the form `reader` reads. A key that is
    /// there is loaded as a request would load it, so that a directory or an unreadable file
    /// under its name stops startup instead of failing at the key's first use.
    pub fn ensure_key(&self, name: &str, reader: OldestReader) -> Result<(), String> {
        let created = self.create(
            name,
            || KeyVersion::generate(Cipher::default_for_cpu(), ""),
            reader,
        );
        match created {
            Ok(()) => Ok(()),
            Err(KeyStoreError::Exists) => self.get(name).map(drop).map_err(|e| match e {
                // The fs keystore's answer for what is not a regular file.
                KeyStoreError::NotFound => {
                    "its name is taken by something that is not a key (a directory?)".into()
                }
                e => format!("it exists but cannot be used: {e}"),
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores `key`, whose value kes knows, in the form `reader` reads; refused when the
    /// keystore keeps its master keys resident (such a key would be known outside it).
    pub fn import(
        &self,
        name: &str,
        key: &KeyVersion,
        reader: OldestReader,
    ) -> Result<(), KeyStoreError> {
        self.may_import()?;
        let encoded = zeroize::Zeroizing::new(key.encode_for(reader));
        self.store.create(name, encoded.as_bytes())
    }

    /// Whether keys may be imported: not when the keystore keeps master keys resident.
    pub fn may_import(&self) -> Result<(), KeyStoreError> {
        if self.store.creates_resident() {
            return Err(KeyStoreError::Unsupported(
                "importing keys is not supported with master_keys: resident: a resident key is never known outside CipherTrust Manager".into(),
            ));
        }
        Ok(())
    }

    /// The keystore, for the resident-key operations (seal, unseal) that go to it on
    /// every call.
    pub fn store(&self) -> &dyn KeyStore {
        &*self.store
    }

    /// Adds a version to resident key `name` and remembers it as the newest.
    pub fn rotate(&self, name: &str) -> Result<u32, KeyStoreError> {
        match self.get(name)? {
            MasterKey::Local(_) => Err(KeyStoreError::Unsupported(format!(
                "rotation is not supported for this key: '{name}' is a key kes holds (a stored value without versions); only resident keys rotate"
            ))),
            MasterKey::Resident { .. } => {
                let version = self.store.rotate(name)?;
                // The next load reads the newest version again (one keystore call), and
                // the next data key takes a new intermediate key of it.
                self.cache.remove(name);
                self.iks.rotated(name);
                Ok(version)
            }
        }
    }

    /// The parsed key `name`, from the cache when it holds it.
    ///
    /// A load that finds the keystore unreachable puts the cache into offline mode at once,
    /// rather than at the prober's next round (up to 10 s later): otherwise keys that were
    /// cached when the keystore went away could age out in between and fail although the
    /// `offline` window should have kept them. A load that reaches the keystore ends
    /// offline mode.
    ///
    /// A name is a resident key when the keystore has one of that name, otherwise a
    /// stored key: so keys stored before `master_keys: resident` keep working.
    pub fn get(&self, name: &str) -> Result<MasterKey, KeyStoreError> {
        self.cache.get_or_load(name, || {
            let loaded = self.load(name);
            match &loaded {
                Ok(_) => self.cache.set_offline(false),
                Err(KeyStoreError::Unreachable(_)) => self.cache.set_offline(true),
                Err(KeyStoreError::NotFound) => self.cache.set_offline(false),
                Err(_) => {}
            }
            loaded
        })
    }

    fn load(&self, name: &str) -> Result<MasterKey, KeyStoreError> {
        if let Some(version) = self.store.resident_version(name)? {
            return Ok(MasterKey::Resident { version });
        }
        let stored = self.store.get(name)?;
        KeyVersion::parse(&stored)
            .map(|key| MasterKey::Local(Arc::new(key)))
            .map_err(|e| {
                log::error!("stored key '{name}' cannot be read: {e}");
                KeyStoreError::Other(format!("stored key '{name}' cannot be read: {e}"))
            })
    }

    /// The parsed key `name` if the cache holds it, never waiting for the keystore: what
    /// an event loop may ask (it must not wait for CipherTrust).
    /// Only keys kes holds: a resident key needs a keystore call for every use.
    pub fn get_cached(&self, name: &str) -> Option<Arc<KeyVersion>> {
        match self.cache.get_fresh(name)? {
            MasterKey::Local(key) => Some(key),
            MasterKey::Resident { .. } => None,
        }
    }

    /// What the cache knows of `name`, never waiting for the keystore: what an event loop
    /// may ask. A key kes holds is served there; a resident key's call to the keystore
    /// may be made there (`crate::api::remote`).
    pub fn cached(&self, name: &str) -> Option<MasterKey> {
        self.cache.get_fresh(name)
    }

    /// Drops what the cache knows of `name`, and its intermediate keys (a resident key
    /// the keystore no longer has).
    pub fn forget(&self, name: &str) {
        self.cache.remove(name);
        self.iks.forget(name);
    }

    /// Deletes `name` from the keystore, then from the cache.
    pub fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let result = self.store.delete(name);
        self.forget(name);
        result
    }

    /// The master key `name` if a request that seals a new data key with it (generate,
    /// encrypt) can be answered without waiting: a key kes holds, or a resident key whose
    /// intermediate key for new data keys is kept (one use taken for the request).
    pub fn warm_seal(&self, name: &str) -> Option<Warm> {
        match self.cache.get_fresh(name)? {
            MasterKey::Local(key) => Some(Warm::Held(key)),
            MasterKey::Resident { version } => Some(Warm::Resident {
                version,
                ik: self.iks.warm_seal(name, version)?,
            }),
        }
    }

    /// The master key `name` if a decrypt of the request's ciphertext (`ciphertext`:
    /// read from the request only for a resident key) can be answered without waiting: a
    /// key kes holds, or a resident key with the intermediate key of the ciphertext kept
    /// (one use taken for the request).
    pub fn warm_open(
        &self,
        name: &str,
        ciphertext: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Warm> {
        match self.cache.get_fresh(name)? {
            MasterKey::Local(key) => Some(Warm::Held(key)),
            MasterKey::Resident { version } => {
                let ciphertext = ciphertext()?;
                let envelope = IkEnvelope::parse(&ciphertext).ok()?;
                let ik = self.iks.warm_open(name, envelope.header)?;
                Some(Warm::Resident { version, ik })
            }
        }
    }

    /// Seals `plaintext` with resident key `name` (newest known version `version`),
    /// `context` as associated data: under an intermediate key when they are on (`warm`:
    /// the one taken for this request), else by the keystore. The envelope, and how the
    /// intermediate key was had (`None`: none was used).
    pub fn seal_resident(
        &self,
        name: &str,
        version: u32,
        plaintext: &[u8],
        context: &[u8],
        warm: Option<&Arc<Ik>>,
    ) -> Result<(Vec<u8>, Option<IkUse>), KeyStoreError> {
        let sealed = if self.iks.enabled() {
            self.iks
                .seal(&*self.store, name, version, plaintext, context, warm)
                .map(|(envelope, how)| (envelope, Some(how)))
        } else {
            self.store
                .seal(name, plaintext, context)
                .map(|sealed| (sealed.encode(), None))
        };
        if matches!(sealed, Err(KeyStoreError::NotFound)) {
            // Deleted in the keystore behind kes's back: the next request looks again.
            self.forget(name);
        }
        sealed
    }

    /// Opens an envelope of resident key `name` of either form, whatever the setting:
    /// `Ok(None)` when it is not authentic (not an envelope, another key's, another
    /// context, tampered with).
    pub fn open_resident(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
        warm: Option<&Arc<Ik>>,
    ) -> Result<(Option<StoredValue>, Option<IkUse>), KeyStoreError> {
        match Envelope::parse(ciphertext) {
            Err(_) => Ok((None, None)),
            // The context an intermediate key is wrapped with: never a data key's.
            Ok(Envelope::Direct(_)) if is_reserved_context(context) => Ok((None, None)),
            Ok(Envelope::Direct(sealed)) => Ok((self.store.unseal(name, &sealed, context)?, None)),
            Ok(Envelope::Intermediate(envelope)) => self
                .iks
                .open(&*self.store, name, &envelope, context, warm)
                .map(|(plaintext, how)| (plaintext, Some(how))),
        }
    }

    /// Whether resident keys seal data keys under intermediate keys (`intermediate_key:`).
    pub fn uses_intermediate_keys(&self) -> bool {
        self.iks.enabled()
    }

    /// The intermediate keys' numbers, when they are on.
    pub fn ik_stats(&self) -> Option<IkStats> {
        self.iks.stats()
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
