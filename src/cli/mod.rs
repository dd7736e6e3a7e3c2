//! The `kes` command-line tool: dispatch of every command of both CLI generations.
//!
//! Exit codes (cli.md §1): 0 success; 1 for every error (`Error: <message>` on stderr) and
//! for Ctrl-C during a request; 2 after printing usage for `-h/--help` or for a command
//! group called without a subcommand (`kes`, `kes key`, …).

use std::ffi::OsString;

pub mod args;
pub mod client;
pub mod doc;
mod exit;
pub mod identity;
pub mod key;
pub mod key_rotate;
pub mod keystore;
pub mod log;
pub mod ls;
pub mod metric;
pub mod migrate;
pub mod output;
pub mod policy;
pub mod progress;
pub mod server_cert;
pub mod status;
pub mod survey;

// What every command shares, named here for the commands' `use super::…` lines.
pub(crate) use args::subcommand;
pub(crate) use client::path_segment;
pub use exit::{Exit, Outcome};

const USAGE: &str = "Usage:
    kes [options] <command>

Commands:
    server                   Start a KES server.

    ls                       List keys, policies and identities.
    key                      Manage cryptographic keys.
    policy                   Manage KES policies.
    identity                 Manage KES identities.

    log                      Print error and audit log events.
    status                   Print server status.
    metric                   Print server metrics.

    keystore                 Check that a keystore answers as kes needs (run it first).
    migrate                  Copy keys from one keystore to another.
    survey                   Count a keystore's keys by the Go KES releases that read them.
    update                   Update the KES binary (not supported: use your package manager).
    tool                     Commands of older releases: 'kes tool identity new|of'.
    completion               Print the shell completion script for bash, zsh or fish.

Options:
    -v, --version            Print version information.
    -h, --help               Print command line options.

Examples:
    $ kes identity new --key client.key --cert client.crt my-app
    $ export KES_SERVER=127.0.0.1:7373 KES_API_KEY=kes:v1:...
    $ kes key create my-key
";

/// Runs the `kes` command line `args` (including the program name) and returns the
/// process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut rest: Vec<OsString> = args.into_iter().skip(1).collect();
    if rest.first().is_some_and(|a| a == "server") {
        rest.remove(0);
        return run_server(rest);
    }
    // `kes migrate` handles Ctrl-C itself: it finishes the copies under way; so does
    // `kes keystore check`: it cleans up what it made first.
    let migrate = |a: &OsString| a == "migrate";
    let handles_interrupt = rest.first().is_some_and(|a| migrate(a) || a == "keystore")
        || (rest.first().is_some_and(|a| a == "tool") && rest.get(1).is_some_and(migrate));
    if !handles_interrupt
        && rest
            .first()
            .is_some_and(|a| !a.to_string_lossy().starts_with('-'))
    {
        exit_on_interrupt();
    }
    exit_code(dispatch(rest))
}

/// Prints what an outcome needs printed and returns its exit code.
pub fn exit_code(outcome: Outcome) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(Exit::Help(usage)) => {
            eprint!("{usage}");
            2
        }
        Err(Exit::Error(message)) => {
            let paint = output::Paint {
                enabled: output::stderr_is_terminal() && !output::no_color_requested(),
            };
            eprintln!("{} {message}", paint.red("Error:"));
            1
        }
        Err(Exit::Silent(code)) => code,
    }
}

/// `kes server …`: the server's own entry point.
fn run_server(args: Vec<OsString>) -> i32 {
    crate::server::run::main(args)
}

/// Dispatches `args` (after the program name).
pub fn dispatch(args: Vec<OsString>) -> Outcome {
    let Some(command) = args.first() else {
        return Err(Exit::Help(USAGE));
    };
    let command = command.to_string_lossy().into_owned();
    let rest = args[1..].to_vec();
    match command.as_str() {
        "ls" => ls::run(rest),
        "key" => key::run(rest),
        "policy" => policy::run(rest),
        "identity" => identity::run(rest),
        "log" => log::run(rest),
        "status" => status::run(rest),
        "metric" => metric::run(rest),
        "tool" => run_tool(rest),
        "keystore" => keystore::run(rest),
        "migrate" => migrate::run(rest),
        "survey" => survey::run(rest),
        "completion" => doc::completion::run(rest, dispatch),
        // Not in the usage: the packages install the pages ('man kes').
        "man" => doc::man::run(rest, dispatch),
        "update" => Err(Exit::Error(
            "'kes update' is not supported: install new releases with your package manager".into(),
        )),
        "init" | "enclave" | "secret" => Err(Exit::Error(format!(
            "'kes {command}' belongs to the stateful server of the 2023 releases, which this kes \
             does not implement. See 'kes --help'"
        ))),
        "-v" | "--version" => output::print(&version_text()),
        "-h" | "--help" => Err(Exit::Help(USAGE)),
        "--auto-completion" => Err(Exit::Error(
            "'kes --auto-completion' is not supported: 'kes completion bash|zsh|fish' prints \
             the completion script (the packages install them)"
                .into(),
        )),
        flag if flag.starts_with('-') => Err(Exit::Error(format!(
            "unknown flag: {flag}. See 'kes --help'"
        ))),
        other => Err(Exit::Error(format!(
            "{other:?} is not a kes command. See 'kes --help'"
        ))),
    }
}

