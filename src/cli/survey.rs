//! `kes survey`: which Go KES releases can read the keys in a keystore.
//!
//! Offline and read-only, driven by a server config file as `kes migrate` is: it lists
//! the keystore, reads every value, counts the values by the form they are stored in
//! (formats.md §2) and names the oldest Go release that reads all of them, so that an
//! operator knows which Go nodes may still join the fleet and whether the configured
//! `compat.oldest_reader` is kept. It prints names and counts, never key material.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde_json::json;

use super::args::{self, switch};
use super::{Exit, Outcome, output};
use crate::crypto::{OldestReader, StoredForm};
use crate::keystore::{KeyStore, LIST_PAGE};

const USAGE: &str = "Usage:
    kes survey --config FILE [PATTERN] [options]

Reads every key whose name matches PATTERN (a glob, default '*') from the keystore
configured in FILE (a kes server config; only its 'keystore:' and 'compat:' sections
are read), counts the keys by the form they are stored in and names the oldest Go KES
release that can read all of them. Changes nothing; never prints key material.

Options:
    -c, --config FILE  Server config file naming the keystore.
    --keys             Also list each key with its form.
    --json             Print one JSON object.
    -h, --help         Show this help.

Examples:
    $ kes survey --config config.yml
    $ kes survey --config config.yml --keys 'minio-*'
";

pub fn run(raw: Vec<OsString>) -> Outcome {
    let flags = [
        args::option("config", Some('c')),
        switch("keys", None),
        args::JSON,
    ];
    let parsed = args::parse("kes survey", USAGE, &flags, raw)?;
    let Some(config) = parsed.value("config") else {
        return Err(Exit::Error(
            "--config is required. See 'kes survey --help'".into(),
        ));
    };
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes survey --help'".into(),
        ));
    }
    let pattern = parsed.arg(0).unwrap_or("*");
    let (store, reader) = super::migrate::open(config)?;
    let survey = survey(store.as_ref(), pattern)?;
    if parsed.has("json") {
        return output::print(&format!("{}\n", survey.json(&store.describe(), reader)));
    }
    output::print(&survey.text(&store.describe(), reader, parsed.has("keys")))
}

/// Every matching key by name, with its form.
struct Survey {
    keys: BTreeMap<String, StoredForm>,
}

fn survey(store: &dyn KeyStore, pattern: &str) -> Result<Survey, Exit> {
    let mut keys = BTreeMap::new();
    let mut start: Option<String> = None;
    loop {
        let page = store
            .list("", start.as_deref(), LIST_PAGE)
            .map_err(|e| Exit::Error(format!("cannot list the keystore: {e}")))?;
        for name in page
            .names
            .iter()
            .filter(|n| crate::policy::glob_match(pattern, n))
        {
            let value = store
                .get(name)
                .map_err(|e| Exit::Error(format!("cannot read key '{name}': {e}")))?;
            keys.insert(name.clone(), StoredForm::of(&value));
        }
        match page.continue_at {
            Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
            _ => return Ok(Survey { keys }),
        }
    }
}

impl Survey {
    fn counts(&self) -> BTreeMap<StoredForm, usize> {
        let mut counts = BTreeMap::new();
        for form in self.keys.values() {
            *counts.entry(*form).or_insert(0) += 1;
        }
        counts
    }

    /// The least widely readable form among the KES keys; `None` without any.
    fn newest_form(&self) -> Option<StoredForm> {
        self.keys
            .values()
            .copied()
            .filter(|form| *form != StoredForm::Unreadable)
            .max()
    }

    /// Keys that the configured level's readers cannot read.
    fn unreadable_at(&self, reader: OldestReader) -> usize {
        self.keys
            .values()
            .filter(|form| **form != StoredForm::Unreadable && !form.readable_at(reader))
            .count()
    }

    fn oldest_release(&self) -> &'static str {
        match self.newest_form() {
            Some(form) => form.oldest_go_release().unwrap_or("none"),
            None => "any (no KES keys)",
        }
    }

    fn text(&self, store: &str, reader: OldestReader, list_keys: bool) -> String {
        let mut out = format!("Keystore {store}: {} keys\n", self.keys.len());
        let counts = self.counts();
        for form in StoredForm::ALL {
            let count = counts.get(&form).copied().unwrap_or(0);
            let readers = match form.oldest_go_release() {
                Some(release) => format!("read by Go KES {release} and later"),
                None => "read by no KES".into(),
            };
            out.push_str(&format!("  {count:>7}  {:<40} {readers}\n", form.name()));
        }
        out.push_str(&format!(
            "Oldest Go KES release that reads every key: {}\n",
            self.oldest_release()
        ));
        let behind = self.unreadable_at(reader);
        out.push_str(&format!(
            "compat.oldest_reader in the config: {reader}; keys that generation cannot read: {behind}\n"
        ));
        if list_keys {
            out.push_str("Keys:\n");
            for (name, form) in &self.keys {
                out.push_str(&format!("  {name}  {}\n", form.name()));
            }
        }
        out
    }

    fn json(&self, store: &str, reader: OldestReader) -> serde_json::Value {
        let counts = self.counts();
        let forms: Vec<_> = StoredForm::ALL
            .iter()
            .map(|form| {
                json!({
                    "form": form.name(),
                    "keys": counts.get(form).copied().unwrap_or(0),
                    "oldest_go_release": form.oldest_go_release(),
                })
            })
            .collect();
        json!({
            "keystore": store,
            "keys": self.keys.len(),
            "forms": forms,
            "oldest_go_release": self.oldest_release(),
            "oldest_reader": reader.name(),
            "unreadable_at_oldest_reader": self.unreadable_at(reader),
        })
    }
}
