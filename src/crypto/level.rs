//! `compat.oldest_reader`: the oldest Go KES generation that must read what kes writes.
//!
//! A fleet migrated node by node shares one keystore, and MinIO spreads its calls over
//! every node, so each stored key and each ciphertext kes writes may next be read by the
//! oldest Go node still in the fleet. The level picks the forms kes writes; reading
//! always accepts every form.

use std::fmt;
use std::str::FromStr;

/// The oldest Go KES generation in the fleet.
/// Ordered from the oldest generation to the newest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OldestReader {
    /// Releases up to v0.19.1 (2022-03-24): stored keys `{"bytes":…}`, ciphertexts in
    /// the JSON form (formats.md §3.4).
    V017,
    /// Releases v0.19.2 (2022-04-07) to 2024-01-11T13-09-29Z: stored keys in the v1
    /// JSON form with the 2022 algorithm names, ciphertexts in the msgpack form (§3.3).
    Y2023,
    /// Releases since 2024-02-29T08-12-28Z: base64 protobuf keys with an HMAC key,
    /// binary ciphertexts (§2.2, §3.2).
    #[default]
    Current,
}

impl OldestReader {
    /// The values the config accepts, for error messages.
    pub const ALLOWED: &'static str = "v0.17, 2023, current";

    /// The name as written in the config, in `/v1/status` and the banner.
    pub fn name(self) -> &'static str {
        match self {
            Self::V017 => "v0.17",
            Self::Y2023 => "2023",
            Self::Current => "current",
        }
    }

    /// What the level writes, for the banner and the logs.
    pub fn forms(self) -> &'static str {
        match self {
            Self::V017 => "keys as {\"bytes\"} JSON, ciphertexts as JSON",
            Self::Y2023 => "keys as v1 JSON, ciphertexts as msgpack",
            Self::Current => "keys as protobuf, ciphertexts in the binary form",
        }
    }
}

impl fmt::Display for OldestReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OldestReader {
    type Err = String;

    /// Exact names; a YAML number `2023` arrives here as the text `2023`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "v0.17" => Ok(Self::V017),
            "2023" => Ok(Self::Y2023),
            "current" => Ok(Self::Current),
            other => Err(format!(
                "unknown oldest reader '{other}': allowed values are {}",
                Self::ALLOWED
            )),
        }
    }
}
