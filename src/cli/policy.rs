//! `kes policy info|ls|show`. Policies come from the server's config file; the 2023
//! stateful-server commands `create`, `assign` and `rm` are refused with an explanation.

use std::ffi::OsString;

use serde_json::{Map, Value};

use super::args::{self, COLOR, ENCLAVE, INSECURE, JSON, Parsed};
use super::client::{Client, Method};
use super::identity::rule_list;
use super::ls::{ListKind, run_group_ls};
use super::output::{self, Paint};
use super::{Exit, Outcome, path_segment, subcommand};

const USAGE: &str = "Usage:
    kes policy <command>

Commands:
    info                     Get information about a policy.
    ls                       List policies.
    show                     Display a policy.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes policy ls
    $ kes policy show my-policy
";

/// `kes policy <command>`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let Some((command, rest)) = subcommand(&raw) else {
        return Err(Exit::Help(USAGE));
    };
    match command.as_str() {
        "info" => info(rest),
        "ls" | "list" => ls(rest, &command),
        "show" => show(rest),
        "create" | "assign" | "rm" | "add" | "delete" => Err(Exit::Error(format!(
            "'kes policy {command}' needs the stateful server of the 2023 releases: policies and \
             their identities are defined in the server's config file"
        ))),
        "-h" | "--help" => Err(Exit::Help(USAGE)),
        other => Err(Exit::Error(format!(
            "{other:?} is not a policy command. See 'kes policy --help'"
        ))),
    }
}

fn one_name<'a>(parsed: &'a Parsed, command: &str) -> Result<&'a str, Exit> {
    match parsed.positionals.as_slice() {
        [] => Err(Exit::Error(format!(
            "no policy name specified. See 'kes policy {command} --help'"
        ))),
        [name] => Ok(name),
        _ => Err(Exit::Error(format!(
            "too many arguments. See 'kes policy {command} --help'"
        ))),
    }
}

const INFO_USAGE: &str = "Usage:
    kes policy info [options] <name>

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print policy information in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes policy info my-policy
";

fn info(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes policy info",
        INFO_USAGE,
        &[INSECURE, JSON, COLOR, ENCLAVE],
        raw,
    )?;
    let name = one_name(&parsed, "info")?;
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;
    let reply = client
        .call(
            Method::Get,
            &format!("/v1/policy/describe/{}", path_segment(name)),
            None,
        )
        .map_err(|e| Exit::Error(format!("failed to describe policy '{name}': {e}")))?;
    let mut value: Value = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.entry("name")
            .or_insert_with(|| Value::String(name.to_owned()));
    }
    if parsed.has("json") || !output::stdout_is_terminal() {
        return output::print(&output::json_line(&value));
    }
    let field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let label = |text: &str| paint.faint(&format!("{text:<11}"));
    let mut text = format!("{} {}\n", label("Name"), paint.yellow(name));
    if !field("created_at").is_empty() {
        text.push_str(&format!(
            "{} {}\n",
            label("Date"),
            output::short_date(&field("created_at"))
        ));
    }
    if !field("created_by").is_empty() {
        text.push_str(&format!(
            "{} {}\n",
            label("Created by"),
            field("created_by")
        ));
    }
    output::print(&text)
}

const LS_USAGE: &str = "Usage:
    kes policy ls [options] [<prefix>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print policy names in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes policy ls
    $ kes policy ls 'my-policy*'
";

fn ls(raw: Vec<OsString>, command: &str) -> Outcome {
    run_group_ls(
        ListKind::Policies,
        &format!("kes policy {command}"),
        LS_USAGE,
        raw,
    )
}

const SHOW_USAGE: &str = "Usage:
    kes policy show [options] <name>

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print policy in JSON format.
    -h, --help               Print command line options.

Examples:
    $ kes policy show my-policy
    $ kes policy show --json my-policy
";

/// Policy rules as the current JSON object form `{"rule":{}}`.
fn rules_object(rules: &[String]) -> Value {
    Value::Object(
        rules
            .iter()
            .map(|r| (r.clone(), Value::Object(Map::new())))
            .collect(),
    )
}

fn show(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes policy show",
        SHOW_USAGE,
        &[INSECURE, JSON, ENCLAVE],
        raw,
    )?;
    let name = one_name(&parsed, "show")?;
    let client = Client::for_command(&parsed)?;
    let reply = client
        .call(
            Method::Get,
            &format!("/v1/policy/read/{}", path_segment(name)),
            None,
        )
        .map_err(|e| Exit::Error(format!("failed to show policy '{name}': {e}")))?;
    let value: Value = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    let allow = rule_list(value.get("allow"));
    let deny = rule_list(value.get("deny"));
    let field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };

    if parsed.has("json") || !output::stdout_is_terminal() {
        let mut out = Map::new();
        if !allow.is_empty() {
            out.insert("allow".into(), rules_object(&allow));
        }
        if !deny.is_empty() {
            out.insert("deny".into(), rules_object(&deny));
        }
        for key in ["created_at", "created_by"] {
            if !field(key).is_empty() {
                out.insert(key.into(), Value::String(field(key)));
            }
        }
        let text = if output::stdout_is_terminal() {
            output::json_pretty(&Value::Object(out))
        } else {
            output::json_line(&Value::Object(out))
        };
        return output::print(&text);
    }
    let paint = Paint {
        enabled: !output::no_color_requested(),
    };
    let mut text = String::new();
    if !allow.is_empty() {
        text.push_str(&format!("{}\n", paint.green("Allow:")));
        for rule in &allow {
            text.push_str(&format!("  · {rule}\n"));
        }
    }
    if !deny.is_empty() {
        if !allow.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{}\n", paint.red("Deny:")));
        for rule in &deny {
            text.push_str(&format!("  · {rule}\n"));
        }
    }
    if !field("created_at").is_empty() {
        text.push_str(&format!(
            "\n{} {}\n",
            paint.faint("Created at:"),
            output::short_date(&field("created_at"))
        ));
    }
    let created_by = field("created_by");
    let created_by = if created_by.is_empty() {
        "<unknown>".to_owned()
    } else {
        created_by
    };
    text.push_str(&format!("{} {created_by}\n", paint.faint("Created by:")));
    output::print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(run(os(&[])), Err(Exit::Help(_))));
        assert!(
            matches!(run(os(&["show"])), Err(Exit::Error(m)) if m.starts_with("no policy name"))
        );
        assert!(
            matches!(run(os(&["info", "a", "b"])), Err(Exit::Error(m)) if m.starts_with("too many"))
        );
        assert!(matches!(run(os(&["create", "p"])), Err(Exit::Error(m)) if m.contains("stateful")));
    }

    #[test]
    fn rules_become_objects() {
        let value = rules_object(&["/v1/key/create/*".to_owned()]);
        assert_eq!(value.to_string(), r#"{"/v1/key/create/*":{}}"#);
    }
}
