//! `kes key …`: create, import, info, ls, rm, encrypt, decrypt, dek; the last three in
//! `key/crypto.rs`, `rotate` in `key_rotate`.
//!
//! Both generations are accepted: the current names and the names of releases ≤ v0.18
//! (`list`, `delete`, `derive`, and `create NAME BASE64KEY` for an import), plus
//! `describe` for `info`.

use std::ffi::OsString;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

mod crypto;

use super::args::{self, BASIC_FLAGS, COLOR, ENCLAVE, INSECURE, JSON};
use super::client::{Client, Method};
use super::ls::{ListKind, run_group_ls};
use super::output::{self, Paint};
use super::{Exit, Outcome, path_segment, subcommand};
use crypto::{decrypt, dek, encrypt};

const USAGE: &str = "Usage:
    kes key <command>

Commands:
    create                   Create a new crypto key.
    import                   Import a crypto key.
    info                     Get information about a crypto key (alias: describe).
    ls                       List crypto keys (alias: list).
    rm                       Delete a crypto key (alias: delete).

    encrypt                  Encrypt a message.
    decrypt                  Decrypt an encrypted message.
    dek                      Generate a new data encryption key (alias: derive).
    rotate                   Add a version to a resident key.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes key create my-key
    $ kes key dek my-key
";

/// `kes key <command>`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let Some((command, rest)) = subcommand(&raw) else {
        return Err(Exit::Help(USAGE));
    };
    match command.as_str() {
        "create" => create(rest),
        "import" => import(rest),
        "info" | "describe" => info(rest, &command),
        "ls" | "list" => ls(rest, &command),
        "rm" | "delete" => rm(rest, &command),
        "encrypt" => encrypt(rest),
        "decrypt" => decrypt(rest),
        "dek" | "derive" => dek(rest, &command),
        "rotate" => super::key_rotate::run(rest),
        "-h" | "--help" => Err(Exit::Help(USAGE)),
        other => Err(Exit::Error(format!(
            "{other:?} is not a key command. See 'kes key --help'"
        ))),
    }
}

const CREATE_USAGE: &str = "Usage:
    kes key create [options] <name>...

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Creates one or more new keys. The form of older releases,
'kes key create <name> <base64-key>', imports the given 256-bit key.

Examples:
    $ kes key create my-key
    $ kes key create my-key1 my-key2
    $ kes key create -k my-app-key
";

/// The key bytes of the old `create NAME KEY` form: the second argument is an import
/// when it is standard base64 of 32 bytes that is not also a valid key name.
fn old_style_import_key(args: &[String]) -> Option<Zeroizing<Vec<u8>>> {
    if args.len() != 2 {
        return None;
    }
    let candidate = &args[1];
    let could_be_name = candidate
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if could_be_name {
        return None;
    }
    let bytes = Zeroizing::new(BASE64.decode(candidate).ok()?);
    (bytes.len() == 32).then_some(bytes)
}

fn create(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes key create", CREATE_USAGE, BASIC_FLAGS, raw)?;
    if parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "no key name specified. See 'kes key create --help'".into(),
        ));
    }
    if let Some(key) = old_style_import_key(&parsed.positionals) {
        let client = Client::for_command(&parsed)?;
        return import_key(&client, &parsed.positionals[0], &key);
    }
    let client = Client::for_command(&parsed)?;
    for_each_name(
        &client,
        &parsed.positionals,
        Method::Post,
        "/v1/key/create/",
        "create",
    )
}

/// Sends `method route+NAME` without a body for each name in turn; the first failure
/// ends the command with "failed to VERB key NAME: …".
fn for_each_name(
    client: &Client,
    names: &[String],
    method: Method,
    route: &str,
    verb: &str,
) -> Outcome {
    for name in names {
        client
            .call(method, &format!("{route}{}", path_segment(name)), None)
            .map_err(|e| Exit::Error(format!("failed to {verb} key {name:?}: {e}")))?;
    }
    Ok(())
}

const IMPORT_USAGE: &str = "Usage:
    kes key import [options] <name> <key>

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Imports a 256-bit AES key given in base64.

Examples:
    $ kes key import my-key-2 Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=
";

