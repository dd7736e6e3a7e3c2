//! `kes migrate`: copy keys from one keystore to another (e.g. fs → CipherTrust).
//!
//! Stored values are copied as they are, so keys keep their format, creation time and
//! creator, and every ciphertext made with them still decrypts. The one exception is a
//! target whose config sets `compat.oldest_reader`: a value that generation cannot read
//! is rewritten in the form it reads (formats.md §2), and a key that form cannot hold
//! without losing its cipher stops the migration. Key material is never printed: the
//! output names keys and counts them.

use std::ffi::OsString;
use std::path::Path;

use super::args::{self, switch};
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

Options:
    --from FILE        Config file of the keystore to copy from.
    --to FILE          Config file of the keystore to copy to.
    --merge            Skip keys that exist in the target already.
    -f, --force        Replace keys that exist in the target (delete, then copy).
    --dry-run          List what would be copied; change nothing.
    -q, --quiet        Print only the summary.
    -h, --help         Show this help.

Examples:
    $ kes migrate --from fs-config.yml --to ciphertrust-config.yml
    $ kes migrate --from old.yml --to new.yml --merge 'minio-*'
";

pub fn run(raw: Vec<OsString>) -> Outcome {
    let flags = [
        args::option("from", None),
        args::option("to", None),
        switch("merge", None),
        switch("force", Some('f')),
        switch("dry-run", None),
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
    let pattern = parsed.arg(0).unwrap_or("*");
    let (source, _) = open(from)?;
    let (target, reader) = open(to)?;
    let plan = Plan {
        pattern,
        reader,
        merge,
        force,
        dry_run: parsed.has("dry-run"),
        quiet: parsed.has("quiet"),
    };
    let summary = migrate(source.as_ref(), target.as_ref(), &plan)?;
    output::print(&summary.to_string())
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

struct Plan<'a> {
    pattern: &'a str,
    /// The target's `compat.oldest_reader`.
    reader: OldestReader,
    merge: bool,
    force: bool,
    dry_run: bool,
    quiet: bool,
}

#[derive(Default)]
struct Summary {
    copied: usize,
    skipped: usize,
    /// Copied in a form the target's oldest reader reads, not as they were.
    rewritten: usize,
    reader: OldestReader,
    dry_run: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "Would migrate"
        } else {
            "Migrated"
        };
        write!(f, "{verb} {} keys", self.copied)?;
        if self.skipped > 0 {
            write!(f, ", skipped {} that exist in the target", self.skipped)?;
        }
        if self.rewritten > 0 {
            write!(
                f,
                ", {} of them rewritten for compat.oldest_reader {}",
                self.rewritten, self.reader
            )?;
        }
        Ok(())
    }
}

fn migrate(source: &dyn KeyStore, target: &dyn KeyStore, plan: &Plan) -> Result<Summary, Exit> {
    let fail =
        |what: &str, name: &str, e: KeyStoreError| Exit::Error(format!("{what} '{name}': {e}"));
    let mut summary = Summary {
        dry_run: plan.dry_run,
        reader: plan.reader,
        ..Summary::default()
    };
    let mut start: Option<String> = None;
    loop {
        let page = source
            .list("", start.as_deref(), LIST_PAGE)
            .map_err(|e| Exit::Error(format!("cannot list the source keystore: {e}")))?;
        for name in page
            .names
            .iter()
            .filter(|n| crate::policy::glob_match(plan.pattern, n))
        {
            let value = source
                .get(name)
                .map_err(|e| fail("cannot read key", name, e))?;
            let (value, rewritten) = for_reader(plan.reader, value).map_err(|why| {
                Exit::Error(format!(
                    "key '{name}' {why}; nothing after it was copied ({summary} before it)"
                ))
            })?;
            let note = if rewritten {
                format!(" (rewritten for compat.oldest_reader {})", plan.reader)
            } else {
                String::new()
            };
            if plan.dry_run {
                summary.copied += 1;
                summary.rewritten += usize::from(rewritten);
                if !plan.quiet {
                    println!("would migrate '{name}'{note}");
                }
                continue;
            }
            match target.create(name, &value) {
                Ok(()) => summary.copied += 1,
                Err(KeyStoreError::Exists) if plan.merge => {
                    summary.skipped += 1;
                    continue;
                }
                Err(KeyStoreError::Exists) if plan.force => {
                    target
                        .delete(name)
                        .map_err(|e| fail("cannot replace key", name, e))?;
                    target
                        .create(name, &value)
                        .map_err(|e| fail("cannot create key", name, e))?;
                    summary.copied += 1;
                }
                Err(KeyStoreError::Exists) => {
                    return Err(Exit::Error(format!(
                        "key '{name}' exists in the target: use --merge to skip such keys or --force to replace them ({summary} before it)"
                    )));
                }
                Err(e) => return Err(fail("cannot create key", name, e)),
            }
            summary.rewritten += usize::from(rewritten);
            if !plan.quiet {
                println!("migrated '{name}'{note}");
            }
        }
        match page.continue_at {
            Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
            _ => return Ok(summary),
        }
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
