//! A master key ("key version") and what it is made of: the AEAD it is used with
//! ([`Cipher`]), its errors, and the lengths of keys and ciphertext parts. How it is
//! stored, and how it encrypts, lives in the files beside this one.

use std::fmt;
use std::time::SystemTime;

use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::random::fill_random;
use crate::identity::hex;
use crate::timefmt;

/// Length of a master key, an HMAC key and a derived AEAD key.
pub const KEY_LEN: usize = 32;
/// The per-message key-derivation salt (called "iv" by the original).
pub(super) const IV_LEN: usize = 16;
/// The AEAD nonce.
pub(super) const NONCE_LEN: usize = 12;
/// The AEAD authentication tag.
pub(super) const TAG_LEN: usize = 16;
/// Random bytes appended to every ciphertext: the iv followed by the nonce.
pub const RANDOM_LEN: usize = IV_LEN + NONCE_LEN;
/// How much longer a ciphertext is than its plaintext.
pub const OVERHEAD: usize = RANDOM_LEN + TAG_LEN;

/// The AEAD a master key is used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM with a per-message key of HMAC-SHA256(master key, iv).
    Aes256,
    /// ChaCha20-Poly1305 with a per-message key of HChaCha20(master key, iv).
    ChaCha20,
}

impl Cipher {
    /// The name in today's API (`describe`, `import`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Aes256 => "AES256",
            Self::ChaCha20 => "ChaCha20",
        }
    }

    /// The name servers of 2022-2023 used in `describe` and in stored JSON keys.
    pub fn legacy_name(self) -> &'static str {
        match self {
            Self::Aes256 => "AES256-GCM_SHA256",
            Self::ChaCha20 => "XCHACHA20-POLY1305",
        }
    }

    /// Parses either name; exact match, as the original.
    pub fn parse(name: &str) -> Option<Cipher> {
        match name {
            "AES256" | "AES256-GCM_SHA256" => Some(Self::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(Self::ChaCha20),
            _ => None,
        }
    }

    /// The cipher new keys get: AES-256-GCM where the CPU accelerates it (it is then
    /// both faster and constant-time), ChaCha20-Poly1305 elsewhere. Same rule as the
    /// original, so a mixed cluster picks the same cipher as Go KES on the same host.
    pub fn default_for_cpu() -> Cipher {
        if cpu_has_aes_gcm() {
            Self::Aes256
        } else {
            Self::ChaCha20
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn cpu_has_aes_gcm() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_aes_gcm() -> bool {
    // Rust's "aes" feature on aarch64 means the AES *and* PMULL instructions.
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(all(target_arch = "powerpc64", target_endian = "little"))]
fn cpu_has_aes_gcm() -> bool {
    // Every ppc64le CPU has the vector crypto instructions; Go counts it as accelerated.
    true
}

#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "powerpc64", target_endian = "little")
)))]
fn cpu_has_aes_gcm() -> bool {
    false
}

/// A stored key value that cannot be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key is not 32 bytes long; the length is given.
    InvalidLength(usize),
    /// A stored JSON key names an algorithm we do not know (the name is given).
    UnknownAlgorithm(String),
    /// A stored protobuf key has a key type other than AES256 (1) or ChaCha20 (2).
    UnknownKeyType(u32),
    /// A stored protobuf key has no HMAC-SHA256 key of 32 bytes.
    InvalidHmacKey,
    /// A stored JSON key's `created_at` is not an RFC 3339 timestamp.
    InvalidCreatedAt,
    /// The value is neither a JSON key nor a base64 protobuf key.
    Malformed(&'static str),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLength(len) => {
                write!(f, "invalid key length: {len} bytes, expected {KEY_LEN}")
            }
            Self::UnknownAlgorithm(name) => write!(f, "key algorithm {name:?} is not supported"),
            Self::UnknownKeyType(value) => write!(f, "key type {value} is not supported"),
            Self::InvalidHmacKey => f.write_str("stored key has no valid HMAC-SHA256 key"),
            Self::InvalidCreatedAt => f.write_str("stored key has an invalid creation time"),
            Self::Malformed(what) => write!(f, "invalid stored key: {what}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A ciphertext that does not decrypt with this key and context. Deliberately says
/// nothing about why, like the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("decryption failed: ciphertext is not authentic")
    }
}

impl std::error::Error for DecryptError {}

