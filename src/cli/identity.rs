//! `kes identity …` (current generation) and `kes tool identity new|of` (releases
//! v0.13 … v0.18).
//!
//! Where the generations differ:
//! * `identity new` always makes an API key; with `--key/--cert` it also writes a
//!   certificate for that key usable by clients *and* servers (clientAuth + serverAuth),
//!   valid for `--expiry` (default 720h). Without a subject the CN is the identity.
//! * `tool identity new` always writes a key (default `./private.key`) and a certificate
//!   (default `./public.crt`) valid for `-t/--time` (default 720h), for a client, or for a
//!   server with `--server`; the CN is the optional subject. It prints nothing when the
//!   output is not a terminal.
//! * `tool identity of` reads the certificate from a file or standard input and prints
//!   the bare identity when the output is not a terminal.

mod new;
mod of;

use std::ffi::OsString;

use serde_json::Value;

use super::args::{self, COLOR, ENCLAVE, INSECURE, JSON};
use super::client::{Client, Method};
use super::ls::{ListKind, run_group_ls};
use super::output::{self, Paint};
use super::{Exit, Outcome, path_segment, subcommand};
pub use new::tool_new;
use new::{new, print_new_api_key};
pub use of::tool_of;
use of::{of, print_identity_of};

const USAGE: &str = "Usage:
    kes identity <command>
    kes identity [KEY | FILE]

Commands:
    new                      Create a new KES identity.
    of                       Compute a KES identity from an API key or certificate.
    info                     Get information about a KES identity.
    ls                       List KES identities.

Without a command, prints a new API key and its identity; with an API key or a
certificate file, prints its identity; with an Ed25519 private key file, prints
its API key.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes identity
    $ kes identity kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    $ kes identity client.crt
";

/// `kes identity …`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    if let Some((command, rest)) = subcommand(&raw) {
        match command.as_str() {
            "new" => return new(rest),
            "of" => return of(rest),
            "info" => return info(rest),
            "ls" | "list" => return ls(rest, &command),
            "rm" | "assign" | "forget" => {
                return Err(Exit::Error(format!(
                    "'kes identity {command}' changed identities at runtime on older or stateful \
                     servers: here identities are assigned to policies in the server's config file"
                )));
            }
            _ => {}
        }
    }
    let parsed = args::parse("kes identity", USAGE, &[], raw)?;
    match parsed.positionals.as_slice() {
        [] => print_new_api_key(),
        [argument] => print_identity_of(argument),
        _ => Err(Exit::Error(
            "too many arguments. See 'kes identity --help'".into(),
        )),
    }
}

const INFO_USAGE: &str = "Usage:
    kes identity info [options] [<identity>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print identity information in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Without an identity, describes the identity of the client's own credentials.

Examples:
    $ kes identity info
    $ kes identity info 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
";

fn info(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes identity info",
        INFO_USAGE,
        &[INSECURE, JSON, COLOR, ENCLAVE],
        raw,
    )?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes identity info --help'".into(),
        ));
    }
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;
    let path = match parsed.arg(0) {
        Some(identity) => format!("/v1/identity/describe/{}", path_segment(identity)),
        None => "/v1/identity/self/describe".to_owned(),
    };
    let reply = client
        .call(Method::Get, &path, None)
        .map_err(|e| Exit::Error(format!("failed to describe identity: {e}")))?;
    let mut value: Value = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    if value.get("identity").is_none() {
        let identity = parsed.arg(0).unwrap_or(client.identity()).to_owned();
        if let Value::Object(map) = &mut value {
            map.insert("identity".into(), Value::String(identity));
        }
    }
    if parsed.has("json") || !output::stdout_is_terminal() {
        return output::print(&output::json_line(&normalized_description(&value)));
    }
    output::print(&describe_identity_text(&value, paint))
}

/// One JSON shape for an identity description from any server generation:
/// `identity`, `admin` (only when true), `policy` (the name), `allow`/`deny` (rule
/// objects), `created_at`, `created_by`.
fn normalized_description(value: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let text = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(identity) = text("identity") {
        out.insert("identity".into(), identity.into());
    }
    if value.get("admin").and_then(Value::as_bool) == Some(true) {
        out.insert("admin".into(), true.into());
    }
    let policy = match value.get("policy") {
        Some(Value::String(name)) if !name.is_empty() => Some(name.clone()),
        _ => text("policy_name").map(str::to_owned),
    };
    if let Some(policy) = policy {
        out.insert("policy".into(), policy.into());
    }
    let rules_source = match value.get("policy") {
        Some(policy @ Value::Object(_)) => policy,
        _ => value,
    };
    for name in ["allow", "deny"] {
        let rules = rule_list(rules_source.get(name));
        if !rules.is_empty() {
            let object = rules
                .into_iter()
                .map(|r| (r, Value::Object(serde_json::Map::new())))
                .collect();
            out.insert(name.into(), Value::Object(object));
        }
    }
    for name in ["created_at", "created_by"] {
        if let Some(v) = text(name) {
            out.insert(name.into(), v.into());
        }
    }
    Value::Object(out)
}

