//! The keystore contract: the [`KeyStore`] trait every backend implements, and the
//! paged listing they share (the values and errors are in `error`).

use std::time::Duration;

use super::error::{KeyStoreError, StoredValue};
use super::remote::RemoteCrypto;
use super::sealed::Sealed;
use crate::observe::CallStatsSnapshot;

/// The most names one [`KeyStore::list`] call returns, as in the original.
pub const LIST_PAGE: usize = 1024;

/// A page of key names, sorted, and where the next page starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub names: Vec<String>,
    /// The first name of the next page; `None` when the listing is complete.
    pub continue_at: Option<String>,
}

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

    /// What the backend's remote calls took, if it makes any.
    fn call_stats(&self) -> Option<CallStatsSnapshot> {
        None
    }

    /// The resident-key crypto an event loop may run itself, if the backend has any
    /// (`crate::keystore::remote`).
    fn remote(&self) -> Option<&dyn RemoteCrypto> {
        None
    }

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
