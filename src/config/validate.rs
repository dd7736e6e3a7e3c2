//! From a config file to a [`Config`]: every section checked, every error located.

use std::collections::BTreeMap;
use std::path::Path;

use super::file::{
    CompatSection, ConfigError, File, Invalid, line_of, located, parse_yaml, relative_to,
    top_level_line,
};
use super::keystore::keystore_config;
use super::settings::{CacheExpiry, Config, KeyStoreConfig, LogConfig, RouteOverride};
use crate::crypto::OldestReader;
use crate::policy::PolicyConfig;

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
