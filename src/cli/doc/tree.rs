//! The command tree of the `kes` CLI, found by asking the CLI itself.
//!
//! Starting from `kes --help`, every command listed under `Commands:` is asked for its
//! own `--help` (through the CLI's dispatcher, in-process: a `--help` returns its usage
//! before anything is read, written or connected), and so on down. A command added to
//! its group's help therefore appears in the man pages and completions without any
//! other edit; one left out of the help appears nowhere, as for a user.

use std::ffi::OsString;

use super::usage::{Usage, aliases_of};
use crate::cli::args::{self, Flag};
use crate::cli::{Exit, Outcome};

/// The CLI's dispatcher (`cli::dispatch`), which the tree asks for each command's help.
/// It is passed in rather than imported: the dispatcher runs `kes completion` and
/// `kes man`, which read this tree, so an import would close a circle of files.
pub type Dispatch = fn(Vec<OsString>) -> Outcome;

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
pub fn cli(dispatch: Dispatch) -> Command {
    command(dispatch, Vec::new(), String::new())
}

fn command(dispatch: Dispatch, path: Vec<String>, summary: String) -> Command {
    let aliases = aliases_of(&summary);
    let (help, parser_flags) = help_of(dispatch, &path);
    let usage = Usage::parse(help.unwrap_or(""));
    let children = if path.len() < MAX_DEPTH {
        usage
            .commands()
            .map(|entry| {
                let mut child = path.clone();
                child.push(entry.term.clone());
                command(dispatch, child, entry.text())
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
fn help_of(dispatch: Dispatch, path: &[String]) -> (Option<&'static str>, Option<Vec<Flag>>) {
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
