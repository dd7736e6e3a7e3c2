//! The values and errors every keystore operation deals in.

use std::fmt;

use zeroize::Zeroizing;

/// A stored key value. It holds key material, so it is wiped when dropped.
pub type StoredValue = Zeroizing<Vec<u8>>;

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
