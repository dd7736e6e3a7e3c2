//! The server's YAML config file, in every form the original ever accepted.
//!
//! Three generations load unchanged: the oldest (`root:`, as the CipherTrust tutorial
//! writes it), the 2023 files (`admin.identity`, `--auth` flag) and the last release's
//! (`tls.auth`, `api:` for every route). Unlike the original, an unknown key is an error:
//! a typo such as `dney:` would otherwise silently drop a rule. Every error names the
//! file, the line and the field.

mod env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use env::{AuthMode, Env, GoDuration, LogLevel, substitute};

use crate::crypto::OldestReader;
use crate::policy::{PolicyConfig, Rule};

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

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("cannot read config file '{}': {e}", path.display()))
        })?;
        Config::parse(&text, path)
    }

    /// Parses config `text`; `path` names it in errors and resolves nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = parse_yaml(text, path)?;
        validate(file, text, path).map_err(|invalid| located(path, invalid))
    }
}

/// The YAML of a config file, not yet validated.
fn parse_yaml(text: &str, path: &Path) -> Result<File, ConfigError> {
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
fn located(path: &Path, (line, msg): Invalid) -> ConfigError {
    match line {
        Some(line) => ConfigError(format!("{}:{line}: {msg}", path.display())),
        None => ConfigError(format!("{}: {msg}", path.display())),
    }
}

/// Resolves paths in the config relative to the config file's directory.
fn relative_to(config: &Path) -> impl Fn(&str) -> PathBuf {
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

/// Reads only the `keystore:` and `compat:` sections of a config file (`kes migrate` and
/// `kes survey` need no TLS or admin settings).
pub fn load_keystore(path: &Path) -> Result<(KeyStoreConfig, OldestReader), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file '{}': {e}", path.display())))?;
    let file = parse_yaml(&text, path)?;
    let keystore = keystore_config(file.keystore, &text, &relative_to(path))
        .map_err(|invalid| located(path, invalid))?;
    Ok((keystore, oldest_reader(file.compat)))
}

fn oldest_reader(section: Option<CompatSection>) -> OldestReader {
    section
        .and_then(|c| c.oldest_reader)
        .map(|level| level.0)
        .unwrap_or_default()
}

/// yaml_serde appends " at line L column C"; we print the line in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The first line (1-based) whose text contains `needle`, for errors found after parsing.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The first line (1-based) where `key:` starts at column 0.
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

type Invalid = (Option<usize>, String);

fn validate(file: File, text: &str, path: &Path) -> Result<Config, Invalid> {
    if let Some(version) = &file.version {
        if version.0.trim() != "v1" {
            return Err((
                top_level_line(text, "version"),
                format!(
                    "version: unsupported config version '{}': only 'v1' exists",
                    version.0
                ),
            ));
        }
    }
    let relative = relative_to(path);

    let admin_text = match (
        &file.root,
        file.admin.as_ref().and_then(|a| a.identity.as_ref()),
    ) {
        (Some(_), Some(_)) => {
            return Err((
                top_level_line(text, "root"),
                format!(
                    "both 'root' (line {}) and 'admin.identity' (line {}) set the admin identity: keep one",
                    top_level_line(text, "root").unwrap_or(0),
                    top_level_line(text, "admin").unwrap_or(0)
                ),
            ));
        }
        (Some(root), None) => Some(root.0.trim().to_string()),
        (None, Some(admin)) => Some(admin.0.trim().to_string()),
        (None, None) => None,
    };
    let admin = match admin_text {
        None => {
            return Err((
                None,
                "admin.identity: no admin identity: set 'admin.identity' (or 'root') to an identity, or to 'disabled'".into(),
            ));
        }
        Some(id) if id.is_empty() => {
            return Err((
                top_level_line(text, "admin").or(top_level_line(text, "root")),
                "admin.identity: the admin identity is empty: set an identity or 'disabled'".into(),
            ));
        }
        Some(id) if crate::identity::is_identity(&id) => Some(id.to_ascii_lowercase()),
        Some(_) => None,
    };

    let tls = file.tls.unwrap_or_default();
    let tls_key = match &tls.key {
        Some(k) if !k.0.trim().is_empty() => relative(&k.0),
        _ => {
            return Err((
                top_level_line(text, "tls"),
                "tls.key: no private key: set 'tls.key' to a PEM file".into(),
            ));
        }
    };
    let tls_cert = match &tls.cert {
        Some(c) if !c.0.trim().is_empty() => relative(&c.0),
        _ => {
            return Err((
                top_level_line(text, "tls"),
                "tls.cert: no certificate: set 'tls.cert' to a PEM file".into(),
            ));
        }
    };
    let tls_ca = tls
        .ca
        .as_ref()
        .filter(|c| !c.0.trim().is_empty())
        .map(|c| relative(&c.0));

    let mut policies = BTreeMap::new();
    let mut assigned: BTreeMap<String, String> = BTreeMap::new();
    for (name, section) in file.policy.unwrap_or_default() {
        if !crate::names::valid_name(&name) {
            return Err((
                line_of(text, &format!("{name}:")),
                format!("policy.{name}: invalid policy name: use 1 to 80 of A-Z a-z 0-9 - _"),
            ));
        }
        let mut identities = Vec::new();
        for id in section.identities.unwrap_or_default() {
            let id = id.0.trim().to_ascii_lowercase();
            if id.is_empty() {
                // `- ${APP_IDENTITY}` with an empty variable: nothing to assign.
                continue;
            }
            if !crate::names::valid_name(&id) {
                return Err((
                    line_of(text, &id),
                    format!("policy.{name}.identities: invalid identity '{id}'"),
                ));
            }
            if admin.as_deref() == Some(id.as_str()) {
                return Err((
                    line_of(text, &id),
                    format!(
                        "policy.{name}.identities: '{id}' is the admin identity, which needs no policy"
                    ),
                ));
            }
            if let Some(other) = assigned.insert(id.clone(), name.clone()) {
                return Err((
                    line_of(text, &id),
                    format!(
                        "policy.{name}.identities: identity '{id}' is already assigned to policy '{other}'; an identity has at most one policy"
                    ),
                ));
            }
            identities.push(id);
        }
        policies.insert(
            name,
            PolicyConfig {
                allow: section.allow.unwrap_or_default(),
                deny: section.deny.unwrap_or_default(),
                identities,
            },
        );
    }

    let mut cache = CacheExpiry::default();
    if let Some(expiry) = file.cache.and_then(|c| c.expiry) {
        if let Some(v) = expiry.any {
            cache.any = v.0.0;
        }
        if let Some(v) = expiry.unused {
            cache.unused = v.0.0;
        }
        if let Some(v) = expiry.offline {
            cache.offline = v.0.0;
        }
    }

    let log = file
        .log
        .map(|l| LogConfig {
            error: l.error.map(|v| v.0.0),
            audit: l.audit.map(|v| v.0.0),
        })
        .unwrap_or_default();

    let mut api = BTreeMap::new();
    for (route_path, section) in file.api.unwrap_or_default() {
        if crate::routes::find_exact(&route_path).is_none() {
            return Err((
                line_of(text, &format!("{route_path}:")),
                format!(
                    "api.{route_path}: no such API path; known paths: {}",
                    crate::routes::ROUTES
                        .iter()
                        .map(|r| r.path)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let timeout = section.timeout.map(|t| t.0.0).filter(|t| !t.is_zero());
        api.insert(
            route_path,
            RouteOverride {
                skip_auth: section.skip_auth.is_some_and(|s| s.0),
                timeout,
            },
        );
    }

    let mut keys = Vec::new();
    for key in file.keys.unwrap_or_default() {
        let name = key.name.0.trim().to_string();
        if !crate::names::valid_name(&name) {
            return Err((
                line_of(text, &name),
                format!("keys: invalid key name '{name}'"),
            ));
        }
        if keys.contains(&name) {
            return Err((
                line_of(text, &name),
                format!("keys: key '{name}' is listed twice"),
            ));
        }
        keys.push(name);
    }

    let keystore = keystore_config(file.keystore, text, &relative)?;

    Ok(Config {
        path: Some(path.to_path_buf()),
        address: file
            .address
            .map(|a| a.0.trim().to_string())
            .filter(|a| !a.is_empty()),
        admin,
        tls_key,
        tls_cert,
        tls_password: tls.password.map(|p| p.0).filter(|p| !p.is_empty()),
        tls_auth: tls.auth.map(|a| a.0.0),
        tls_ca,
        policies,
        cache,
        log,
        api,
        keys,
        keystore,
        oldest_reader: oldest_reader(file.compat),
    })
}

fn keystore_config(
    section: Option<KeyStoreSection>,
    text: &str,
    relative: &dyn Fn(&str) -> PathBuf,
) -> Result<KeyStoreConfig, Invalid> {
    let Some(section) = section else {
        return Err((
            None,
            "keystore: no keystore specified: add 'keystore.fs.path' or 'keystore.gemalto.keysecure'".into(),
        ));
    };
    let line = top_level_line(text, "keystore");
    let mut found: Vec<KeyStoreConfig> = Vec::new();
    if let Some(fs) = section.fs {
        if fs.path.0.trim().is_empty() {
            return Err((
                line_of(text, "path:"),
                "keystore.fs.path: empty path".into(),
            ));
        }
        found.push(KeyStoreConfig::Fs {
            path: relative(&fs.path.0),
        });
    }
    for (name, ks) in [
        ("gemalto.keysecure", section.gemalto.map(|g| g.keysecure)),
        ("ciphertrust", section.ciphertrust),
    ] {
        if let Some(ks) = ks {
            found.push(ciphertrust_settings(name, ks, text, relative)?);
        }
    }
    match found.len() {
        0 => Err((
            line,
            "keystore: no keystore specified: add 'fs' or 'gemalto.keysecure'".into(),
        )),
        1 => Ok(found.remove(0)),
        _ => Err((
            line,
            "keystore: more than one keystore specified: keep exactly one".into(),
        )),
    }
}

fn ciphertrust_settings(
    name: &str,
    ks: KeySecureSection,
    text: &str,
    relative: &dyn Fn(&str) -> PathBuf,
) -> Result<KeyStoreConfig, Invalid> {
    let endpoint = ks
        .endpoint
        .map(|e| e.0.trim().to_string())
        .unwrap_or_default();
    if endpoint.is_empty() {
        return Err((
            line_of(text, "endpoint:"),
            format!(
                "keystore.{name}.endpoint: no endpoint: set the CipherTrust Manager URL, e.g. https://ctm.example.com"
            ),
        ));
    }
    if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
        return Err((
            line_of(text, "endpoint:"),
            format!(
                "keystore.{name}.endpoint: '{endpoint}' is not a URL: write it as https://host[:port]"
            ),
        ));
    }
    let credentials = ks.credentials.unwrap_or_default();
    let token = credentials
        .token
        .map(|t| t.0.trim().to_string())
        .unwrap_or_default();
    if token.is_empty() {
        return Err((
            line_of(text, "token:"),
            format!(
                "keystore.{name}.credentials.token: no refresh token: create one with 'ksctl tokens create --issue-rt'"
            ),
        ));
    }
    let resident = match ks.master_keys.as_ref().map(|m| m.0.trim()) {
        None | Some("" | "exported") => false,
        Some("resident") => true,
        Some(other) => {
            return Err((
                line_of(text, "master_keys:"),
                format!(
                    "keystore.{name}.master_keys: '{other}' is not a choice: write 'exported' (master keys are CipherTrust secrets kes reads, the default) or 'resident' (master keys never leave CipherTrust)"
                ),
            ));
        }
    };
    let tls = ks.tls.unwrap_or_default();
    Ok(KeyStoreConfig::CipherTrust(CipherTrustSettings {
        resident,
        endpoint,
        token,
        domain: credentials
            .domain
            .map(|d| d.0.trim().to_string())
            .unwrap_or_default(),
        retry: credentials
            .retry
            .map(|r| r.0.0)
            .filter(|r| !r.is_zero())
            .unwrap_or(Duration::from_secs(5)),
        ca: tls
            .ca
            .filter(|c| !c.0.trim().is_empty())
            .map(|c| relative(&c.0)),
        insecure_skip_verify: tls.insecure_skip_verify.is_some_and(|v| v.0),
    }))
}
