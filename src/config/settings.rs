//! A validated config: what the server, the keystore and the cache are given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::crypto::OldestReader;
use crate::policy::PolicyConfig;

/// Which keystore the file configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreConfig {
    /// No keystore section: only `--dev` allows it (keys in memory).
    Memory,
    Fs {
        path: PathBuf,
    },
    CipherTrust(CipherTrustSettings),
}

#[derive(Clone, PartialEq, Eq)]
pub struct CipherTrustSettings {
    pub endpoint: String,
    pub token: String,
    pub domain: String,
    pub retry: Duration,
    pub ca: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// New master keys are non-exportable CipherTrust keys (`master_keys: resident`).
    pub resident: bool,
    /// `intermediate_key:`: resident keys seal data keys under intermediate keys.
    pub intermediate_key: Option<IntermediateKeySettings>,
}

/// How long and how often one intermediate key of a resident key may be used
/// (docs/resident-keys.md, "Intermediate keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntermediateKeySettings {
    /// An intermediate key is used for this long after CipherTrust wrapped or unwrapped
    /// it, never longer: the bound on how long a key disabled in CipherTrust keeps working.
    pub ttl: Duration,
    /// ... and for at most this many data keys.
    pub max_uses: u64,
}

impl IntermediateKeySettings {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_MAX_USES: u64 = 1_000_000;
    /// The longest `ttl` allowed: a day.
    pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// The most uses allowed: AES-GCM with random 96-bit nonces is limited to 2^32
    /// messages per key (NIST SP 800-38D, 8.3).
    pub const MAX_USES: u64 = 1 << 32;
}

impl std::fmt::Debug for CipherTrustSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherTrustSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("domain", &self.domain)
            .field("retry", &self.retry)
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("resident", &self.resident)
            .field("intermediate_key", &self.intermediate_key)
            .finish()
    }
}

/// Per-route settings of the `api:` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteOverride {
    pub skip_auth: bool,
    pub timeout: Option<Duration>,
}

/// Cache expiry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheExpiry {
    pub any: Duration,
    pub unused: Duration,
    pub offline: Duration,
}

impl Default for CacheExpiry {
    /// The documented defaults (not the last Go release's 30 s flush bug).
    fn default() -> Self {
        CacheExpiry {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

/// Log thresholds. `None` for a field the file does not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogConfig {
    pub error: Option<log::LevelFilter>,
    pub audit: Option<log::LevelFilter>,
}

/// A validated server config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the config came from, for messages and SIGHUP.
    pub path: Option<PathBuf>,
    pub address: Option<String>,
    /// The admin identity, or `None` when disabled.
    pub admin: Option<String>,
    pub tls_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_password: Option<String>,
    /// `tls.auth` of the file; `None` when not set (the `--auth` flag or default decides).
    pub tls_auth: Option<bool>,
    pub tls_ca: Option<PathBuf>,
    pub policies: BTreeMap<String, PolicyConfig>,
    pub cache: CacheExpiry,
    pub log: LogConfig,
    pub api: BTreeMap<String, RouteOverride>,
    pub keys: Vec<String>,
    pub keystore: KeyStoreConfig,
    /// `compat.oldest_reader`: the forms kes writes keys and ciphertexts in.
    pub oldest_reader: OldestReader,
}