/// The human description of an identity-describe response (either generation).
fn describe_identity_text(value: &Value, paint: Paint) -> String {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let label = |text: &str| paint.faint(&format!("{text:<11}"));
    let mut text = String::new();
    text.push_str(&format!(
        "{} {}\n",
        label("Identity"),
        paint.blue(&field("identity"))
    ));
    let policy_name = match value.get("policy") {
        Some(Value::String(name)) => name.clone(),
        _ => field("policy_name"),
    };
    if !policy_name.is_empty() {
        text.push_str(&format!(
            "{} {}\n",
            label("Policy"),
            paint.yellow(&policy_name)
        ));
    }
    text.push_str(&format!(
        "{} {}\n",
        label("Created At"),
        output::short_date(&field("created_at"))
    ));
    let admin = value.get("admin").and_then(Value::as_bool).unwrap_or(false);
    text.push_str(&format!(
        "{} {}\n",
        label("Role"),
        if admin { "Admin" } else { "User" }
    ));
    let created_by = field("created_by");
    if !created_by.is_empty() {
        text.push_str(&format!("{} {created_by}\n", label("Created By")));
    }
    // Rules: top-level allow/deny (current) or inside a policy object (2023).
    let rules_source = match value.get("policy") {
        Some(policy @ Value::Object(_)) => policy,
        _ => value,
    };
    for (name, dot) in [("allow", paint.green("·")), ("deny", paint.red("·"))] {
        let rules = rule_list(rules_source.get(name));
        if !rules.is_empty() {
            let title = if name == "allow" { "Allow" } else { "Deny" };
            text.push_str(&format!("{}\n", label(title)));
            for rule in rules {
                text.push_str(&format!("{:<11} {dot} {rule}\n", ""));
            }
        }
    }
    text
}

/// Policy rules given either as an object `{"rule":{}}` (current) or an array (2023).
pub fn rule_list(value: Option<&Value>) -> Vec<String> {
    let mut rules: Vec<String> = match value {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    rules.sort();
    rules
}

const LS_USAGE: &str = "Usage:
    kes identity ls [options] [<prefix>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print identities in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes identity ls
    $ kes identity ls 'b804befd*'
";

fn ls(raw: Vec<OsString>, command: &str) -> Outcome {
    run_group_ls(
        ListKind::Identities,
        &format!("kes identity {command}"),
        LS_USAGE,
        raw,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_normalize_to_one_shape() {
        let current: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","allow":{"/v1/a":{}},"created_at":"t","created_by":""}"#,
        )
        .unwrap();
        assert_eq!(
            normalized_description(&current).to_string(),
            r#"{"allow":{"/v1/a":{}},"created_at":"t","identity":"abc","policy":"p"}"#
        );
        let old: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","policy":{"allow":["/v1/a"],"deny":[]},"created_at":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            normalized_description(&old),
            normalized_description(&current)
        );
        let admin: Value =
            serde_json::from_str(r#"{"identity":"x","admin":true,"created_at":"t"}"#).unwrap();
        assert_eq!(
            normalized_description(&admin).to_string(),
            r#"{"admin":true,"created_at":"t","identity":"x"}"#
        );
    }

    #[test]
    fn describe_text_of_both_generations() {
        let current: Value = serde_json::from_str(
            r#"{"identity":"abc","policy":"minio","allow":{"/v1/key/create/*":{}},"deny":{},"created_at":"2024-01-01T00:00:00Z","created_by":"ad"}"#,
        )
        .unwrap();
        let text = describe_identity_text(&current, Paint { enabled: false });
        assert!(text.contains("Policy      minio"));
        assert!(text.contains("· /v1/key/create/*"));
        let old: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","policy":{"allow":["/v1/status"],"deny":["/v1/key/delete/*"]},"created_at":"2023-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let text = describe_identity_text(&old, Paint { enabled: false });
        assert!(text.contains("Policy      p"));
        assert!(text.contains("· /v1/status"));
        assert!(text.contains("· /v1/key/delete/*"));
    }
}
