//! The `keystore:` section: exactly one of `fs` and `gemalto.keysecure` (alias
//! `ciphertrust`), checked field by field.

use std::path::PathBuf;
use std::time::Duration;

use super::file::{Invalid, KeySecureSection, KeyStoreSection, line_of, top_level_line};
use super::settings::{CipherTrustSettings, KeyStoreConfig};

pub(super) fn keystore_config(
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
