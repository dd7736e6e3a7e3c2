//! The server's YAML config file, in every form the original ever accepted.
//!
//! Three generations load unchanged: the oldest (`root:`, as the CipherTrust tutorial
//! writes it), the 2023 files (`admin.identity`, `--auth` flag) and the last release's
//! (`tls.auth`, `api:` for every route). Unlike the original, an unknown key is an error:
//! a typo such as `dney:` would otherwise silently drop a rule. Every error names the
//! file, the line and the field.
//!
//! The parts: `file` (the YAML as written, and where in it an error is), `validate` (from
//! a file to a [`Config`]), `keystore` (the keystore section), `settings` (the validated
//! config's types), `env` (`${VAR}`, durations, levels).

mod env;
mod file;
mod keystore;
mod settings;
mod validate;

pub use env::{AuthMode, Env, GoDuration, LogLevel, substitute};
pub use file::{
    AdminSection, ApiSection, CacheSection, CompatSection, ConfigError, ExpirySection, File,
    FsSection, GemaltoSection, IntermediateKeySection, KeySection, KeySecureCredentials,
    KeySecureSection, KeySecureTls, KeyStoreSection, LogSection, PolicySection, ProxyHeaderSection,
    ProxySection, TlsSection, Unsupported,
};
pub use settings::{
    CacheExpiry, CipherTrustSettings, Config, IntermediateKeySettings, KeyStoreConfig, LogConfig,
    RouteOverride,
};
pub use validate::load_keystore;
