//! Master keys ("key versions"): how they are stored, and how they encrypt, decrypt and
//! compute HMACs, byte-compatible with every generation of Go KES.
//!
//! The formats are specified in `spec/formats.md`: the stored value in §2, the
//! ciphertexts in §3. In short, a ciphertext is `AEAD(plaintext) || iv || nonce`, where
//! the AEAD key is derived from the master key and the 16-byte `iv`
//! (HMAC-SHA256 for AES-256-GCM, HChaCha20 for ChaCha20-Poly1305); older servers wrapped
//! the same three parts in msgpack or JSON, which we still read.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::identity::hex;
use crate::timefmt;

/// Length of a master key, an HMAC key and a derived AEAD key.
pub const KEY_LEN: usize = 32;
/// The per-message key-derivation salt (called "iv" by the original).
const IV_LEN: usize = 16;
/// The AEAD nonce.
const NONCE_LEN: usize = 12;
/// The AEAD authentication tag.
const TAG_LEN: usize = 16;
/// Random bytes appended to every ciphertext: the iv followed by the nonce.
pub const RANDOM_LEN: usize = IV_LEN + NONCE_LEN;
/// How much longer a ciphertext is than its plaintext.
pub const OVERHEAD: usize = RANDOM_LEN + TAG_LEN;

/// Protobuf `SecretKey.Type` values.
const PROTO_TYPE_AES256: u32 = 1;
const PROTO_TYPE_CHACHA20: u32 = 2;
/// Protobuf `HMACKey.Hash` value of SHA-256, the only hash there is.
const PROTO_HASH_SHA256: u32 = 1;

