//! `kes key rotate`: adds a version to a resident key (kes with CipherTrust
//! `master_keys: resident`; docs/ciphertrust.md).

use std::ffi::OsString;

use serde::Deserialize;

use super::args::{self, ENCLAVE, INSECURE, JSON};
use super::client::{Client, Method};
use super::output;
use super::{Exit, Outcome, path_segment};

const USAGE: &str = "Usage:
    kes key rotate [options] <name>

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print the new version in JSON format.
    -h, --help               Print command line options.

Adds a version to a resident key. New data keys are encrypted with the newest
version; data keys of every older version still decrypt. Keys that kes holds
(CipherTrust secrets, fs keystores) have no versions and cannot be rotated.

Examples:
    $ kes key rotate my-key
";

#[derive(Deserialize)]
struct Rotated {
    #[serde(default)]
    version: u32,
}

/// `kes key rotate NAME`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes key rotate", USAGE, &[INSECURE, JSON, ENCLAVE], raw)?;
    let name = match parsed.positionals.as_slice() {
        [] => {
            return Err(Exit::Error(
                "no key name specified. See 'kes key rotate --help'".into(),
            ));
        }
        [name] => name,
        _ => {
            return Err(Exit::Error(
                "too many arguments. See 'kes key rotate --help'".into(),
            ));
        }
    };
    let client = Client::for_command(&parsed)?;
    let reply = client
        .call(
            Method::Post,
            &format!("/v1/key/rotate/{}", path_segment(name)),
            None,
        )
        .map_err(|e| Exit::Error(format!("failed to rotate key {name:?}: {e}")))?;
    let rotated: Rotated = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    if parsed.has("json") {
        return output::print(&format!(
            "{}\n",
            serde_json::json!({ "name": name, "version": rotated.version })
        ));
    }
    output::print(&format!(
        "Rotated key {name:?}: version {} is now the newest\n",
        rotated.version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_come_before_any_connection() {
        let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(matches!(run(os(&[])), Err(Exit::Error(m)) if m.starts_with("no key name")));
        assert!(matches!(run(os(&["a", "b"])), Err(Exit::Error(m)) if m.starts_with("too many")));
        assert!(matches!(run(os(&["-h"])), Err(Exit::Help(_))));
    }
}
