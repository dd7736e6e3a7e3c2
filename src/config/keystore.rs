//! The `keystore:` section: exactly one of `fs` and `gemalto.keysecure` (alias
//! `ciphertrust`), checked field by field.

use std::path::PathBuf;
use std::time::Duration;

use super::file::{
    IntermediateKeySection, Invalid, KeySecureSection, KeyStoreSection, line_of, top_level_line,
};
use super::settings::{CipherTrustSettings, IntermediateKeySettings, KeyStoreConfig};

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
    let intermediate_key = match ks.intermediate_key {
        None => None,
        Some(_) if !resident => {
            return Err((
                line_of(text, "intermediate_key:"),
                format!(
                    "keystore.{name}.intermediate_key: intermediate keys wrap resident keys only: set master_keys: resident, or remove intermediate_key"
                ),
            ));
        }
        Some(section) => Some(intermediate_key(name, section, text)?),
    };
    let tls = ks.tls.unwrap_or_default();
    Ok(KeyStoreConfig::CipherTrust(CipherTrustSettings {
        resident,
        intermediate_key,
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

/// `intermediate_key: {ttl, max_uses}`, each within its bounds.
fn intermediate_key(
    name: &str,
    section: IntermediateKeySection,
    text: &str,
) -> Result<IntermediateKeySettings, Invalid> {
    let ttl = section
        .ttl
        .map_or(IntermediateKeySettings::DEFAULT_TTL, |t| t.0.0);
    if ttl.is_zero() || ttl > IntermediateKeySettings::MAX_TTL {
        return Err((
            line_of(text, "ttl:"),
            format!(
                "keystore.{name}.intermediate_key.ttl: out of range: write a duration above 0 and at most 24h (a key disabled in CipherTrust keeps working for up to this long), e.g. 5m"
            ),
        ));
    }
    let max_uses = section
        .max_uses
        .map_or(IntermediateKeySettings::DEFAULT_MAX_USES, |m| m.0);
    if max_uses == 0 || max_uses > IntermediateKeySettings::MAX_USES {
        return Err((
            line_of(text, "max_uses:"),
            format!(
                "keystore.{name}.intermediate_key.max_uses: {max_uses} is out of range: write 1 to 4294967296 (AES-GCM with random nonces allows 2^32 data keys per key), e.g. 1000000"
            ),
        ));
    }
    Ok(IntermediateKeySettings { ttl, max_uses })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::settings::{Config, IntermediateKeySettings, KeyStoreConfig};

    const HEAD: &str = "address: 0.0.0.0:7373\nadmin:\n  identity: disabled\ntls:\n  key: k\n  cert: c\nkeystore:\n  ciphertrust:\n    endpoint: https://ctm\n    credentials:\n      token: t\n";

    fn parse(tail: &str) -> Result<Option<IntermediateKeySettings>, String> {
        let config =
            Config::parse(&format!("{HEAD}{tail}"), Path::new("kes.yml")).map_err(|e| e.0)?;
        match config.keystore {
            KeyStoreConfig::CipherTrust(settings) => Ok(settings.intermediate_key),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn intermediate_keys_are_off_unless_configured_and_take_defaults() {
        assert_eq!(parse("    master_keys: resident\n"), Ok(None));
        let defaults = IntermediateKeySettings {
            ttl: Duration::from_secs(300),
            max_uses: 1_000_000,
        };
        assert_eq!(
            parse("    master_keys: resident\n    intermediate_key: {}\n"),
            Ok(Some(defaults))
        );
        assert_eq!(
            parse(
                "    master_keys: resident\n    intermediate_key:\n      ttl: 90s\n      max_uses: 500\n"
            ),
            Ok(Some(IntermediateKeySettings {
                ttl: Duration::from_secs(90),
                max_uses: 500
            }))
        );
    }

    #[test]
    fn bad_intermediate_key_settings_name_file_line_and_field() {
        let cases = [
            (
                "    intermediate_key:\n      ttl: 5m\n",
                "kes.yml:12: keystore.ciphertrust.intermediate_key: intermediate keys wrap resident keys only",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      ttl: 0s\n",
                "kes.yml:14: keystore.ciphertrust.intermediate_key.ttl: out of range",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      ttl: 25h\n",
                "kes.yml:14: keystore.ciphertrust.intermediate_key.ttl: out of range",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      max_uses: 0\n",
                "kes.yml:14: keystore.ciphertrust.intermediate_key.max_uses: 0 is out of range",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      max_uses: 4294967297\n",
                "kes.yml:14: keystore.ciphertrust.intermediate_key.max_uses: 4294967297 is out of range",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      ttl: soon\n",
                "kes.yml:14",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      max_uses: -3\n",
                "kes.yml:14",
            ),
            (
                "    master_keys: resident\n    intermediate_key:\n      lifetime: 5m\n",
                "kes.yml:14",
            ),
        ];
        for (tail, expected) in cases {
            let err = parse(tail).expect_err(tail);
            assert!(err.starts_with(expected), "{tail}: {err}");
        }
    }
}
