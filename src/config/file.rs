//! The config file as written: the YAML schema of every generation (unknown keys are
//! errors), and where in the text an error is (`FILE:LINE: field: message`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env::{AuthMode, Env, GoDuration, LogLevel};
use crate::crypto::OldestReader;
use crate::policy::Rule;

/// A config error: where and what, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The config file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub version: Option<Env<String>>,
    pub address: Option<Env<String>>,
    /// The oldest releases' name for `admin.identity`.
    pub root: Option<Env<String>>,
    pub admin: Option<AdminSection>,
    pub tls: Option<TlsSection>,
    pub policy: Option<BTreeMap<String, PolicySection>>,
    pub cache: Option<CacheSection>,
    pub log: Option<LogSection>,
    pub api: Option<BTreeMap<String, ApiSection>>,
    pub keys: Option<Vec<KeySection>>,
    pub keystore: Option<KeyStoreSection>,
    pub compat: Option<CompatSection>,
}

/// `compat:`: what the oldest Go KES sharing the keystore can read (docs/migration.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatSection {
    /// `v0.17`, `2023` (a YAML number or a string) or `current`.
    pub oldest_reader: Option<Env<OldestReader>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub identity: Option<Env<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub key: Option<Env<String>>,
    pub cert: Option<Env<String>>,
    pub password: Option<Env<String>>,
    pub auth: Option<Env<AuthMode>>,
    pub ca: Option<Env<String>>,
    pub proxy: Option<ProxySection>,
}

/// TLS proxies (2023 generations). Parsed so such files load; not applied, as in the
/// last release.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub identities: Option<Vec<Env<String>>>,
    pub header: Option<ProxyHeaderSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyHeaderSection {
    pub cert: Option<Env<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// `paths` is the name the oldest releases used for allow rules.
    #[serde(alias = "paths")]
    pub allow: Option<Vec<Rule>>,
    pub deny: Option<Vec<Rule>>,
    pub identities: Option<Vec<Env<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub expiry: Option<ExpirySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirySection {
    pub any: Option<Env<GoDuration>>,
    pub unused: Option<Env<GoDuration>>,
    pub offline: Option<Env<GoDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub error: Option<Env<LogLevel>>,
    pub audit: Option<Env<LogLevel>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub skip_auth: Option<Env<bool>>,
    pub timeout: Option<Env<GoDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub name: Env<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStoreSection {
    pub fs: Option<FsSection>,
    pub gemalto: Option<GemaltoSection>,
    /// The clearer name for `gemalto.keysecure`, with the same fields.
    pub ciphertrust: Option<KeySecureSection>,
    pub vault: Option<Unsupported>,
    pub fortanix: Option<Unsupported>,
    pub aws: Option<Unsupported>,
    pub gcp: Option<Unsupported>,
    pub azure: Option<Unsupported>,
    pub entrust: Option<Unsupported>,
    pub kes: Option<Unsupported>,
    pub generic: Option<Unsupported>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSection {
    pub path: Env<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemaltoSection {
    pub keysecure: KeySecureSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySecureSection {
    pub endpoint: Option<Env<String>>,
    pub credentials: Option<KeySecureCredentials>,
    pub tls: Option<KeySecureTls>,
    /// `exported` (default: the original's secrets) or `resident` (non-exportable CM keys).
    pub master_keys: Option<Env<String>>,
    /// Resident keys only: data keys sealed under short-lived intermediate keys that CM
    /// wraps (docs/resident-keys.md). Off when absent.
    pub intermediate_key: Option<IntermediateKeySection>,
}

/// `intermediate_key:` of the CipherTrust section; a field left out takes its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntermediateKeySection {
    pub ttl: Option<Env<GoDuration>>,
    pub max_uses: Option<Env<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySecureCredentials {
    pub token: Option<Env<String>>,
    pub domain: Option<Env<String>>,
    pub retry: Option<Env<GoDuration>>,
}

impl std::fmt::Debug for KeySecureCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecureCredentials")
            .field("token", &"<redacted>")
            .field("domain", &self.domain)
            .field("retry", &self.retry)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySecureTls {
    pub ca: Option<Env<String>>,
    /// Skips verification of CipherTrust's certificate. For lab setups only: kes warns
    /// loudly at every start.
    pub insecure_skip_verify: Option<Env<bool>>,
}

/// A keystore kind the original supports and kes does not: loading it fails with a
/// message that lists what is supported.
#[derive(Debug)]
pub struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "this keystore is not supported by kes; supported keystores: fs, gemalto.keysecure (alias ciphertrust)",
        ))
    }
}

/// The YAML of a config file, not yet validated.
pub(super) fn parse_yaml(text: &str, path: &Path) -> Result<File, ConfigError> {
    if text.trim().is_empty() {
        return Ok(File::default());
    }
    yaml_serde::from_str(text).map_err(|e| {
        located(
            path,
            (
                e.location().map(|l| l.line()),
                strip_location(&e.to_string()),
            ),
        )
    })
}

/// An error message prefixed with `FILE:LINE:` (or `FILE:` when the line is unknown).
pub(super) fn located(path: &Path, (line, msg): Invalid) -> ConfigError {
    match line {
        Some(line) => ConfigError(format!("{}:{line}: {msg}", path.display())),
        None => ConfigError(format!("{}: {msg}", path.display())),
    }
}

/// Resolves paths in the config relative to the config file's directory.
pub(super) fn relative_to(config: &Path) -> impl Fn(&str) -> PathBuf {
    let base = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    move |p: &str| {
        let p = Path::new(p.trim());
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    }
}

/// yaml_serde appends " at line L column C"; we print the line in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The first line (1-based) whose text contains `needle`, for errors found after parsing.
pub(super) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The first line (1-based) where `key:` starts at column 0.
pub(super) fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

/// What validation found wrong: the line it is on, when known, and the message.
pub(super) type Invalid = (Option<usize>, String);
