//! The stored forms of a master key (formats.md §2): what each Go KES generation writes
//! to the keystore, how we read all of them, and how we write each.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::gojson::{go_base64_decode, go_json_string_fields};
use super::{Cipher, KEY_LEN, KeyError, KeyVersion, OldestReader, key_array, proto};
use crate::timefmt;

/// Protobuf `SecretKey.Type` values.
const PROTO_TYPE_AES256: u32 = 1;
const PROTO_TYPE_CHACHA20: u32 = 2;
/// Protobuf `HMACKey.Hash` value of SHA-256, the only hash there is.
const PROTO_HASH_SHA256: u32 = 1;

impl Cipher {
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

impl KeyVersion {
    pub(super) fn parse_json(stored: &[u8]) -> Result<KeyVersion, KeyError> {
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

    pub(super) fn parse_protobuf(stored: &[u8]) -> Result<KeyVersion, KeyError> {
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

    /// The value to store in today's form: base64 of the protobuf `KeyVersion`, as Go
    /// KES writes since 2024, byte for byte.
    ///
    /// A key read from legacy JSON has no HMAC key, which the protobuf form cannot
    /// express (Go refuses such a value), so it is written in the v1 JSON form of
    /// 2022-2023 instead, which every generation since reads the same way.
    ///
    /// The result contains the key: wipe it after use.
    pub fn encode(&self) -> String {
        match &self.hmac_key {
            Some(hmac_key) => self.encode_protobuf(hmac_key),
            None => self.encode_v1_json(),
        }
    }

    /// The value to store so that `reader` and every later generation read it
    /// (formats.md §2):
    /// - [`OldestReader::V017`]: `{"bytes":"…"}`, the only form v0.17 writes. It has no
    ///   algorithm, so every reader takes it as an "undefined" key (AES256 for the
    ///   binary and msgpack forms; the recorded algorithm for JSON ciphertexts).
    /// - [`OldestReader::Y2023`]: the v1 JSON form with the 2022 algorithm names, which
    ///   both the 2022 and the 2023 releases parse. It carries no HMAC key.
    /// - [`OldestReader::Current`]: what [`KeyVersion::encode`] writes.
    ///
    /// The result contains the key: wipe it after use.
    pub fn encode_for(&self, reader: OldestReader) -> String {
        match reader {
            OldestReader::V017 => self.encode_bytes_json(),
            OldestReader::Y2023 => self.encode_v1_json(),
            OldestReader::Current => self.encode(),
        }
    }

    /// Whether [`KeyVersion::encode_for`] keeps everything the key is used with: the
    /// `{"bytes"}` form of v0.17 cannot record a cipher, so a ChaCha20 key written in it
    /// would be read back as an AES256 key, and its binary and msgpack ciphertexts would
    /// no longer decrypt. (The HMAC key the JSON forms drop is stated, not refused.)
    pub fn encodes_losslessly_for(&self, reader: OldestReader) -> bool {
        reader != OldestReader::V017 || self.undefined_algorithm || self.cipher == Cipher::Aes256
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

    /// The v1 JSON form of 2022-2023 (formats.md §2), field for field as the 2023
    /// releases marshal it: `version`, `bytes`, `algorithm` (omitted when undefined),
    /// `created_at` (always, Go's RFC 3339 with nanoseconds), `created_by` (omitted
    /// when empty). Carries every field a key without HMAC key can have.
    fn encode_v1_json(&self) -> String {
        use std::fmt::Write as _;

        let key = Zeroizing::new(STANDARD.encode(self.key.as_slice()));
        let created_by = serde_json::to_string(&self.created_by).expect("a string serializes");
        // Sized up front: growing would leave copies of the key in freed memory.
        let mut out = String::with_capacity(200 + created_by.len());
        let _ = write!(out, r#"{{"version":"v1","bytes":"{}""#, key.as_str());
        if !self.undefined_algorithm {
            let _ = write!(out, r#","algorithm":"{}""#, self.cipher.legacy_name());
        }
        // Go's time marshals only years 0 to 9999; a protobuf key (rewritten here for an
        // older reader) can hold any time. Outside that range, Go's zero time keeps the
        // value readable by every generation, losing only a creation time no Go wrote.
        let mut created_at = self.created_at_rfc3339();
        if timefmt::parse_rfc3339(&created_at).is_none() {
            created_at = timefmt::format_rfc3339(timefmt::ZERO_TIME_SECS, 0);
        }
        let _ = write!(out, r#","created_at":"{created_at}""#);
        if !self.created_by.is_empty() {
            let _ = write!(out, r#","created_by":{created_by}"#);
        }
        out.push('}');
        out
    }
    /// `{"bytes":"<base64>"}`, byte for byte what v0.17 writes (`key.String()`): no
    /// spaces, no newline.
    fn encode_bytes_json(&self) -> String {
        let key = Zeroizing::new(STANDARD.encode(self.key.as_slice()));
        let mut out = String::with_capacity(key.len() + 12);
        out.push_str(r#"{"bytes":""#);
        out.push_str(&key);
        out.push_str(r#""}"#);
        out
    }
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

/// The form a stored value is in (formats.md §2), which decides the Go releases that
/// can read it. Ordered from the most widely readable to the least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoredForm {
    /// JSON without an algorithm: `{"bytes"}` of v0.17 and before, or a v1 key whose
    /// algorithm was undefined (2022-2023) or AES256 (dropped as a zero value, 2023-10
    /// to 2024-01). Every release reads it.
    JsonWithoutAlgorithm,
    /// v1 JSON with `AES256-GCM_SHA256` or `XCHACHA20-POLY1305`, written from v0.19.2
    /// (2022-04-07) to 2023-09. Releases before v0.19.2 read its bytes but not its
    /// algorithm.
    JsonAlgorithm2022,
    /// v1 JSON with `ChaCha20` (kes-go v0.2 names, 2023-10 to 2024-01), which the
    /// releases before 2023-10-03 refuse.
    JsonAlgorithm2023,
    /// Base64 protobuf with an HMAC key, written since 2024-02-29.
    Protobuf,
    /// Not a KES key at all.
    Unreadable,
}

impl StoredForm {
    /// Every form, in order.
    pub const ALL: [StoredForm; 5] = [
        Self::JsonWithoutAlgorithm,
        Self::JsonAlgorithm2022,
        Self::JsonAlgorithm2023,
        Self::Protobuf,
        Self::Unreadable,
    ];

    /// Classifies a stored value without keeping any of its key material.
    pub fn of(stored: &[u8]) -> StoredForm {
        match KeyVersion::parse(stored) {
            Err(_) => Self::Unreadable,
            Ok(key) if key.hmac_key.is_some() => Self::Protobuf,
            Ok(key) if key.undefined_algorithm => Self::JsonWithoutAlgorithm,
            Ok(_) => {
                let algorithm = go_json_string_fields(stored, ["algorithm"])
                    .and_then(|[algorithm]| algorithm)
                    .map(|text| text.as_str().to_owned())
                    .unwrap_or_default();
                match algorithm.as_str() {
                    "AES256-GCM_SHA256" | "XCHACHA20-POLY1305" => Self::JsonAlgorithm2022,
                    _ => Self::JsonAlgorithm2023,
                }
            }
        }
    }

    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonWithoutAlgorithm => "JSON, no algorithm ({\"bytes\"} or v1)",
            Self::JsonAlgorithm2022 => "v1 JSON, 2022 algorithm names",
            Self::JsonAlgorithm2023 => "v1 JSON, 2023-10 algorithm names",
            Self::Protobuf => "base64 protobuf",
            Self::Unreadable => "not a KES key",
        }
    }

    /// The oldest Go KES release that reads the form completely; `None` for
    /// [`StoredForm::Unreadable`].
    pub fn oldest_go_release(self) -> Option<&'static str> {
        match self {
            Self::JsonWithoutAlgorithm => Some("v0.17.0 (or older)"),
            Self::JsonAlgorithm2022 => Some("v0.19.2 (2022-04-07)"),
            Self::JsonAlgorithm2023 => Some("2023-10-03T00-48-37Z"),
            Self::Protobuf => Some("2024-02-29T08-12-28Z"),
            Self::Unreadable => None,
        }
    }

    /// The oldest `compat.oldest_reader` level whose whole generation reads the form.
    pub fn oldest_level(self) -> Option<OldestReader> {
        match self {
            Self::JsonWithoutAlgorithm => Some(OldestReader::V017),
            Self::JsonAlgorithm2022 => Some(OldestReader::Y2023),
            Self::JsonAlgorithm2023 | Self::Protobuf => Some(OldestReader::Current),
            Self::Unreadable => None,
        }
    }

    /// Whether every release of the `reader` generation reads the form.
    pub fn readable_at(self, reader: OldestReader) -> bool {
        self.oldest_level().is_some_and(|level| level <= reader)
    }
}
