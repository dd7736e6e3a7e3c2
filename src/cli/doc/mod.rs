//! Documentation made from the CLI itself: man pages and shell completions.
//!
//! `tree` asks every command for its `--help` and `usage` reads those texts back into
//! commands, flags and prose; `man` sets them in roff (with the parts of docs/cli.md
//! and docs/config.md the pages need, through `markdown`), `completion` writes them
//! into the bash, zsh and fish scripts. The help texts stay the only place a command
//! or flag is described.

pub mod completion;
pub mod man;
pub mod markdown;
pub mod roff;
pub mod tree;
pub mod usage;
