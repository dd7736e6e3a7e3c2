//! `kes migrate` through the real binary: fs → fs and fs → CipherTrust (simulator).

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::path::{Path, PathBuf};

use common::run_kes;
use ctm_sim::{CtmSim, REFRESH_TOKEN};

fn fs_config(dir: &Path, name: &str, keys: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("keystore:\n  fs:\n    path: {}\n", keys.display()),
    )
    .unwrap();
    path
}

/// A source keystore with keys in every stored form the Go servers wrote.
fn source_keys(dir: &Path) -> (PathBuf, Vec<(String, String)>) {
    let keys = dir.join("source-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(include_str!("vectors/stored-keys.json")).unwrap();
    let mut written = Vec::new();
    for i in 0..30 {
        let cases = stored["cases"].as_array().unwrap();
        let value = cases[i % cases.len()]["stored_value"]
            .as_str()
            .unwrap()
            .to_string();
        let name = format!("{}-{i:02}", if i % 3 == 0 { "minio" } else { "app" });
        std::fs::write(keys.join(&name), &value).unwrap();
        written.push((name, value));
    }
    (keys, written)
}

#[test]
fn migrate_copies_every_key_byte_for_byte_between_fs_keystores() {
    let dir = tempfile::tempdir().unwrap();
    let (source, written) = source_keys(dir.path());
    let from = fs_config(dir.path(), "from.yml", &source);
    let to = fs_config(dir.path(), "to.yml", &dir.path().join("target-keys"));
    let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());

    // A dry run changes nothing.
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Would migrate 30 keys"), "{out}");
    assert!(!dir.path().join("target-keys").join("app-01").exists());

    // Only the keys matching the pattern.
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "minio-*"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Migrated 10 keys"), "{out}");
    // The rest; existing keys need --merge or --force.
    let (code, _, err) = run_kes(&["migrate", "--from", from, "--to", to]);
    assert_eq!(code, 1);
    // Keys are copied in name order: the 20 app-* keys went over before minio-00 stopped it.
    assert!(
        err.contains("'minio-00' exists in the target")
            && err.contains("--merge")
            && err.contains("Migrated 20 keys"),
        "{err}"
    );
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "--merge", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Migrated 0 keys, skipped 30"), "{out}");
    for (name, value) in &written {
        let copied = std::fs::read_to_string(dir.path().join("target-keys").join(name)).unwrap();
        assert_eq!(&copied, value, "{name}");
        assert!(
            !out.contains(value.as_str()) && !err.contains(value.as_str()),
            "key material printed"
        );
    }
    let (code, out, _) = run_kes(&["migrate", "--from", from, "--to", to, "--force", "-q"]);
    assert_eq!(code, 0);
    assert!(out.contains("Migrated 30 keys"), "{out}");
    let (code, _, err) = run_kes(&["migrate", "--from", from, "--to", to, "--force", "--merge"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be used together"), "{err}");
}

#[test]
fn migrate_moves_fs_keys_into_ciphertrust() {
    let sim = CtmSim::start();
    let dir = tempfile::tempdir().unwrap();
    let (source, written) = source_keys(dir.path());
    let from = fs_config(dir.path(), "from.yml", &source);
    let to = dir.path().join("to.yml");
    std::fs::write(
        &to,
        format!(
            "keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH_TOKEN}\n        domain: \"\"\n        retry: 15s\n      tls:\n        ca: {}\n",
            sim.endpoint(),
            sim.ca_file().display()
        ),
    )
    .unwrap();
    let (code, out, err) = run_kes(&[
        "migrate",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Migrated 30 keys"), "{out}");
    for (name, value) in &written {
        assert_eq!(sim.secret(name).as_deref(), Some(value.as_str()), "{name}");
    }
    assert!(!out.contains(REFRESH_TOKEN) && !err.contains(REFRESH_TOKEN));
}
