//! `kes migrate`: copy keys from one keystore to another (e.g. fs → CipherTrust).
//!
//! Stored values are copied as they are, so keys keep their format, creation time and
//! creator, and every ciphertext made with them still decrypts. The one exception is a
//! target whose config sets `compat.oldest_reader`: a value that generation cannot read
//! is rewritten in the form it reads (formats.md §2), and a key that form cannot hold
//! without losing its cipher stops the migration. Key material is never printed: the
//! output names keys and counts them.
//!
//! The source is listed first, so that progress has a total; with `--merge` the target
//! is listed too and the keys it has are not sent again, so a migration that was
//! interrupted continues where it stopped. `--parallel N` copies N keys at a time: a
//! CipherTrust Manager answers each call in tens of milliseconds, and one call at a time
//! would take hours for a large keystore. The first failure, or Ctrl-C, stops handing out
//! keys; the copies under way finish, and the summary counts every key by outcome.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::args::{self, switch};
use super::progress::{self, Progress};
use super::{Exit, Outcome, output};
use crate::crypto::{KeyVersion, OldestReader, StoredForm};
use crate::keystore::{KeyStore, KeyStoreError, LIST_PAGE, StoredValue};

const USAGE: &str = "Usage:
    kes migrate --from FILE --to FILE [PATTERN] [options]

Copies every key whose name matches PATTERN (a glob, default '*') from the keystore
configured in the --from file to the keystore configured in the --to file. Only the
'keystore:' sections of the two files are read, and 'compat.oldest_reader' of the
--to file: keys that generation cannot read are rewritten in a form it reads.
Key material is never printed.

Progress goes to stderr: a bar on a terminal, a line at every tenth (and every 10 s)
otherwise. The summary at the end counts the keys by outcome. Ctrl-C stops after the
copies under way; run the same command with --merge to copy the rest.

Options:
    --from FILE        Config file of the keystore to copy from.
    --to FILE          Config file of the keystore to copy to.
    --merge            Skip keys that exist in the target already (continues an
                       interrupted migration without copying anything twice).
    -f, --force        Replace keys that exist in the target (delete, then copy).
    --parallel N       Copy N keys at a time, 1 to 256 (default 1). For CipherTrust
                       Manager, 16 to 32 make the most of its latency.
    --dry-run          List what would be copied; change nothing.
    -v, --verbose      Print a line for each key copied, replaced or skipped.
    -q, --quiet        Print only the summary (no progress).
    -h, --help         Show this help.

Examples:
    $ kes migrate --from fs-config.yml --to ciphertrust-config.yml --parallel 32
    $ kes migrate --from old.yml --to new.yml --merge 'minio-*'
";

/// Most keys copied at a time.
const MAX_PARALLEL: usize = 256;

pub fn run(raw: Vec<OsString>) -> Outcome {
    let flags = [
        args::option("from", None),
        args::option("to", None),
        switch("merge", None),
        switch("force", Some('f')),
        args::option("parallel", None),
        switch("dry-run", None),
        switch("verbose", Some('v')),
        switch("quiet", Some('q')),
    ];
    let parsed = args::parse("kes migrate", USAGE, &flags, raw)?;
    let (Some(from), Some(to)) = (parsed.value("from"), parsed.value("to")) else {
        return Err(Exit::Error(
            "both --from and --to are required. See 'kes migrate --help'".into(),
        ));
    };
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes migrate --help'".into(),
        ));
    }
    let (merge, force) = (parsed.has("merge"), parsed.has("force"));
    if merge && force {
        return Err(Exit::Error(
            "--merge and --force cannot be used together".into(),
        ));
    }
    let parallel = match parsed.value("parallel") {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PARALLEL).contains(n))
            .ok_or_else(|| {
                Exit::Error(format!(
                    "--parallel: '{text}' is not a number from 1 to {MAX_PARALLEL}"
                ))
            })?,
    };
    let interrupted = on_interrupt()?;
    let pattern = parsed.arg(0).unwrap_or("*");
    let (source, _) = open(from)?;
    let (target, reader) = open(to)?;
    let plan = Plan {
        pattern,
        reader,
        merge,
        force,
        parallel,
        dry_run: parsed.has("dry-run"),
        verbose: parsed.has("verbose"),
        quiet: parsed.has("quiet"),
    };
    migrate(source.as_ref(), target.as_ref(), &plan, &interrupted)
}

