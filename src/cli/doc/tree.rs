//! The command tree of the `kes` CLI, found by asking the CLI itself.
//!
//! Starting from `kes --help`, every command listed under `Commands:` is asked for its
//! own `--help` (through `cli::dispatch`, in-process: a `--help` returns its usage
//! before anything is read, written or connected), and so on down. A command added to
//! its group's help therefore appears in the man pages and completions without any
//! other edit; one left out of the help appears nowhere, as for a user.

use std::ffi::OsString;

use super::usage::{Usage, aliases_of};
use crate::cli::args::{self, Flag};
use crate::cli::{Exit, dispatch};

/// One command: `kes` itself, a group such as `kes key`, or a leaf such as
/// `kes key create`.
#[derive(Debug, Clone)]
pub struct Command {
    /// The words after `kes` (empty for `kes` itself).
    pub path: Vec<String>,
    /// Its line in the parent's `Commands:` list (empty for `kes`).
    pub summary: String,
    /// Other names the parent's list gives it (`describe` for `key info`).
    pub aliases: Vec<String>,
    /// Its `--help` text; `None` when it answers `--help` with an error (`kes update`).
    pub help: Option<&'static str>,
    /// The parsed help (empty when there is none).
    pub usage: Usage,
    /// The flag table its parser checked when it answered `--help`; `None` for groups
    /// and for `kes server`, whose parser has no table.
    pub parser_flags: Option<Vec<Flag>>,
    pub children: Vec<Command>,
}

impl Command {
    /// `kes key create`.
    pub fn name(&self) -> String {
        let mut name = String::from("kes");
        for word in &self.path {
            name.push(' ');
            name.push_str(word);
        }
        name
    }

    /// This command and every command below it, parents first.
    pub fn walk(&self) -> Vec<&Command> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.walk());
        }
        out
    }

    /// The subcommand called `word` (or one of its aliases).
    pub fn child(&self, word: &str) -> Option<&Command> {
        self.children.iter().find(|c| {
            c.path.last().is_some_and(|w| w == word) || c.aliases.iter().any(|a| a == word)
        })
    }
}

/// Deeper than any real group (`kes tool identity new` is 3): a guard against a usage
/// text that lists its own command.
const MAX_DEPTH: usize = 4;

/// The whole command tree of this binary.
pub fn cli() -> Command {
    command(Vec::new(), String::new())
}

fn command(path: Vec<String>, summary: String) -> Command {
    let aliases = aliases_of(&summary);
    let (help, parser_flags) = help_of(&path);
    let usage = Usage::parse(help.unwrap_or(""));
    let children = if path.len() < MAX_DEPTH {
        usage
            .commands()
            .map(|entry| {
                let mut child = path.clone();
                child.push(entry.term.clone());
                command(child, entry.text())
            })
            .collect()
    } else {
        Vec::new()
    };
    Command {
        path,
        summary,
        aliases,
        help,
        usage,
        parser_flags,
        children,
    }
}

/// What `kes PATH --help` prints, and the flag table behind it.
fn help_of(path: &[String]) -> (Option<&'static str>, Option<Vec<Flag>>) {
    // `kes server` is dispatched before the client commands (cli::main).
    if path == ["server"] {
        return (Some(crate::server::run::USAGE), None);
    }
    let mut argv: Vec<OsString> = path.iter().map(OsString::from).collect();
    argv.push("--help".into());
    args::take_help_flags();
    match dispatch(argv) {
        Err(Exit::Help(usage)) => (Some(usage), args::take_help_flags()),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_reaches_every_generation() {
        let root = cli();
        assert!(root.help.is_some());
        let names: Vec<String> = root.walk().iter().map(|c| c.name()).collect();
        for expected in [
            "kes server",
            "kes key create",
            "kes key rotate",
            "kes policy show",
            "kes identity new",
            "kes tool identity of",
            "kes tool migrate",
            "kes completion",
        ] {
            assert!(
                names.contains(&expected.to_owned()),
                "{expected} missing: {names:?}"
            );
        }
        let key = root.child("key").unwrap();
        assert_eq!(key.child("describe").unwrap().name(), "kes key info");
        let create = key.child("create").unwrap();
        assert!(
            create
                .parser_flags
                .as_ref()
                .unwrap()
                .iter()
                .any(|f| f.long == "insecure")
        );
        assert!(root.child("update").unwrap().help.is_none());
    }
}
