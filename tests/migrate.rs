//! `kes migrate` through the real binary: fs → fs and fs → CipherTrust (simulator).

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KES, run_kes};
use ctm_sim::{CtmSim, REFRESH_TOKEN, Route};

fn fs_config(dir: &Path, name: &str, keys: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("keystore:\n  fs:\n    path: {}\n", keys.display()),
    )
    .unwrap();
    path
}

/// A config naming the CipherTrust simulator as its keystore.
fn ctm_config(dir: &Path, sim: &CtmSim) -> PathBuf {
    let path = dir.join("to.yml");
    std::fs::write(
        &path,
        format!(
            "keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH_TOKEN}\n        domain: \"\"\n        retry: 15s\n      tls:\n        ca: {}\n",
            sim.endpoint(),
            sim.ca_file().display()
        ),
    )
    .unwrap();
    path
}

/// A source keystore (fs) with `n` keys named `key-00000`…, each a stored form a Go
/// server wrote; returns its config file and the (name, value) pairs.
fn many_keys(dir: &Path, n: usize) -> (PathBuf, Vec<(String, String)>) {
    let keys = dir.join("many-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(include_str!("vectors/stored-keys.json")).unwrap();
    let cases = stored["cases"].as_array().unwrap();
    let written: Vec<(String, String)> = (0..n)
        .map(|i| {
            let value = cases[i % cases.len()]["stored_value"].as_str().unwrap();
            let name = format!("key-{i:05}");
            std::fs::write(keys.join(&name), value).unwrap();
            (name, value.to_string())
        })
        .collect();
    (fs_config(dir, "from.yml", &keys), written)
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

/// The summary's counts: copied, replaced, skipped, failed, not copied.
fn counts(summary: &str) -> [usize; 5] {
    ["copied", "replaced", "skipped", "failed", "not copied"].map(|what| {
        summary
            .lines()
            .find_map(|line| {
                let rest = line.trim_start().strip_prefix(what)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no '{what}' count in the summary:\n{summary}"))
    })
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
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to]);
    assert_eq!(code, 1);
    // Keys are copied in name order: the 20 app-* keys went over before minio-00 stopped it.
    assert!(
        err.contains("'minio-00' exists in the target")
            && err.contains("--merge")
            && err.contains("9 keys after it were not copied"),
        "{err}"
    );
    assert!(out.starts_with("Migrated 20 of 30 keys in "), "{out}");
    assert_eq!(counts(&out), [20, 0, 0, 1, 9], "{out}");
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "--merge", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Migrated 0 keys"), "{out}");
    assert_eq!(counts(&out), [0, 0, 30, 0, 0], "{out}");
    assert_eq!(err, "", "--quiet prints no progress");
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
    assert_eq!(counts(&out), [0, 30, 0, 0, 0], "{out}");
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
    let to = ctm_config(dir.path(), &sim);
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

#[test]
fn migrate_in_parallel_shows_progress_when_piped_and_counts_outcomes() {
    let sim = CtmSim::start();
    let dir = tempfile::tempdir().unwrap();
    let (from, written) = many_keys(dir.path(), 60);
    let to = ctm_config(dir.path(), &sim);
    sim.set_latency(Duration::from_millis(30));
    let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());

    let (code, _, err) = run_kes(&["migrate", "--from", from, "--to", to, "--parallel", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--parallel: '0' is not a number from 1 to 256"),
        "{err}"
    );

    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "--parallel", "8"]);
    assert_eq!(code, 0, "{err}");
    // Eight calls at a time reached the CipherTrust Manager.
    assert!(sim.max_concurrent() >= 6, "{}", sim.max_concurrent());
    assert_eq!(sim.count(Route::Create), 60);
    for (name, value) in &written {
        assert_eq!(sim.secret(name).as_deref(), Some(value.as_str()), "{name}");
        assert!(!out.contains(value.as_str()) && !err.contains(value.as_str()));
    }
    // The summary: counts by outcome, the time and the rate.
    assert!(out.starts_with("Migrated 60 keys in "), "{out}");
    assert!(out.lines().next().unwrap().contains(" keys/s)"), "{out}");
    assert_eq!(counts(&out), [60, 0, 0, 0, 0], "{out}");
    // Piped stderr: what is copied where, then a plain line at every tenth.
    assert!(
        err.starts_with("Copying 60 keys from fs:")
            && err.contains("to ciphertrust")
            && err.contains(", 8 at a time"),
        "{err}"
    );
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let progress: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(progress.len() >= 10, "{err}");
    let mut last = 0;
    for line in &progress {
        let done: usize = line["progress: ".len()..]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(done > last, "counts grow: {err}");
        last = done;
        assert!(
            line.contains("/60 keys (") && line.contains(" keys/s, ") && line.ends_with(" left"),
            "{line}"
        );
    }
    assert!(
        progress
            .last()
            .unwrap()
            .starts_with("progress: 60/60 keys (100%)"),
        "{err}"
    );

    // --verbose: one line per key.
    let (code, out, err) = run_kes(&["migrate", "--from", from, "--to", to, "--merge", "-v"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("skipped 'key-"))
            .count(),
        60,
        "{out}"
    );
    assert!(
        err.contains("60 exist there already and are skipped"),
        "{err}"
    );
    assert_eq!(counts(&out), [0, 0, 60, 0, 0], "{out}");
    assert_eq!(sim.count(Route::Create), 60, "--merge sends no key twice");
}

#[test]
fn an_interrupted_migration_continues_with_merge_without_copying_twice() {
    let sim = CtmSim::start();
    let dir = tempfile::tempdir().unwrap();
    let (from, written) = many_keys(dir.path(), 80);
    let to = ctm_config(dir.path(), &sim);
    sim.set_latency(Duration::from_millis(40));
    let args = [
        "migrate",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ];

    let child = Command::new(KES)
        .args(args)
        .args(["--parallel", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.secret_count() < 12 {
        assert!(Instant::now() < deadline, "the migration did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    // The copies under way finished and are counted; the rest were not started.
    let copied = sim.secret_count();
    assert!(copied < 80, "interrupted too late to tell: {out}");
    assert_eq!(counts(&out), [copied, 0, 0, 0, 80 - copied], "{out}");
    assert!(
        out.starts_with(&format!("Migrated {copied} of 80 keys")),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "interrupted: {} keys were not copied",
            80 - copied
        )) && err.contains("run the same command with --merge"),
        "{err}"
    );

    // Rerun with --merge: the rest, and no key sent to the target twice.
    let mut rerun = args.to_vec();
    rerun.extend(["--merge", "--parallel", "4"]);
    let (code, out, err) = run_kes(&rerun);
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&out), [80 - copied, 0, copied, 0, 0], "{out}");
    assert_eq!(sim.count(Route::Create), 80);
    assert_eq!(sim.secret_count(), 80);
    for (name, value) in &written {
        assert_eq!(sim.secret(name).as_deref(), Some(value.as_str()), "{name}");
    }
}

/// The benchmark of docs/BENCHMARKS.md ("kes migrate"): 10,000 keys from an fs keystore
/// into the CipherTrust stand-in answering every call after 20 ms, one key at a time and
/// with `--parallel 32`, three runs each (a fresh stand-in per run); prints the medians
/// and requires the parallel runs to be at least 10× faster. About 12 minutes, nearly
/// all of it waiting on the stand-in's latency, so the test profile's debug build does:
/// `cargo test --test migrate -- --ignored --nocapture bench_`.
#[test]
#[ignore]
fn bench_migrate_10000_keys_parallel_vs_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (from, _) = many_keys(dir.path(), 10_000);
    let run = |parallel: &str| -> f64 {
        let sim = CtmSim::start();
        sim.set_latency(Duration::from_millis(20));
        let to = ctm_config(dir.path(), &sim);
        let started = Instant::now();
        let (code, out, err) = run_kes(&[
            "migrate",
            "--from",
            from.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "--parallel",
            parallel,
            "-q",
        ]);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(code, 0, "{err}");
        assert_eq!(counts(&out), [10_000, 0, 0, 0, 0], "{out}");
        assert_eq!(sim.secret_count(), 10_000);
        println!("--parallel {parallel}: {secs:.1} s");
        secs
    };
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[1]
    };
    let parallel = median((0..3).map(|_| run("32")).collect());
    let sequential = median((0..3).map(|_| run("1")).collect());
    println!(
        "medians: one at a time {sequential:.1} s, --parallel 32 {parallel:.1} s: {:.1}x",
        sequential / parallel
    );
    assert!(
        sequential / parallel >= 10.0,
        "--parallel 32 is only {:.1}x faster",
        sequential / parallel
    );
}
