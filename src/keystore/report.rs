//! What `kes keystore check` found: one row per step, each with a verdict. The checks of
//! each backend write it (`check`, `ciphertrust::check`); the CLI prints it.

use serde::Serialize;

/// What one step found.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The answer has what kes relies on.
    Ok,
    /// A form kes relies on (in the configured mode) failed: kes will not work as it
    /// should with this keystore.
    Fail,
    /// Something is off, or a form kes would rely on in the other mode failed.
    Warn,
    /// What the keystore does where no public source says (kes works either way), or a
    /// step that was skipped.
    Info,
}

/// One step of the check.
#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub step: String,
    /// The keystore call: `POST /api/v1/crypto/encrypt`, or what was done to a directory.
    pub call: String,
    /// The HTTP status of the answer; none when there was no answer or no HTTP.
    pub status: Option<u16>,
    /// The answer's fields kes relies on, as found (`missing: version` when absent).
    pub fields: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// Everything the check found.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub keystore: String,
    pub rows: Vec<Row>,
    /// Ctrl-C stopped the check early (it cleaned up first).
    pub interrupted: bool,
}

impl Report {
    /// A form kes relies on failed, or the check did not finish.
    pub fn failed(&self) -> bool {
        self.interrupted || self.rows.iter().any(|row| row.verdict == Verdict::Fail)
    }
}

impl Row {
    pub fn new(
        step: &str,
        call: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) -> Row {
        Row {
            step: step.to_string(),
            call: call.into(),
            status: None,
            fields: String::new(),
            verdict,
            detail: detail.into(),
        }
    }
}
