//! Where master keys live.
//!
//! A keystore is a plain `name -> stored value` map; it never interprets the value
//! (the stored-key format lives in [`crate::crypto`]). Every backend lives in a file of
//! its own beside this one and implements [`KeyStore`] (`store`: the trait, its errors,
//! paged listing); this file opens the backend a config names.

use std::sync::Arc;

pub mod check;
pub mod ciphertrust;
#[cfg(test)]
pub(crate) mod contract;
mod error;
pub mod fs;
pub mod mem;
pub mod remote;
pub mod report;
pub mod sealed;
mod store;

pub use error::{KeyStoreError, StoredValue};
pub use sealed::Sealed;
pub use store::{KeyStore, LIST_PAGE, ListPage, page_of};

/// Opens the keystore a config describes.
pub fn open(config: &crate::config::KeyStoreConfig) -> Result<Arc<dyn KeyStore>, String> {
    use crate::config::KeyStoreConfig;
    Ok(match config {
        KeyStoreConfig::Memory => Arc::new(mem::MemKeyStore::new()),
        KeyStoreConfig::Fs { path } => Arc::new(fs::FsKeyStore::open(path)?),
        KeyStoreConfig::CipherTrust(settings) => {
            let store = ciphertrust::CipherTrust::connect(ciphertrust_config(settings))
                .map_err(|e| format!("CipherTrust keystore at {}: {e}", settings.endpoint))?;
            Arc::new(store)
        }
    })
}

/// The CipherTrust store's settings from the config's keystore section.
fn ciphertrust_config(
    settings: &crate::config::CipherTrustSettings,
) -> ciphertrust::CipherTrustConfig {
    ciphertrust::CipherTrustConfig {
        endpoint: settings.endpoint.clone(),
        refresh_token: zeroize::Zeroizing::new(settings.token.clone()),
        domain: settings.domain.clone(),
        retry: settings.retry,
        ca: settings.ca.clone(),
        insecure_skip_verify: settings.insecure_skip_verify,
        resident: settings.resident,
    }
}