fn version_text() -> String {
    let runtime = format!("rust {}/{}", std::env::consts::OS, std::env::consts::ARCH);
    let lines = [
        ("Version", env!("CARGO_PKG_VERSION").to_owned(), ""),
        ("Runtime", runtime, ""),
        // The build's target triple and commit (build.rs).
        ("Target", env!("KES_BUILD_TARGET").to_owned(), ""),
        ("Commit", env!("KES_BUILD_COMMIT").to_owned(), ""),
        (
            "License",
            "AGPLv3".to_owned(),
            "https://www.gnu.org/licenses/agpl-3.0.html",
        ),
    ];
    let mut text = String::new();
    for (label, value, note) in lines {
        let line = format!("{label:<10} {value:<22} {note}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

const TOOL_USAGE: &str = "Usage:
    kes tool <command>

Commands:
    identity                 Identity tools of the older releases: 'new' and 'of'.
    migrate                  Copy keys from one keystore to another (as 'kes migrate').

Options:
    -h, --help               Print command line options.

Examples:
    $ kes tool identity new --key=app.key --cert=app.cert app
    $ kes tool identity of app.cert
";

const TOOL_IDENTITY_USAGE: &str = "Usage:
    kes tool identity <command>

Commands:
    new                      Create a private key and a self-signed certificate.
    of                       Compute the identity of a certificate.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes tool identity new --server --key server.key --cert server.cert --ip \"127.0.0.1\" --dns localhost
    $ kes tool identity of app.cert
";

/// `kes tool …`: the command group of releases v0.13 … v0.18.
fn run_tool(args: Vec<OsString>) -> Outcome {
    let Some(sub) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        return Err(Exit::Help(TOOL_USAGE));
    };
    let rest = args[1..].to_vec();
    match sub.as_str() {
        "identity" => {
            let Some(cmd) = rest.first().map(|a| a.to_string_lossy().into_owned()) else {
                return Err(Exit::Help(TOOL_IDENTITY_USAGE));
            };
            let rest = rest[1..].to_vec();
            match cmd.as_str() {
                "new" => identity::tool_new(rest),
                "of" => identity::tool_of(rest),
                "-h" | "--help" => Err(Exit::Help(TOOL_IDENTITY_USAGE)),
                other => Err(Exit::Error(format!(
                    "{other:?} is not a kes tool identity command. See 'kes tool identity --help'"
                ))),
            }
        }
        "migrate" => migrate::run(rest),
        "-h" | "--help" => Err(Exit::Help(TOOL_USAGE)),
        other => Err(Exit::Error(format!(
            "{other:?} is not a kes tool command. See 'kes tool --help'"
        ))),
    }
}

/// Ctrl-C (or SIGTERM) during a command ends it with exit code 1 and no message.
fn exit_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                if output::stdout_is_terminal() {
                    // The metric dashboard hides the cursor; show it again.
                    print!("\x1b[?25h");
                }
                std::process::exit(1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn groups_without_subcommand_print_usage() {
        assert_eq!(dispatch(os(&[])), Err(Exit::Help(USAGE)));
        assert!(matches!(dispatch(os(&["key"])), Err(Exit::Help(_))));
        assert!(matches!(dispatch(os(&["policy"])), Err(Exit::Help(_))));
        assert!(matches!(dispatch(os(&["tool"])), Err(Exit::Help(_))));
        assert!(matches!(
            dispatch(os(&["tool", "identity"])),
            Err(Exit::Help(_))
        ));
        assert!(matches!(dispatch(os(&["--help"])), Err(Exit::Help(_))));
    }

    #[test]
    fn unknown_commands_are_errors() {
        assert_eq!(
            dispatch(os(&["frobnicate"])),
            Err(Exit::Error(
                "\"frobnicate\" is not a kes command. See 'kes --help'".into()
            ))
        );
        assert!(matches!(
            dispatch(os(&["key", "nope"])),
            Err(Exit::Error(_))
        ));
        assert!(matches!(dispatch(os(&["migrate"])), Err(Exit::Error(_))));
        assert!(matches!(dispatch(os(&["survey"])), Err(Exit::Error(_))));
    }

    #[test]
    fn usage_lists_every_command() {
        for command in [
            "server",
            "ls",
            "key",
            "policy",
            "identity",
            "log",
            "status",
            "metric",
            "migrate",
            "survey",
            "update",
            "tool",
            "completion",
        ] {
            assert!(
                USAGE.contains(&format!("\n    {command} ")),
                "{command} missing from kes --help"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("my-key_1"), "my-key_1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