fn import(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes key import", IMPORT_USAGE, BASIC_FLAGS, raw)?;
    match parsed.positionals.len() {
        0 => {
            return Err(Exit::Error(
                "no key name specified. See 'kes key import --help'".into(),
            ));
        }
        1 => {
            return Err(Exit::Error(
                "no crypto key specified. See 'kes key import --help'".into(),
            ));
        }
        2 => {}
        _ => {
            return Err(Exit::Error(
                "too many arguments. See 'kes key import --help'".into(),
            ));
        }
    }
    let key = Zeroizing::new(BASE64.decode(&parsed.positionals[1]).map_err(|e| {
        Exit::Error(format!(
            "invalid key: {e}. The key must be base64. See 'kes key import --help'"
        ))
    })?);
    let client = Client::for_command(&parsed)?;
    import_key(&client, &parsed.positionals[0], &key)
}

fn import_key(client: &Client, name: &str, key: &[u8]) -> Outcome {
    #[derive(Serialize)]
    struct ImportRequest<'a> {
        key: &'a str,
        cipher: &'a str,
    }
    let encoded = Zeroizing::new(BASE64.encode(key));
    let body = Zeroizing::new(
        serde_json::to_vec(&ImportRequest {
            key: &encoded,
            cipher: "AES256",
        })
        .expect("the request serializes"),
    );
    client
        .call(
            Method::Post,
            &format!("/v1/key/import/{}", path_segment(name)),
            Some(&body),
        )
        .map_err(|e| Exit::Error(format!("failed to import {name:?}: {e}")))?;
    Ok(())
}

const INFO_USAGE: &str = "Usage:
    kes key info [options] <name>

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print key information in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes key info my-key
    $ kes key info --json my-key
";

/// The key description of `kes key info --json` (the Go SDK's `KeyInfo`).
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// Absent for resident keys (CipherTrust keeps their dates): then not printed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// Resident keys (kes with CipherTrust `master_keys: resident`) only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resident: bool,
    /// The newest version of a resident key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

fn info(raw: Vec<OsString>, command: &str) -> Outcome {
    let name_of_command = format!("kes key {command}");
    let parsed = args::parse(
        &name_of_command,
        INFO_USAGE,
        &[INSECURE, JSON, COLOR, ENCLAVE],
        raw,
    )?;
    let name = match parsed.positionals.as_slice() {
        [] => {
            return Err(Exit::Error(format!(
                "no key name specified. See '{name_of_command} --help'"
            )));
        }
        [name] => name,
        _ => {
            return Err(Exit::Error(format!(
                "too many arguments. See '{name_of_command} --help'"
            )));
        }
    };
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;
    let reply = client
        .call(
            Method::Get,
            &format!("/v1/key/describe/{}", path_segment(name)),
            None,
        )
        .map_err(|e| Exit::Error(format!("failed to describe key {name:?}: {e}")))?;
    let mut info: KeyInfo = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    if info.name.is_empty() {
        info.name = name.clone();
    }
    if parsed.has("json") || !output::stdout_is_terminal() {
        return output::print(&output::json_line(&info));
    }
    let label = |text: &str| paint.faint(&format!("{text:<11}"));
    if let Some(version) = info.version {
        return output::print(&format!(
            "{} {}\n{} {}\n{} {} (resident in the keystore)\n",
            label("Name"),
            paint.bold(&info.name),
            label("Algorithm"),
            info.algorithm,
            label("Version"),
            version,
        ));
    }
    output::print(&format!(
        "{} {}\n{} {}\n{} {}\n{} {}\n",
        label("Name"),
        paint.bold(&info.name),
        label("Algorithm"),
        info.algorithm,
        label("Date"),
        output::short_date(&info.created_at),
        label("Owner"),
        info.created_by
    ))
}