/// The keystore a config file names, and its `compat.oldest_reader`.
pub(super) fn open(config: &str) -> Result<(std::sync::Arc<dyn KeyStore>, OldestReader), Exit> {
    let (keystore, reader) =
        crate::config::load_keystore(Path::new(config)).map_err(|e| Exit::Error(e.to_string()))?;
    Ok((
        crate::keystore::open(&keystore).map_err(Exit::Error)?,
        reader,
    ))
}

/// A flag that Ctrl-C (SIGINT) or SIGTERM sets: the migration then stops handing out
/// keys and lets the copies under way finish. A second Ctrl-C ends the process at once.
fn on_interrupt() -> Result<Arc<AtomicBool>, Exit> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone())
            .and_then(|_| signal_hook::flag::register(signal, flag.clone()))
            .map_err(|e| Exit::Error(format!("cannot handle Ctrl-C: {e}")))?;
    }
    Ok(flag)
}

struct Plan<'a> {
    pattern: &'a str,
    /// The target's `compat.oldest_reader`.
    reader: OldestReader,
    merge: bool,
    force: bool,
    parallel: usize,
    dry_run: bool,
    verbose: bool,
    quiet: bool,
}

/// What became of one key.
#[derive(Debug)]
enum Copy {
    /// Created in the target (`rewritten`: in the form the oldest reader reads).
    Copied { rewritten: bool },
    /// Existed in the target; deleted and copied again (`--force`).
    Replaced { rewritten: bool },
    /// Exists in the target (`--merge`).
    Skipped,
    /// Why it was not copied; stops the migration.
    Failed(String),
}

/// The keys of a migration by outcome.
#[derive(Debug, Default)]
struct Summary {
    /// Keys matching the pattern in the source.
    total: usize,
    copied: usize,
    replaced: usize,
    /// Copied or replaced in a form the target's oldest reader reads, not as they were.
    rewritten: usize,
    skipped: usize,
    failed: usize,
    reader: OldestReader,
    dry_run: bool,
    elapsed: Duration,
}

impl Summary {
    fn record(&mut self, copy: &Copy) {
        match copy {
            Copy::Copied { rewritten } => {
                self.copied += 1;
                self.rewritten += usize::from(*rewritten);
            }
            Copy::Replaced { rewritten } => {
                self.replaced += 1;
                self.rewritten += usize::from(*rewritten);
            }
            Copy::Skipped => self.skipped += 1,
            Copy::Failed(_) => self.failed += 1,
        }
    }

    fn not_copied(&self) -> usize {
        self.total - self.copied - self.replaced - self.skipped - self.failed
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let moved = self.copied + self.replaced;
        let verb = if self.dry_run {
            "Would migrate"
        } else {
            "Migrated"
        };
        if self.not_copied() + self.failed == 0 {
            write!(f, "{verb} {moved} keys")?;
        } else {
            write!(f, "{verb} {moved} of {} keys", self.total)?;
        }
        if !self.dry_run {
            let processed = moved + self.failed;
            write!(
                f,
                " in {} ({})",
                output::format_duration(Duration::from_millis(self.elapsed.as_millis() as u64)),
                progress::rate_text(processed, self.elapsed, "keys")
            )?;
        }
        writeln!(f)?;
        let row = |f: &mut std::fmt::Formatter<'_>, what: &str, n: usize, note: &str| {
            writeln!(f, "  {what:<11}{n:>8}{note}")
        };
        row(f, "copied", self.copied, "")?;
        row(f, "replaced", self.replaced, "  (--force)")?;
        if self.rewritten > 0 {
            let note = format!(
                "  of the copied and replaced, for compat.oldest_reader {}",
                self.reader
            );
            row(f, "rewritten", self.rewritten, &note)?;
        }
        row(
            f,
            "skipped",
            self.skipped,
            "  exist in the target (--merge)",
        )?;
        row(f, "failed", self.failed, "")?;
        row(f, "not copied", self.not_copied(), "")
    }
}

