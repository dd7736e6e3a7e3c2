//! Where master keys live.
//!
//! A keystore is a plain `name -> stored value` map; it never interprets the value
//! (the stored-key format lives in [`crate::crypto`]). Every backend lives in a file of
//! its own beside this one and implements [`KeyStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

pub mod ciphertrust;
pub mod fs;
pub mod mem;
pub mod sealed;

pub use sealed::Sealed;

/// The most names one [`KeyStore::list`] call returns, as in the original.
pub const LIST_PAGE: usize = 1024;

/// A stored key value. It holds key material, so it is wiped when dropped.
pub type StoredValue = Zeroizing<Vec<u8>>;

/// A page of key names, sorted, and where the next page starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub names: Vec<String>,
    /// The first name of the next page; `None` when the listing is complete.
    pub continue_at: Option<String>,
}

/// Why a keystore operation failed. Messages never contain key material or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreError {
    /// No key with that name.
    NotFound,
    /// A key with that name exists already; nothing was written.
    Exists,
    /// The keystore could not be reached (network, disk gone, CipherTrust down).
    Unreachable(String),
    /// The keystore answered, but with an error.
    Other(String),
    /// The keystore, or this key, cannot do what was asked (e.g. rotate a key that has no
    /// versions); the message says what and why.
    Unsupported(String),
}

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("key does not exist"),
            Self::Exists => f.write_str("key already exists"),
            Self::Unreachable(msg) => write!(f, "key store is not reachable: {msg}"),
            Self::Other(msg) | Self::Unsupported(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for KeyStoreError {}

/// A backend that stores master keys by name.
///
/// Implementations are shared by all worker threads, so they are `Send + Sync` and do
/// their own locking. Key names reaching a keystore have already been validated
/// (see `crate::names::valid_name`), but backends that map names onto paths check again.
pub trait KeyStore: Send + Sync {
    /// A short description for the startup banner and logs, e.g. `fs:/var/lib/kes`.
    fn describe(&self) -> String;

    /// Stores `value` under `name` if, and only if, no key of that name exists.
    /// Either the whole value is stored or nothing is: never a partial key.
    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError>;

    /// Returns the value stored under `name`.
    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError>;

    /// Removes `name`. Returns [`KeyStoreError::NotFound`] if there is no such key and
    /// the backend can tell.
    fn delete(&self, name: &str) -> Result<(), KeyStoreError>;

    /// Lists names starting with `prefix`, sorted, beginning at `start` (inclusive)
    /// when given, at most `limit` names per page.
    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError>;

    /// Checks that the keystore is reachable and returns how long the check took.
    fn status(&self) -> Result<Duration, KeyStoreError>;

    // Resident master keys: keys that stay inside the keystore and are used through it
    // (CipherTrust with `master_keys: resident`). A name is resident when
    // [`resident_version`](Self::resident_version) says so; otherwise it is a stored value
    // as above. Backends without resident keys keep these defaults: no name is resident,
    // and the resident operations answer `Unsupported`.

    /// Whether new keys are made resident ([`create_resident`](Self::create_resident))
    /// rather than stored values, and imported keys are refused.
    fn creates_resident(&self) -> bool {
        false
    }

    /// The newest version of resident key `name`, or `None` if `name` is not resident.
    fn resident_version(&self, _name: &str) -> Result<Option<u32>, KeyStoreError> {
        Ok(None)
    }

    /// Makes resident key `name` (never readable outside the keystore), unless a key of
    /// that name, resident or stored, exists. Returns its version.
    fn create_resident(&self, _name: &str) -> Result<u32, KeyStoreError> {
        Err(no_resident_keys(self))
    }

    /// Encrypts `plaintext` with the newest version of resident key `name`, binding `aad`.
    fn seal(&self, _name: &str, _plaintext: &[u8], _aad: &[u8]) -> Result<Sealed, KeyStoreError> {
        Err(no_resident_keys(self))
    }

    /// Decrypts what [`seal`](Self::seal) made, with the version it names. `Ok(None)` when
    /// the keystore refuses it as not authentic (wrong `aad`, version, tag or bytes).
    fn unseal(
        &self,
        _name: &str,
        _sealed: &Sealed,
        _aad: &[u8],
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        Err(no_resident_keys(self))
    }

    /// Adds a version to resident key `name` and returns it; older versions still unseal.
    fn rotate(&self, _name: &str) -> Result<u32, KeyStoreError> {
        Err(no_resident_keys(self))
    }
}

fn no_resident_keys<S: KeyStore + ?Sized>(store: &S) -> KeyStoreError {
    KeyStoreError::Unsupported(format!(
        "the keystore {} has no resident keys (only CipherTrust with master_keys: resident)",
        store.describe()
    ))
}

/// Pages a sorted list of names: the shared listing logic of backends that can
/// enumerate all names at once.
pub fn page_of(sorted: &[String], prefix: &str, start: Option<&str>, limit: usize) -> ListPage {
    let from = match start {
        Some(start) if start > prefix => start,
        _ => prefix,
    };
    let first = sorted.partition_point(|name| name.as_str() < from);
    let mut matching = sorted[first..]
        .iter()
        .take_while(|name| name.starts_with(prefix));
    let names: Vec<String> = matching.by_ref().take(limit.max(1)).cloned().collect();
    ListPage {
        names,
        continue_at: matching.next().cloned(),
    }
}

/// Opens the keystore a config describes.
pub fn open(config: &crate::config::KeyStoreConfig) -> Result<Arc<dyn KeyStore>, String> {
    use crate::config::KeyStoreConfig;
    Ok(match config {
        KeyStoreConfig::Memory => Arc::new(mem::MemKeyStore::new()),
        KeyStoreConfig::Fs { path } => Arc::new(fs::FsKeyStore::open(path)?),
        KeyStoreConfig::CipherTrust(settings) => {
            let config = ciphertrust::CipherTrustConfig {
                endpoint: settings.endpoint.clone(),
                refresh_token: zeroize::Zeroizing::new(settings.token.clone()),
                domain: settings.domain.clone(),
                retry: settings.retry,
                ca: settings.ca.clone(),
                insecure_skip_verify: settings.insecure_skip_verify,
                resident: settings.resident,
            };
            let store = ciphertrust::CipherTrust::connect(config)
                .map_err(|e| format!("CipherTrust keystore at {}: {e}", settings.endpoint))?;
            Arc::new(store)
        }
    })
}

/// What every backend must do, checked by each backend's own tests.
#[cfg(test)]
pub(crate) mod contract {
    use std::sync::{Arc, Barrier};

    use super::{KeyStore, KeyStoreError};

    /// Create-if-absent, get, paged listing by prefix, delete.
    pub fn create_get_list_delete(store: &dyn KeyStore) {
        assert_eq!(store.get("key-a").unwrap_err(), KeyStoreError::NotFound);
        store.create("key-b", b"B").unwrap();
        store.create("key-a", b"A").unwrap();
        store.create("other", b"").unwrap();
        assert_eq!(
            store.create("key-a", b"again").unwrap_err(),
            KeyStoreError::Exists
        );
        assert_eq!(*store.get("key-a").unwrap(), b"A");
        assert_eq!(*store.get("other").unwrap(), b"");

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

    /// 16 threads create one name at once: exactly one succeeds, the others get
    /// `Exists`, and the stored value is the winner's, whole.
    pub fn concurrent_creates_store_exactly_one(store: Arc<dyn KeyStore>) {
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16u8)
            .map(|i| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let value = vec![i; 4096];
                    barrier.wait();
                    store.create("race", &value).map(|()| i)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<u8> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| *r == Err(KeyStoreError::Exists))
        );
        assert_eq!(*store.get("race").unwrap(), vec![winners[0]; 4096]);
    }
}