/// One master key with its metadata: what the keystore holds under a key name.
///
/// The key bytes are wiped when the value is dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct KeyVersion {
    pub(super) cipher: Cipher,
    pub(super) key: Zeroizing<[u8; KEY_LEN]>,
    /// Keys stored in JSON (before 2024) have none; they cannot compute HMACs.
    pub(super) hmac_key: Option<Zeroizing<[u8; KEY_LEN]>>,
    pub(super) created_secs: i64,
    pub(super) created_nanos: u32,
    pub(super) created_by: String,
    /// The key was stored as JSON without an `algorithm`: before 2022 and for keys
    /// imported through the 2022-2023 API, each encryption picked AES or ChaCha20 by
    /// the host's CPU and recorded its choice in the (legacy) ciphertext. Go KES reads
    /// such keys as AES256 and ignores the recorded choice, so their ChaCha20
    /// ciphertexts are lost there; we honour the recorded algorithm instead
    /// (formats.md §3.5). Everything else treats the key as AES256, as Go does.
    pub(super) undefined_algorithm: bool,
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hmac_key = if self.has_hmac() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("KeyVersion")
            .field("cipher", &self.cipher)
            .field("key", &format_args!("<redacted>"))
            .field("hmac_key", &format_args!("{hmac_key}"))
            .field("created_at", &format_args!("{}", self.created_at_rfc3339()))
            .field("created_by", &self.created_by)
            .field("undefined_algorithm", &self.undefined_algorithm)
            .finish()
    }
}

impl KeyVersion {
    /// A new random key with a new random HMAC key, created now by `created_by`.
    ///
    /// # Panics
    /// If the operating system's random number generator fails, which a key server
    /// cannot recover from.
    pub fn generate(cipher: Cipher, created_by: &str) -> KeyVersion {
        let mut key = Zeroizing::new([0; KEY_LEN]);
        fill_random(&mut key[..]);
        Self::new_with_hmac(cipher, key, created_by)
    }

    /// Wraps the caller's key bytes, adding a new random HMAC key, created now.
    ///
    /// # Panics
    /// As [`KeyVersion::generate`].
    pub fn import(key: &[u8], cipher: Cipher, created_by: &str) -> Result<KeyVersion, KeyError> {
        let key = key_array(key)?;
        Ok(Self::new_with_hmac(cipher, key, created_by))
    }

    pub(super) fn new_with_hmac(
        cipher: Cipher,
        key: Zeroizing<[u8; KEY_LEN]>,
        created_by: &str,
    ) -> KeyVersion {
        let mut hmac_key = Zeroizing::new([0; KEY_LEN]);
        fill_random(&mut hmac_key[..]);
        let (created_secs, created_nanos) = timefmt::now();
        KeyVersion {
            cipher,
            key,
            hmac_key: Some(hmac_key),
            created_secs,
            created_nanos,
            created_by: created_by.to_owned(),
            undefined_algorithm: false,
        }
    }

    /// Reads a value from the keystore in any form any Go KES ever wrote
    /// (formats.md §2.1): JSON if it is valid JSON, base64 protobuf otherwise.
    pub fn parse(stored: &[u8]) -> Result<KeyVersion, KeyError> {
        if serde_json::from_slice::<IgnoredAny>(stored).is_ok() {
            Self::parse_json(stored)
        } else {
            Self::parse_protobuf(stored)
        }
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    pub fn created_at(&self) -> SystemTime {
        timefmt::to_system_time(self.created_secs, self.created_nanos)
    }

    /// The creation time as `(seconds, nanoseconds)` since the Unix epoch; unlike
    /// [`KeyVersion::created_at`] it represents Go's zero time exactly.
    pub fn created_at_unix(&self) -> (i64, u32) {
        (self.created_secs, self.created_nanos)
    }

    /// The creation time as the API shows it, e.g. `2024-02-29T10:12:28.123456789Z`.
    pub fn created_at_rfc3339(&self) -> String {
        timefmt::format_rfc3339(self.created_secs, self.created_nanos)
    }

    /// The identity that created the key; empty if unknown.
    pub fn created_by(&self) -> &str {
        &self.created_by
    }

    /// Whether [`KeyVersion::hmac`] works: false for keys stored before 2024.
    pub fn has_hmac(&self) -> bool {
        self.hmac_key.is_some()
    }

    /// Whether the key was stored without an algorithm (see the field's note); its
    /// [`KeyVersion::cipher`] is then AES256.
    pub fn has_undefined_algorithm(&self) -> bool {
        self.undefined_algorithm
    }

    /// The key ID of 2022-2023 servers: hex of the first 16 bytes of SHA-256(key).
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.key.as_slice());
        hex(&digest[..16])
    }
}

/// 32 fresh random bytes for a data encryption key.
///
/// # Panics
/// As [`KeyVersion::generate`].
pub fn random_dek() -> Zeroizing<[u8; 32]> {
    let mut dek = Zeroizing::new([0; 32]);
    fill_random(&mut dek[..]);
    dek
}

pub(super) fn key_array(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    if bytes.len() != KEY_LEN {
        return Err(KeyError::InvalidLength(bytes.len()));
    }
    let mut key = Zeroizing::new([0; KEY_LEN]);
    key.copy_from_slice(bytes);
    Ok(key)
}