/// Copies what `plan` asks for and prints the summary; an error when a key failed or the
/// migration was interrupted (the summary says how far it came).
fn migrate(
    source: &dyn KeyStore,
    target: &dyn KeyStore,
    plan: &Plan,
    interrupted: &AtomicBool,
) -> Outcome {
    let matching: Vec<String> = list(source)
        .map_err(|e| Exit::Error(format!("cannot list the source keystore: {e}")))?
        .into_iter()
        .filter(|n| crate::policy::glob_match(plan.pattern, n))
        .collect();
    let existing: HashSet<String> = if plan.merge {
        list(target)
            .map_err(|e| Exit::Error(format!("cannot list the target keystore: {e}")))?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    let mut summary = Summary {
        total: matching.len(),
        reader: plan.reader,
        dry_run: plan.dry_run,
        ..Summary::default()
    };
    let (present, names): (Vec<String>, Vec<String>) =
        matching.into_iter().partition(|n| existing.contains(n));
    summary.skipped = present.len();
    if plan.verbose {
        for name in &present {
            println!("skipped '{name}' (exists in the target)");
        }
    }
    if !plan.quiet {
        eprintln!(
            "{} {} keys from {} to {}{}{}",
            if plan.dry_run { "Checking" } else { "Copying" },
            names.len(),
            source.describe(),
            target.describe(),
            match plan.parallel {
                1 => String::new(),
                n => format!(", {n} at a time"),
            },
            match present.len() {
                0 => String::new(),
                n => format!("; {n} exist there already and are skipped"),
            }
        );
    }
    if interrupted.load(Ordering::SeqCst) {
        print!("{summary}");
        return Err(Exit::Error(
            "interrupted before copying; nothing was written".into(),
        ));
    }

    let mode = if plan.dry_run {
        progress::Mode::Off
    } else {
        progress::Mode::for_stderr(plan.quiet)
    };
    let mut progress = Progress::new(mode, names.len(), "keys");
    let first_failure = copy_all(source, target, plan, &names, interrupted, |name, copy| {
        summary.record(copy);
        report(plan, name, copy);
        let processed =
            summary.copied + summary.replaced + summary.failed + summary.skipped - present.len();
        progress.update(processed);
    });
    progress.finish();
    summary.elapsed = progress.elapsed();
    print!("{summary}");
    if let Some(why) = first_failure {
        let rest = summary.not_copied();
        return Err(Exit::Error(if rest > 0 {
            format!("{why}; {rest} keys after it were not copied")
        } else {
            why
        }));
    }
    if interrupted.load(Ordering::SeqCst) && summary.not_copied() > 0 {
        return Err(Exit::Error(format!(
            "interrupted: {} keys were not copied; run the same command with --merge to copy them",
            summary.not_copied()
        )));
    }
    Ok(())
}

/// The line for one key with `--verbose` (or a dry run without `--quiet`).
fn report(plan: &Plan, name: &str, copy: &Copy) {
    let note = |rewritten: &bool| {
        if *rewritten {
            format!(" (rewritten for compat.oldest_reader {})", plan.reader)
        } else {
            String::new()
        }
    };
    match copy {
        Copy::Copied { rewritten } if plan.dry_run && !plan.quiet => {
            println!("would migrate '{name}'{}", note(rewritten));
        }
        _ if !plan.verbose || plan.dry_run => {}
        Copy::Copied { rewritten } => println!("migrated '{name}'{}", note(rewritten)),
        Copy::Replaced { rewritten } => println!("replaced '{name}'{}", note(rewritten)),
        Copy::Skipped => println!("skipped '{name}' (exists in the target)"),
        Copy::Failed(_) => {}
    }
}

/// Every name in `store`, sorted.
fn list(store: &dyn KeyStore) -> Result<Vec<String>, KeyStoreError> {
    let mut names = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = store.list("", start.as_deref(), LIST_PAGE)?;
        names.extend(page.names);
        match page.continue_at {
            Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
            _ => return Ok(names),
        }
    }
}

