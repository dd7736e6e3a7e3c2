//! How a command ends: [`Outcome`], and the [`Exit`] of one that does not succeed
//! (`cli::exit_code` turns it into the process's exit code).

/// How a command ends when it does not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Print this usage text on stderr and exit with 2.
    Help(&'static str),
    /// Print `Error: <message>` on stderr and exit with 1.
    Error(String),
    /// Exit with this code without printing anything.
    Silent(i32),
}

/// What a command returns.
pub type Outcome = Result<(), Exit>;