/// Go's `base64.StdEncoding` as a decoder: padding required, but non-zero trailing
/// bits accepted (Go does not check them), so every value Go reads, we read.
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

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

    fn proto_type(self) -> u32 {
        match self {
            Self::Aes256 => PROTO_TYPE_AES256,
            Self::ChaCha20 => PROTO_TYPE_CHACHA20,
        }
    }

    fn from_proto_type(value: u32) -> Option<Cipher> {
        match value {
            PROTO_TYPE_AES256 => Some(Self::Aes256),
            PROTO_TYPE_CHACHA20 => Some(Self::ChaCha20),
            _ => None,
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
    cipher: Cipher,
    key: Zeroizing<[u8; KEY_LEN]>,
    /// Keys stored in JSON (before 2024) have none; they cannot compute HMACs.
    hmac_key: Option<Zeroizing<[u8; KEY_LEN]>>,
    created_secs: i64,
    created_nanos: u32,
    created_by: String,
    /// The key was stored as JSON without an `algorithm`: before 2022 and for keys
    /// imported through the 2022-2023 API, each encryption picked AES or ChaCha20 by
    /// the host's CPU and recorded its choice in the (legacy) ciphertext. Go KES reads
    /// such keys as AES256 and ignores the recorded choice, so their ChaCha20
    /// ciphertexts are lost there; we honour the recorded algorithm instead
    /// (formats.md §3.5). Everything else treats the key as AES256, as Go does.
    undefined_algorithm: bool,
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

    fn new_with_hmac(
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

    fn parse_json(stored: &[u8]) -> Result<KeyVersion, KeyError> {
        let [bytes, algorithm, created_at, created_by] =
            go_json_string_fields(stored, ["bytes", "algorithm", "created_at", "created_by"])
                .ok_or(KeyError::Malformed("JSON key has fields of the wrong type"))?;

        let key = match &bytes {
            Some(text) => go_base64_decode(text.as_bytes())
                .ok_or(KeyError::Malformed("JSON key bytes are not base64"))?,
            None => Zeroizing::new(Vec::new()),
        };
        let key = key_array(&key)?;

        let algorithm = algorithm.as_ref().map_or("", |text| text.as_str());
        let (cipher, undefined_algorithm) = if algorithm.is_empty() {
            (Cipher::Aes256, true)
        } else {
            let cipher = Cipher::parse(algorithm)
                .ok_or_else(|| KeyError::UnknownAlgorithm(algorithm.to_owned()))?;
            (cipher, false)
        };

        // Keys from before 2022 have no creation time; Go reads it as its zero time.
        let (created_secs, created_nanos) = match &created_at {
            Some(text) => {
                timefmt::parse_rfc3339(text.as_str()).ok_or(KeyError::InvalidCreatedAt)?
            }
            None => (timefmt::ZERO_TIME_SECS, 0),
        };

        Ok(KeyVersion {
            cipher,
            key,
            hmac_key: None,
            created_secs,
            created_nanos,
            created_by: created_by
                .as_ref()
                .map_or("", |text| text.as_str())
                .to_owned(),
            undefined_algorithm,
        })
    }

    fn parse_protobuf(stored: &[u8]) -> Result<KeyVersion, KeyError> {
        use prost::Message as _;

        let raw = go_base64_decode(stored).ok_or(KeyError::Malformed("neither JSON nor base64"))?;
        let message = proto::KeyVersion::decode(raw.as_slice())
            .map_err(|_| KeyError::Malformed("not a protobuf KeyVersion"))?;

        let secret = message.key.as_ref().ok_or(KeyError::InvalidLength(0))?;
        let key = key_array(&secret.key)?;
        let cipher = Cipher::from_proto_type(secret.r#type)
            .ok_or(KeyError::UnknownKeyType(secret.r#type))?;

        let hmac = message.hmac_key.as_ref().ok_or(KeyError::InvalidHmacKey)?;
        if hmac.hash != PROTO_HASH_SHA256 {
            return Err(KeyError::InvalidHmacKey);
        }
        let hmac_key = key_array(&hmac.key).map_err(|_| KeyError::InvalidHmacKey)?;

        // Go reads a missing timestamp as the Unix epoch, and out-of-range nanoseconds
        // carry into the seconds.
        let (seconds, nanos) = message
            .created_at
            .as_ref()
            .map_or((0, 0), |t| (t.seconds, t.nanos));
        let (created_secs, created_nanos) = normalize_timestamp(seconds, nanos);

        Ok(KeyVersion {
            cipher,
            key,
            hmac_key: Some(hmac_key),
            created_secs,
            created_nanos,
            created_by: message.created_by.clone(),
            undefined_algorithm: false,
        })
    }

    /// The value to store: base64 of the protobuf `KeyVersion`, as Go KES writes since
    /// 2024, byte for byte.
    ///
    /// A key read from legacy JSON has no HMAC key, which the protobuf form cannot
    /// express (Go refuses such a value), so it is written in the JSON form of
    /// 2022-2023 instead, which every generation reads the same way.
    ///
    /// The result contains the key: wipe it after use.
    pub fn encode(&self) -> String {
        match &self.hmac_key {
            Some(hmac_key) => self.encode_protobuf(hmac_key),
            None => self.encode_legacy_json(),
        }
    }

    fn encode_protobuf(&self, hmac_key: &[u8; KEY_LEN]) -> String {
        use prost::Message as _;

        let message = proto::KeyVersion {
            key: Some(proto::SecretKey {
                key: self.key.to_vec(),
                r#type: self.cipher.proto_type(),
            }),
            hmac_key: Some(proto::HmacKey {
                key: hmac_key.to_vec(),
                hash: PROTO_HASH_SHA256,
            }),
            created_at: Some(proto::Timestamp {
                seconds: self.created_secs,
                // Below 1e9, so it fits.
                nanos: self.created_nanos as i32,
            }),
            created_by: self.created_by.clone(),
        };
        let mut raw = Zeroizing::new(Vec::with_capacity(message.encoded_len()));
        message
            .encode(&mut *raw)
            .expect("a Vec with room for the whole message");
        STANDARD.encode(raw.as_slice())
    }

    /// The JSON form of 2022-2023 (formats.md §2), the one that carries every field a
    /// key without HMAC key can have.
    fn encode_legacy_json(&self) -> String {
        use std::fmt::Write as _;

        let key = Zeroizing::new(STANDARD.encode(self.key.as_slice()));
        let created_by = serde_json::to_string(&self.created_by).expect("a string serializes");
        // Sized up front: growing would leave copies of the key in freed memory.
        let mut out = String::with_capacity(200 + created_by.len());
        let _ = write!(out, r#"{{"version":"v1","bytes":"{}""#, key.as_str());
        if !self.undefined_algorithm {
            let _ = write!(out, r#","algorithm":"{}""#, self.cipher.legacy_name());
        }
        let _ = write!(out, r#","created_at":"{}""#, self.created_at_rfc3339());
        if !self.created_by.is_empty() {
            let _ = write!(out, r#","created_by":{created_by}"#);
        }
        out.push('}');
        out
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

    /// Encrypts with fresh random iv and nonce, binding `context` as associated data.
    ///
    /// # Panics
    /// As [`KeyVersion::generate`].
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut random = Zeroizing::new([0; RANDOM_LEN]);
        fill_random(&mut random[..]);
        self.encrypt_with_random(plaintext, context, &random)
    }

    /// [`KeyVersion::encrypt`] with the caller's iv and nonce (`random` = iv || nonce).
    /// Only for reproducing test vectors: reusing `random` breaks the encryption.
    #[doc(hidden)]
    pub fn encrypt_with_random(
        &self,
        plaintext: &[u8],
        context: &[u8],
        random: &[u8; RANDOM_LEN],
    ) -> Vec<u8> {
        let (iv, nonce) = random.split_at(IV_LEN);
        let aead_key = derive_aead_key(self.cipher, &self.key, iv);
        // The buffer holds the plaintext until it is encrypted in place; it is sized so
        // that appending never reallocates and leaves a plaintext copy behind.
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + OVERHEAD));
        buffer.extend_from_slice(plaintext);
        let tag =
            match self.cipher {
                Cipher::Aes256 => Aes256Gcm::new(aead_key.as_slice().into())
                    .encrypt_in_place_detached(nonce.into(), context, &mut buffer),
                Cipher::ChaCha20 => ChaCha20Poly1305::new(aead_key.as_slice().into())
                    .encrypt_in_place_detached(nonce.into(), context, &mut buffer),
            }
            .expect("plaintexts are far below the AEAD length limits");
        buffer.extend_from_slice(&tag);
        buffer.extend_from_slice(random);
        std::mem::take(&mut *buffer)
    }

    /// Decrypts a ciphertext of any generation: the current binary layout, or the
    /// msgpack and JSON wrappings of older servers (formats.md §3).
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let legacy = legacy::parse(ciphertext);
        let (sealed, iv, nonce, cipher) = match &legacy {
            Some(parsed) => {
                let cipher = if self.undefined_algorithm {
                    parsed.algorithm
                } else {
                    self.cipher
                };
                (
                    parsed.sealed.as_slice(),
                    &parsed.iv[..],
                    &parsed.nonce[..],
                    cipher,
                )
            }
            None => {
                if ciphertext.len() <= RANDOM_LEN {
                    return Err(DecryptError);
                }
                let (sealed, random) = ciphertext.split_at(ciphertext.len() - RANDOM_LEN);
                let (iv, nonce) = random.split_at(IV_LEN);
                (sealed, iv, nonce, self.cipher)
            }
        };
        if sealed.len() < TAG_LEN {
            return Err(DecryptError);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let aead_key = derive_aead_key(cipher, &self.key, iv);
        let mut plaintext = Zeroizing::new(body.to_vec());
        match cipher {
            Cipher::Aes256 => Aes256Gcm::new(aead_key.as_slice().into()).decrypt_in_place_detached(
                nonce.into(),
                context,
                &mut plaintext,
                tag.into(),
            ),
            Cipher::ChaCha20 => ChaCha20Poly1305::new(aead_key.as_slice().into())
                .decrypt_in_place_detached(nonce.into(), context, &mut plaintext, tag.into()),
        }
        .map_err(|_| DecryptError)?;
        Ok(plaintext)
    }

    /// HMAC-SHA256 of `message` under the key's HMAC key; `None` if it has none.
    pub fn hmac(&self, message: &[u8]) -> Option<[u8; 32]> {
        let hmac_key = self.hmac_key.as_ref()?;
        Some(hmac_sha256(hmac_key.as_slice(), message))
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

/// Fills `buf` from the operating system's CSPRNG (`getrandom(2)` on Linux), which
/// never repeats across processes, unlike a user-space generator seeded at start.
///
/// The kernel's bytes are fetched 512 at a time per thread: a generate request needs 60
/// (key, IV, nonce), and one syscall for eight requests instead of two per request is a
/// measurable share of the hot path. Every byte is handed out once and wiped from the
/// buffer as it is handed out.
fn fill_random(buf: &mut [u8]) {
    const POOL: usize = 512;
    struct Pool {
        bytes: Zeroizing<[u8; POOL]>,
        next: usize,
    }
    thread_local! {
        static RANDOM: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool {
            bytes: Zeroizing::new([0; POOL]),
            next: POOL,
        });
    }
    let os_random = |buf: &mut [u8]| {
        getrandom::getrandom(buf).expect("the operating system's random number generator failed")
    };
    if buf.len() > POOL / 4 {
        return os_random(buf);
    }
    RANDOM.with_borrow_mut(|pool| {
        if POOL - pool.next < buf.len() {
            os_random(&mut pool.bytes[..]);
            pool.next = 0;
        }
        let taken = &mut pool.bytes[pool.next..pool.next + buf.len()];
        buf.copy_from_slice(taken);
        taken.zeroize();
        pool.next += buf.len();
    });
}

fn key_array(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    if bytes.len() != KEY_LEN {
        return Err(KeyError::InvalidLength(bytes.len()));
    }
    let mut key = Zeroizing::new([0; KEY_LEN]);
    key.copy_from_slice(bytes);
    Ok(key)
}

/// The one-message AEAD key of formats.md §3.1.
fn derive_aead_key(cipher: Cipher, master: &[u8; KEY_LEN], iv: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut derived = Zeroizing::new([0; KEY_LEN]);
    match cipher {
        Cipher::Aes256 => {
            let mut output = hmac_sha256(master, iv);
            derived.copy_from_slice(&output);
            output.zeroize();
        }
        Cipher::ChaCha20 => {
            let mut output = chacha20::hchacha::<U10>(master.into(), iv.into());
            derived.copy_from_slice(&output);
            output.as_mut_slice().zeroize();
        }
    }
    derived
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    let mut output = mac.finalize().into_bytes();
    let sum = output.into();
    output.as_mut_slice().zeroize();
    sum
}

/// Go's protobuf `Timestamp` to `(seconds, nanoseconds)` with nanoseconds in range.
fn normalize_timestamp(seconds: i64, nanos: i32) -> (i64, u32) {
    const NANOS_PER_SEC: i64 = 1_000_000_000;
    let nanos = i64::from(nanos);
    (
        seconds.saturating_add(nanos.div_euclid(NANOS_PER_SEC)),
        nanos.rem_euclid(NANOS_PER_SEC) as u32,
    )
}

/// Decodes base64 as Go's `base64.StdEncoding` does, which also skips line breaks.
/// The result may be key material, so it is wiped when dropped.
fn go_base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let without_breaks;
    let text = if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        without_breaks = Zeroizing::new(
            text.iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect::<Vec<_>>(),
        );
        without_breaks.as_slice()
    } else {
        text
    };
    let mut decoded = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
    GO_BASE64.decode_vec(text, &mut decoded).ok()?;
    Some(decoded)
}

/// A JSON string value, borrowed from the input when it has no escapes. An unescaped
/// copy is wiped when dropped, because it may be (the base64 of) key material.
struct JsonText<'a>(Cow<'a, str>);

impl JsonText<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for JsonText<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(text) = &mut self.0 {
            text.zeroize();
        }
    }
}

impl<'de> de::Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Reads the string fields `names` of a JSON object the way Go's `encoding/json` fills
/// a struct of string fields: names match ASCII-case-insensitively, the last duplicate
/// wins, `null` leaves a field unset, other fields are ignored, and a JSON `null`
/// instead of an object sets nothing. `None` if `json` is not an object (or `null`)
/// or one of the fields holds something other than a string or `null`.
fn go_json_string_fields<'a, const N: usize>(
    json: &'a [u8],
    names: [&str; N],
) -> Option<[Option<JsonText<'a>>; N]> {
    struct FieldsVisitor<'n, const N: usize> {
        names: [&'n str; N],
    }

    impl<'de, const N: usize> Visitor<'de> for FieldsVisitor<'_, N> {
        type Value = [Option<JsonText<'de>>; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(std::array::from_fn(|_| None))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found: [Option<JsonText<'de>>; N] = std::array::from_fn(|_| None);
            while let Some(key) = map.next_key::<JsonText<'de>>()? {
                match self
                    .names
                    .iter()
                    .position(|name| name.eq_ignore_ascii_case(key.as_str()))
                {
                    Some(index) => {
                        if let Some(value) = map.next_value::<Option<JsonText<'de>>>()? {
                            found[index] = Some(value);
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let fields = deserializer.deserialize_any(FieldsVisitor { names }).ok()?;
    deserializer.end().ok()?;
    Some(fields)
}

/// Ciphertexts of servers before 2024 (formats.md §3.3, §3.4).
mod legacy {
    use super::{Cipher, IV_LEN, JsonText, NONCE_LEN, go_base64_decode, go_json_string_fields};

    /// The parts of a legacy ciphertext. The current layout is `sealed || iv || nonce`.
    pub(super) struct Ciphertext {
        /// The algorithm the writer recorded; Go KES ignores it.
        pub algorithm: Cipher,
        pub iv: [u8; IV_LEN],
        pub nonce: [u8; NONCE_LEN],
        /// AEAD output: encrypted plaintext followed by the tag.
        pub sealed: Vec<u8>,
    }

    /// Unwraps a msgpack (first byte 0x95) or JSON (first byte `{`) ciphertext. `None`
    /// for anything else, including broken wrappings, which the original then tries as
    /// a current-layout ciphertext (where they fail to authenticate).
    pub(super) fn parse(ciphertext: &[u8]) -> Option<Ciphertext> {
        match ciphertext.first()? {
            0x95 => parse_msgpack(ciphertext),
            b'{' => parse_json(ciphertext),
            _ => None,
        }
    }

    /// `[algorithm: str, key id: str, iv: bin(16), nonce: bin(12), sealed: bin]`.
    fn parse_msgpack(ciphertext: &[u8]) -> Option<Ciphertext> {
        let mut reader = Msgpack { rest: ciphertext };
        if reader.byte()? != 0x95 {
            return None;
        }
        let algorithm = match reader.str()? {
            b"AES256" | b"AES256-GCM_SHA256" => Cipher::Aes256,
            b"ChaCha20" | b"XCHACHA20-POLY1305" => Cipher::ChaCha20,
            _ => return None,
        };
        let _key_id = reader.str()?;
        let iv = reader.bin()?.try_into().ok()?;
        let nonce = reader.bin()?.try_into().ok()?;
        let sealed = reader.bin()?.to_vec();
        if !reader.rest.is_empty() {
            return None;
        }
        Some(Ciphertext {
            algorithm,
            iv,
            nonce,
            sealed,
        })
    }

    /// `{"aead": …, "id": …, "iv": b64, "nonce": b64, "bytes": b64}`.
    fn parse_json(ciphertext: &[u8]) -> Option<Ciphertext> {
        // The key ID is ignored, but Go refuses the wrapping if it is not a string.
        let [aead, _key_id, iv, nonce, bytes] =
            go_json_string_fields(ciphertext, ["aead", "id", "iv", "nonce", "bytes"])?;
        let algorithm = match aead.as_ref().map(JsonText::as_str) {
            Some("AES-256-GCM-HMAC-SHA-256") => Cipher::Aes256,
            Some("ChaCha20Poly1305") => Cipher::ChaCha20,
            _ => return None,
        };
        let decode = |field: &Option<JsonText<'_>>| match field {
            Some(text) => go_base64_decode(text.as_bytes()),
            None => Some(Default::default()),
        };
        let iv = decode(&iv)?.as_slice().try_into().ok()?;
        let nonce = decode(&nonce)?.as_slice().try_into().ok()?;
        let sealed = decode(&bytes)?.to_vec();
        Some(Ciphertext {
            algorithm,
            iv,
            nonce,
            sealed,
        })
    }

    /// Just enough of a msgpack reader for the five elements above.
    struct Msgpack<'a> {
        rest: &'a [u8],
    }

    impl<'a> Msgpack<'a> {
        fn byte(&mut self) -> Option<u8> {
            let (&first, rest) = self.rest.split_first()?;
            self.rest = rest;
            Some(first)
        }

        fn take(&mut self, len: usize) -> Option<&'a [u8]> {
            if self.rest.len() < len {
                return None;
            }
            let (taken, rest) = self.rest.split_at(len);
            self.rest = rest;
            Some(taken)
        }

        /// A big-endian length of `width` bytes.
        fn length(&mut self, width: usize) -> Option<usize> {
            let bytes = self.take(width)?;
            let value = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            usize::try_from(value).ok()
        }

        /// fixstr, str8, str16 or str32.
        fn str(&mut self) -> Option<&'a [u8]> {
            let len = match self.byte()? {
                marker @ 0xa0..=0xbf => usize::from(marker & 0x1f),
                0xd9 => self.length(1)?,
                0xda => self.length(2)?,
                0xdb => self.length(4)?,
                _ => return None,
            };
            self.take(len)
        }

        /// bin8, bin16 or bin32.
        fn bin(&mut self) -> Option<&'a [u8]> {
            let len = match self.byte()? {
                0xc4 => self.length(1)?,
                0xc5 => self.length(2)?,
                0xc6 => self.length(4)?,
                _ => return None,
            };
            self.take(len)
        }
    }
}