/// Copies `names` with `plan.parallel` threads, in name order as they are handed out,
/// and calls `done` on this thread for each key as it finishes. Returns the first
/// failure. After a failure or an interrupt no key is handed out; copies under way
/// finish.
fn copy_all(
    source: &dyn KeyStore,
    target: &dyn KeyStore,
    plan: &Plan,
    names: &[String],
    interrupted: &AtomicBool,
    mut done: impl FnMut(&str, &Copy),
) -> Option<String> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut first_failure = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Copy)>();
        for _ in 0..plan.parallel.min(names.len()) {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) && !interrupted.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break };
                    let copy = copy_one(source, target, plan, name);
                    if matches!(copy, Copy::Failed(_)) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if tx.send((i, copy)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, copy) in rx {
            if let Copy::Failed(why) = &copy {
                first_failure.get_or_insert_with(|| why.clone());
            }
            done(&names[i], &copy);
        }
    });
    first_failure
}

/// Copies one key. Messages name the key and never contain key material.
fn copy_one(source: &dyn KeyStore, target: &dyn KeyStore, plan: &Plan, name: &str) -> Copy {
    let fail = |what: &str, e: KeyStoreError| Copy::Failed(format!("{what} '{name}': {e}"));
    let value = match source.get(name) {
        Ok(value) => value,
        Err(e) => return fail("cannot read key", e),
    };
    let (value, rewritten) = match for_reader(plan.reader, value) {
        Ok(pair) => pair,
        Err(why) => return Copy::Failed(format!("key '{name}' {why}")),
    };
    if plan.dry_run {
        return Copy::Copied { rewritten };
    }
    match target.create(name, &value) {
        Ok(()) => Copy::Copied { rewritten },
        Err(KeyStoreError::Exists) if plan.merge => Copy::Skipped,
        Err(KeyStoreError::Exists) if plan.force => {
            if let Err(e) = target.delete(name) {
                return fail("cannot replace key", e);
            }
            match target.create(name, &value) {
                Ok(()) => Copy::Replaced { rewritten },
                Err(e) => fail("cannot create key", e),
            }
        }
        Err(KeyStoreError::Exists) => Copy::Failed(format!(
            "key '{name}' exists in the target: use --merge to skip such keys or --force to replace them"
        )),
        Err(e) => fail("cannot create key", e),
    }
}

/// The value to write for `reader`: the stored value itself when that generation reads
/// its form, otherwise the key rewritten in the form it reads (with `true`).
fn for_reader(reader: OldestReader, value: StoredValue) -> Result<(StoredValue, bool), String> {
    let form = StoredForm::of(&value);
    if form == StoredForm::Unreadable {
        return Err("in the source is not a KES key".into());
    }
    if form.readable_at(reader) {
        return Ok((value, false));
    }
    let key = KeyVersion::parse(&value).map_err(|e| e.to_string())?;
    if !key.encodes_losslessly_for(reader) {
        return Err(format!(
            "is a {} key, which compat.oldest_reader {reader} cannot store (its keys have no algorithm)",
            key.cipher().api_name()
        ));
    }
    let encoded = zeroize::Zeroizing::new(key.encode_for(reader));
    Ok((StoredValue::new(encoded.as_bytes().to_vec()), true))
}