const LS_USAGE: &str = "Usage:
    kes key ls [options] [<prefix>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print keys in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes key ls
    $ kes key ls 'my-key*'
";

fn ls(raw: Vec<OsString>, command: &str) -> Outcome {
    run_group_ls(ListKind::Keys, &format!("kes key {command}"), LS_USAGE, raw)
}

const RM_USAGE: &str = "Usage:
    kes key rm [options] <name>...

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Deletes keys. Whatever was encrypted with a deleted key cannot be decrypted anymore.

Examples:
    $ kes key rm my-key
    $ kes key rm my-key1 my-key2
";

fn rm(raw: Vec<OsString>, command: &str) -> Outcome {
    let name_of_command = format!("kes key {command}");
    let parsed = args::parse(&name_of_command, RM_USAGE, BASIC_FLAGS, raw)?;
    if parsed.positionals.is_empty() {
        return Err(Exit::Error(format!(
            "no key name specified. See '{name_of_command} --help'"
        )));
    }
    let client = Client::for_command(&parsed)?;
    for_each_name(
        &client,
        &parsed.positionals,
        Method::Delete,
        "/v1/key/delete/",
        "remove",
    )
}

#[cfg(test)]
mod tests {
    use super::crypto::{DECRYPT_USAGE, DEK_USAGE};
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn old_create_with_key_is_an_import() {
        let key = old_style_import_key(&strings(&[
            "my-key-2",
            "Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=",
        ]));
        assert_eq!(key.unwrap().len(), 32);
        assert!(old_style_import_key(&strings(&["key1", "key2"])).is_none());
        assert!(old_style_import_key(&strings(&["key1"])).is_none());
        assert!(old_style_import_key(&strings(&["a", "b", "c"])).is_none());
    }

    #[test]
    fn tutorial_command_lines_parse() {
        // kes key create -k my-app-key
        let p = args::parse(
            "kes key create",
            CREATE_USAGE,
            BASIC_FLAGS,
            os(&["-k", "my-app-key"]),
        )
        .unwrap();
        assert!(p.has("insecure"));
        assert_eq!(p.positionals, ["my-app-key"]);
        // kes key derive -k my-app-key
        let p = args::parse(
            "kes key derive",
            DEK_USAGE,
            BASIC_FLAGS,
            os(&["-k", "my-app-key"]),
        )
        .unwrap();
        assert!(p.has("insecure"));
        assert_eq!(p.positionals, ["my-app-key"]);
        // kes key decrypt -k my-app-key <ciphertext>
        let p = args::parse(
            "kes key decrypt",
            DECRYPT_USAGE,
            BASIC_FLAGS,
            os(&["-k", "my-app-key", "AAAA"]),
        )
        .unwrap();
        assert!(p.has("insecure"));
        assert_eq!(p.positionals, ["my-app-key", "AAAA"]);
        // flags after positionals
        let p = args::parse(
            "kes key create",
            CREATE_USAGE,
            BASIC_FLAGS,
            os(&["my-app-key", "--insecure"]),
        )
        .unwrap();
        assert!(p.has("insecure"));
    }

    #[test]
    fn usage_errors_before_any_connection() {
        assert!(
            matches!(run(os(&["create"])), Err(Exit::Error(m)) if m.starts_with("no key name"))
        );
        assert!(
            matches!(run(os(&["import", "k"])), Err(Exit::Error(m)) if m.starts_with("no crypto key"))
        );
        assert!(
            matches!(run(os(&["import", "k", "%%%"])), Err(Exit::Error(m)) if m.starts_with("invalid key"))
        );
        assert!(
            matches!(run(os(&["decrypt", "k"])), Err(Exit::Error(m)) if m.starts_with("no ciphertext"))
        );
        assert!(
            matches!(run(os(&["decrypt", "k", "!!"])), Err(Exit::Error(m)) if m.starts_with("invalid ciphertext"))
        );
        assert!(
            matches!(run(os(&["encrypt", "k"])), Err(Exit::Error(m)) if m.starts_with("no message"))
        );
        assert!(
            matches!(run(os(&["dek", "k", "c", "d"])), Err(Exit::Error(m)) if m.starts_with("too many"))
        );
        assert!(matches!(
            run(os(&["derive", "--help"])),
            Err(Exit::Help(DEK_USAGE))
        ));
        assert!(matches!(
            run(os(&["describe", "-h"])),
            Err(Exit::Help(INFO_USAGE))
        ));
    }

    #[test]
    fn key_info_json_shape() {
        let info: KeyInfo = serde_json::from_str(
            r#"{"name":"k","algorithm":"AES256","created_at":"2024-01-01T00:00:00Z","created_by":"ab"}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"name":"k","algorithm":"AES256","created_at":"2024-01-01T00:00:00Z","created_by":"ab"}"#
        );
        // A resident key's answer has no date: none is printed, not an empty one.
        let resident: KeyInfo = serde_json::from_str(
            r#"{"name":"r","algorithm":"AES256-GCM_SHA256","resident":true,"version":2}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&resident).unwrap(),
            r#"{"name":"r","algorithm":"AES256-GCM_SHA256","resident":true,"version":2}"#
        );
    }
}
