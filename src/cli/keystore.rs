//! `kes keystore check`: does this keystore answer every call kes makes in the form kes
//! relies on? Run with the server's own config before the first start (README, "Run it
//! for real"); see `crate::keystore::check`.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::args;
use super::{Exit, Outcome, output, subcommand};
use crate::keystore::check;
use crate::keystore::report::{Report, Verdict};

const USAGE: &str = "Usage:
    kes keystore <command>

Commands:
    check                    Check that the keystore answers every call as kes needs.

Options:
    -h, --help               Print command line options.
";

const CHECK_USAGE: &str = "Usage:
    kes keystore check --config FILE [options]

Makes every call kes makes to the keystore configured in FILE (a kes server config;
only its 'keystore:' section is read), the way kes makes it, and prints one row per
step: the call, the answer's status, the answer fields kes relies on, and a verdict.

With CipherTrust Manager it uses throw-away names (kes-check-<random>-secret and
-key; never an existing key): it gets an API token, lists, creates a secret and a
resident key, encrypts, rotates, encrypts again, decrypts each data key by version id
and by name + version, tampers a tag, creates duplicates, looks the secret's name up
among the keys and deletes until all is gone. What it made is deleted again, also
after a failure or Ctrl-C. With an fs keystore it checks the directory: owner, mode,
an atomic rename, free space. No key material is printed.

Exit status: 0 when every form kes relies on works; 1 when one fails (FAIL rows), the
check was interrupted, or the config cannot be read.

Options:
    -c, --config FILE  Server config file naming the keystore.
    --json             Print one JSON object.
    -h, --help         Show this help.

Examples:
    $ kes keystore check --config /etc/kes/config.yml
    $ sudo -u kes kes keystore check -c /etc/kes/config.yml --json
";

pub fn run(raw: Vec<OsString>) -> Outcome {
    let Some((command, rest)) = subcommand(&raw) else {
        return Err(Exit::Help(USAGE));
    };
    match command.as_str() {
        "check" => run_check(rest),
        "-h" | "--help" => Err(Exit::Help(USAGE)),
        other => Err(Exit::Error(format!(
            "{other:?} is not a keystore command. See 'kes keystore --help'"
        ))),
    }
}

fn run_check(raw: Vec<OsString>) -> Outcome {
    let flags = [args::option("config", Some('c')), args::JSON];
    let parsed = args::parse("kes keystore check", CHECK_USAGE, &flags, raw)?;
    let Some(config) = parsed.value("config") else {
        return Err(Exit::Error(
            "--config is required. See 'kes keystore check --help'".into(),
        ));
    };
    if !parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "too many arguments. See 'kes keystore check --help'".into(),
        ));
    }
    let (keystore, _) =
        crate::config::load_keystore(Path::new(config)).map_err(|e| Exit::Error(e.to_string()))?;
    let stop = interruptible();
    let report = check::run(&keystore, &stop);
    if parsed.has("json") {
        output::print(&format!("{}\n", output::json_line(&report)))?;
    } else {
        output::print(&render(&report))?;
    }
    if report.interrupted {
        return Err(Exit::Error(
            "the check was interrupted; what it made was deleted".into(),
        ));
    }
    let failed = report
        .rows
        .iter()
        .filter(|row| row.verdict == Verdict::Fail)
        .map(|row| row.step.as_str())
        .collect::<Vec<_>>();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Exit::Error(format!(
            "the keystore does not answer as kes needs: {}",
            failed.join(", ")
        )))
    }
}

/// Ctrl-C (or SIGTERM) sets the returned flag, so the check stops after its current call
/// and cleans up; a second one ends the process at once.
fn interruptible() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop));
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

fn render(report: &Report) -> String {
    let paint = output::Paint {
        enabled: output::stdout_is_terminal() && !output::no_color_requested(),
    };
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|row| {
            let verdict = match row.verdict {
                Verdict::Ok => paint.green("ok"),
                Verdict::Fail => paint.red("FAIL"),
                Verdict::Warn => paint.yellow("warn"),
                Verdict::Info => paint.cyan("info"),
            };
            vec![
                row.step.clone(),
                row.call.clone(),
                row.status.map_or_else(|| "-".into(), |s| s.to_string()),
                row.fields.clone(),
                verdict,
                row.detail.clone(),
            ]
        })
        .collect();
    let mut out = format!("Keystore: {}\n\n", report.keystore);
    out.push_str(&output::table(
        &["STEP", "CALL", "STATUS", "ANSWER FIELDS", "VERDICT", "NOTE"],
        &rows,
        paint,
    ));
    let count = |verdict| report.rows.iter().filter(|r| r.verdict == verdict).count();
    out.push_str(&format!(
        "\n{} ok, {} failed, {} warnings, {} notes{}\n",
        count(Verdict::Ok),
        count(Verdict::Fail),
        count(Verdict::Warn),
        count(Verdict::Info),
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    ));
    out
}