/// The protobuf messages of the stored key (formats.md §2.2, package `miniohq.kms`).
/// Their `Debug` is written by hand so that it never shows key bytes, and the byte
/// fields are wiped on drop.
mod proto {
    use std::fmt;

    use zeroize::Zeroize;

    #[derive(prost::Message)]
    #[prost(skip_debug)]
    pub struct SecretKey {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub r#type: u32,
    }

    #[derive(prost::Message)]
    #[prost(skip_debug)]
    pub struct HmacKey {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub hash: u32,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(prost::Message)]
    #[prost(skip_debug)]
    pub struct KeyVersion {
        #[prost(message, optional, tag = "1")]
        pub key: Option<SecretKey>,
        #[prost(message, optional, tag = "2")]
        pub hmac_key: Option<HmacKey>,
        #[prost(message, optional, tag = "3")]
        pub created_at: Option<Timestamp>,
        #[prost(string, tag = "4")]
        pub created_by: String,
    }

    impl Drop for SecretKey {
        fn drop(&mut self) {
            self.key.zeroize();
        }
    }

    impl Drop for HmacKey {
        fn drop(&mut self) {
            self.key.zeroize();
        }
    }

    impl fmt::Debug for SecretKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SecretKey")
                .field("type", &self.r#type)
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for HmacKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("HmacKey")
                .field("hash", &self.hash)
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for KeyVersion {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("KeyVersion")
                .field("key", &self.key)
                .field("hmac_key", &self.hmac_key)
                .field("created_at", &self.created_at)
                .field("created_by", &self.created_by)
                .finish()
        }
    }
}

#[cfg(test)]
mod tests;
