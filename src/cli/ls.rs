//! `kes ls` and the listing shared by `key ls`, `policy ls` and `identity ls`.

use std::ffi::OsString;

use super::args::{self, COLOR, ENCLAVE, Flag, INSECURE, JSON};
use super::client::{CallError, Client, ConnectOptions, Method};
use super::output::{self, Paint};
use super::{Exit, Outcome, path_segment};

/// What is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Keys,
    Policies,
    Identities,
}

impl ListKind {
    fn route(self) -> &'static str {
        match self {
            ListKind::Keys => "/v1/key/list/",
            ListKind::Policies => "/v1/policy/list/",
            ListKind::Identities => "/v1/identity/list/",
        }
    }

    /// The JSON field of one name in a 2023 NDJSON listing.
    fn ndjson_field(self) -> &'static str {
        match self {
            ListKind::Identities => "identity",
            _ => "name",
        }
    }

    /// The JSON array field of a current listing.
    fn array_field(self) -> &'static str {
        match self {
            ListKind::Identities => "identities",
            _ => "names",
        }
    }

    /// The table header.
    pub fn header(self) -> &'static str {
        match self {
            ListKind::Keys => "Key",
            ListKind::Policies => "Policy",
            ListKind::Identities => "Identity",
        }
    }
}

/// Lists names matching `pattern`: empty or `*` for all, `prefix*` or `prefix` for a
/// prefix. Works with both the current JSON listing and the 2023 NDJSON stream; the
/// result is sorted and free of duplicates.
pub fn list_names(
    client: &Client,
    kind: ListKind,
    pattern: &str,
) -> Result<Vec<String>, CallError> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    // Keys are listed by literal prefix on current servers (a trailing `*` would match
    // nothing there); `*` alone means everything on every generation.
    let requested = if prefix.is_empty() {
        "*".to_owned()
    } else if kind == ListKind::Keys {
        prefix.to_owned()
    } else {
        pattern.to_owned()
    };
    let mut names = Vec::new();
    let mut next = requested.clone();
    for _ in 0..10_000 {
        let reply = client.call(
            Method::Get,
            &format!("{}{}", kind.route(), path_segment(&next)),
            None,
        )?;
        let mut continue_at = String::new();
        if reply.is_ndjson() {
            for line in reply
                .body
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            {
                let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                    CallError::Transport(format!("the server sent an invalid listing line: {e}"))
                })?;
                if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
                    return Err(CallError::Api {
                        status: 500,
                        message: error.to_owned(),
                    });
                }
                if let Some(name) = value.get(kind.ndjson_field()).and_then(|n| n.as_str()) {
                    names.push(name.to_owned());
                }
            }
        } else if !reply.body.is_empty() {
            let value: serde_json::Value = reply.json()?;
            if let Some(array) = value.get(kind.array_field()).and_then(|a| a.as_array()) {
                names.extend(array.iter().filter_map(|n| n.as_str()).map(str::to_owned));
            }
            continue_at = value
                .get("continue_at")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_owned();
        }
        if continue_at.is_empty() || continue_at == next {
            break;
        }
        next = continue_at;
    }
    names.retain(|name| name.starts_with(prefix));
    names.sort();
    names.dedup();
    Ok(names)
}

/// Prints a listing: a JSON array for scripts (`--json` or not a terminal), else a
/// header and one name per line (nothing at all for an empty list).
pub fn print_names(names: &[String], kind: ListKind, json: bool, paint: Paint) -> Outcome {
    if json {
        return output::print(&output::json_line(&names));
    }
    if names.is_empty() {
        return Ok(());
    }
    let mut text = paint.underline(kind.header());
    text.push('\n');
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    output::print(&text)
}

impl ListKind {
    /// The plural used in error messages.
    fn plural(self) -> &'static str {
        match self {
            ListKind::Keys => "keys",
            ListKind::Policies => "policies",
            ListKind::Identities => "identities",
        }
    }
}

/// `kes key ls`, `kes policy ls`, `kes identity ls` (and their `list` aliases):
/// `[-k] [--json] [--color WHEN] [-e ENCLAVE] [PREFIX]`. `command` is the full command
/// name for messages, e.g. "kes key ls".
pub fn run_group_ls(
    kind: ListKind,
    command: &str,
    usage: &'static str,
    raw: Vec<OsString>,
) -> Outcome {
    let parsed = args::parse(command, usage, &[INSECURE, JSON, COLOR, ENCLAVE], raw)?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(format!(
            "too many arguments. See '{command} --help'"
        )));
    }
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;
    let names = list_names(&client, kind, parsed.arg(0).unwrap_or(""))
        .map_err(|e| Exit::Error(format!("failed to list {}: {e}", kind.plural())))?;
    let json = parsed.has("json") || !output::stdout_is_terminal();
    print_names(&names, kind, json, paint)
}

const USAGE: &str = "Usage:
    kes ls [-a KEY] [-k] [--json] [-i] [-p] [-s HOST[:PORT]] [PREFIX]

Options:
    -a, --api-key KEY           API key to authenticate to the KES server.
                                Defaults to $KES_API_KEY.
    -s, --server HOST[:PORT]    Use the server HOST[:PORT] instead of $KES_SERVER.
        --json                  Print output in JSON format.
    -i, --identity              List identities.
    -p, --policy                List policy names.
    -k, --insecure              Skip server certificate verification.
    -h, --help                  Print command line options.

Examples:
    $ kes ls
    $ kes ls -p
    $ kes ls --json my-app
";

const FLAGS: &[Flag] = &[
    INSECURE,
    JSON,
    args::option("api-key", Some('a')),
    args::option("server", Some('s')),
    args::switch("identity", Some('i')),
    args::switch("policy", Some('p')),
];

/// `kes ls [PREFIX]`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes ls", USAGE, FLAGS, raw)?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes ls --help'".into(),
        ));
    }
    if parsed.has("identity") && parsed.has("policy") {
        return Err(Exit::Error(
            "'-p / --policy' and '-i / --identity' must not be used at the same time".into(),
        ));
    }
    let kind = if parsed.has("identity") {
        ListKind::Identities
    } else if parsed.has("policy") {
        ListKind::Policies
    } else {
        ListKind::Keys
    };
    let client = Client::from_env(&ConnectOptions {
        insecure: parsed.has("insecure"),
        server: parsed.value("server").map(str::to_owned),
        api_key: parsed.value("api-key").map(str::to_owned),
    })?;
    let names = list_names(&client, kind, parsed.arg(0).unwrap_or(""))
        .map_err(|e| Exit::Error(e.to_string()))?;
    let json = parsed.has("json") || !output::stdout_is_terminal();
    print_names(
        &names,
        kind,
        json,
        Paint {
            enabled: output::colorize(None)?,
        },
    )
}
