//! `kes keystore check --config FILE` through the real binary: against the CipherTrust
//! stand-in in its default and strict modes (exit 0, every step's row, nothing left
//! behind), against stand-ins that answer in other plausible ways (reported, exit 0) or
//! refuse a form kes relies on (exit 1, the step named), interrupted by Ctrl-C (cleaned
//! up), and against fs keystores.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KES, Pki, run_kes};
use ctm_sim::{CryptoQuirk, CtmSim, REFRESH_TOKEN};
use serde_json::Value;

/// A server config whose keystore is `sim`, with `master_keys: resident` if `resident`.
fn config(pki: &Pki, sim: &CtmSim, resident: bool) -> String {
    let mode = if resident {
        "    master_keys: resident\n"
    } else {
        ""
    };
    let path = pki.config(
        "config.yml",
        &format!(
            "keystore:\n  ciphertrust:\n    endpoint: {}\n    credentials:\n      token: {REFRESH_TOKEN}\n    tls:\n      ca: {}\n{mode}",
            sim.endpoint(),
            sim.ca_file().display()
        ),
    );
    path.display().to_string()
}

/// Runs the check with `--json`: exit code, the report, stderr.
fn check_json(config: &str) -> (i32, Value, String) {
    let (code, stdout, stderr) = run_kes(&["keystore", "check", "--config", config, "--json"]);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, report, stderr)
}

fn row<'a>(report: &'a Value, step: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == step)
        .unwrap_or_else(|| panic!("no step {step:?} in {report:#}"))
}

fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn nothing_left(sim: &CtmSim) {
    assert_eq!(sim.secret_count(), 0, "a secret was left behind");
    assert_eq!(sim.key_object_count(), 0, "a key version was left behind");
}

const ALL_STEPS: [&str; 27] = [
    "token",
    "list secrets",
    "list keys2",
    "name is free (secret)",
    "name is free (secret metadata)",
    "name is free (key)",
    "create secret",
    "read secret",
    "secret metadata",
    "duplicate secret",
    "create key",
    "duplicate key",
    "look up key",
    "encrypt",
    "rotate",
    "encrypt after rotate",
    "list versions",
    "decrypt v0 by id",
    "decrypt v1 by id",
    "decrypt v0 by name + version",
    "decrypt a tampered tag",
    "secret via keys2",
    "delete by name (once)",
    "delete versions by id",
    "key is gone",
    "decrypt with a deleted key",
    "delete secret",
];

#[test]
fn the_stand_in_answers_every_form_kes_relies_on_in_both_modes() {
    for strict in [false, true] {
        let pki = Pki::new();
        let sim = CtmSim::start();
        sim.set_strict(strict);
        let (code, report, stderr) = check_json(&config(&pki, &sim, true));
        assert_eq!(code, 0, "strict {strict}: {report:#}\n{stderr}");
        let steps: Vec<String> = verdicts(&report).into_iter().map(|(s, _)| s).collect();
        for step in ALL_STEPS {
            assert!(
                steps.iter().any(|s| s == step),
                "strict {strict}: no {step}"
            );
        }
        for (step, verdict) in verdicts(&report) {
            assert!(
                verdict == "ok" || verdict == "info",
                "strict {strict}: {step} is {verdict}"
            );
        }
        // The rows say what was sent and found.
        let encrypt = row(&report, "encrypt");
        assert_eq!(encrypt["call"], "POST /api/v1/crypto/encrypt");
        assert_eq!(encrypt["status"], 200);
        let fields = encrypt["fields"].as_str().unwrap();
        for field in [
            "id",
            "version=0",
            "iv (12 bytes)",
            "tag (16 bytes)",
            "ciphertext",
        ] {
            assert!(fields.contains(field), "{fields}");
        }
        assert!(
            row(&report, "encrypt after rotate")["fields"]
                .as_str()
                .unwrap()
                .contains("version=1")
        );
        assert_eq!(row(&report, "duplicate key")["status"], 409);
        assert!(
            row(&report, "decrypt a tampered tag")["fields"]
                .as_str()
                .unwrap()
                .contains("NCERRCryptoOperationFailed")
        );
        // What no public source settles, as this CipherTrust answers it.
        let by_name = row(&report, "decrypt v0 by name + version")["detail"]
            .as_str()
            .unwrap()
            .to_string();
        let delete_once = row(&report, "delete by name (once)")["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            delete_once.contains("removed one version, 1 left"),
            "{delete_once}"
        );
        let via_keys2 = row(&report, "secret via keys2")["detail"]
            .as_str()
            .unwrap()
            .to_string();
        if strict {
            assert!(by_name.starts_with("refused"), "{by_name}");
            assert!(
                via_keys2.contains("found as Opaque Object; kes does not take it"),
                "{via_keys2}"
            );
        } else {
            assert!(by_name.starts_with("honoured"), "{by_name}");
            assert!(via_keys2.contains("not found among keys"), "{via_keys2}");
        }
        // No token and no material in the output.
        let text = report.to_string();
        assert!(
            !text.contains(REFRESH_TOKEN) && !text.contains("not a key"),
            "{text}"
        );
        nothing_left(&sim);
    }
}

#[test]
fn the_table_has_a_row_per_step_and_a_summary() {
    let pki = Pki::new();
    let sim = CtmSim::start();
    let (code, stdout, stderr) = run_kes(&["keystore", "check", "-c", &config(&pki, &sim, true)]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("Keystore: ciphertrust:{}", sim.endpoint())),
        "{stdout}"
    );
    let header = stdout.lines().nth(2).unwrap();
    for column in ["STEP", "CALL", "STATUS", "ANSWER FIELDS", "VERDICT", "NOTE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        stdout.contains("POST /api/v1/vault/keys2/{name}/versions"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed, 0 warnings"), "{stdout}");
    nothing_left(&sim);
}

#[test]
fn other_plausible_answers_are_reported_and_kes_copes() {
    for (quirk, step, expected) in [
        (
            CryptoQuirk::NameDecryptIgnoresVersion,
            "decrypt v0 by name + version",
            "ignored",
        ),
        (CryptoQuirk::TagFailureAs500, "decrypt a tampered tag", ""),
        (
            CryptoQuirk::RefuseTagLen,
            "tag_len",
            "refused the field tag_len",
        ),
    ] {
        let pki = Pki::new();
        let sim = CtmSim::start();
        sim.set_crypto_quirk(quirk);
        let (code, report, stderr) = check_json(&config(&pki, &sim, true));
        assert_eq!(code, 0, "{quirk:?}: {report:#}\n{stderr}");
        let found = row(&report, step);
        assert!(
            found["detail"].as_str().unwrap().contains(expected),
            "{quirk:?}: {found}"
        );
        if quirk == CryptoQuirk::TagFailureAs500 {
            assert_eq!(
                (found["status"].as_u64(), found["verdict"].as_str()),
                (Some(500), Some("ok"))
            );
        }
        nothing_left(&sim);
    }
}

#[test]
fn a_form_kes_relies_on_that_fails_is_named_and_the_exit_code_says_so() {
    let pki = Pki::new();
    let sim = CtmSim::start();
    sim.set_crypto_quirk(CryptoQuirk::EncryptWithoutVersion);
    let (code, report, stderr) = check_json(&config(&pki, &sim, true));
    assert_eq!(code, 1, "{report:#}");
    let encrypt = row(&report, "encrypt");
    assert_eq!(encrypt["verdict"], "fail");
    assert!(
        encrypt["fields"]
            .as_str()
            .unwrap()
            .contains("missing: version"),
        "{encrypt}"
    );
    assert!(
        stderr.contains("does not answer as kes needs: encrypt"),
        "{stderr}"
    );
    // What was made is deleted, though the check stopped early.
    assert!(
        row(&report, "clean up key")["detail"]
            .as_str()
            .unwrap()
            .starts_with("deleted")
    );
    nothing_left(&sim);

    // In secrets mode the same answer only warns: kes does not rely on it there.
    let sim = CtmSim::start();
    sim.set_crypto_quirk(CryptoQuirk::EncryptWithoutVersion);
    let (code, report, _) = check_json(&config(&pki, &sim, false));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(row(&report, "encrypt")["verdict"], "warn");
    nothing_left(&sim);
}

#[test]
fn a_refused_permission_fails_the_step_and_names_it() {
    let pki = Pki::new();
    let sim = CtmSim::start();
    sim.fail_route_with(ctm_sim::Route::Decrypt, Some(403));
    let (code, report, stderr) = check_json(&config(&pki, &sim, true));
    assert_eq!(code, 1);
    let decrypt = row(&report, "decrypt v0 by id");
    assert_eq!(
        (decrypt["status"].as_u64(), decrypt["verdict"].as_str()),
        (Some(403), Some("fail"))
    );
    assert!(stderr.contains("decrypt v0 by id"), "{stderr}");
    sim.fail_route_with(ctm_sim::Route::Decrypt, None);
    nothing_left(&sim);
}

/// Each mode is judged by what it relies on: resident mode never creates secrets, so a
/// user that may not create them is fine there, and not in secrets mode.
#[test]
fn each_mode_is_judged_by_the_forms_it_relies_on() {
    let pki = Pki::new();
    let sim = CtmSim::start();
    sim.fail_route_with(ctm_sim::Route::Create, Some(403));
    let (code, report, stderr) = check_json(&config(&pki, &sim, true));
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(row(&report, "create secret")["verdict"], "warn");
    assert_eq!(row(&report, "decrypt v1 by id")["verdict"], "ok");
    let (code, report, stderr) = check_json(&config(&pki, &sim, false));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(row(&report, "create secret")["verdict"], "fail");
    assert!(stderr.contains("create secret"), "{stderr}");
    nothing_left(&sim);
}

#[test]
fn ctrl_c_stops_the_check_and_it_cleans_up_first() {
    let pki = Pki::new();
    let sim = CtmSim::start();
    sim.set_latency(Duration::from_millis(150));
    let config = config(&pki, &sim, true);
    let mut child = Command::new(KES)
        .args(["keystore", "check", "--config", &config, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.key_object_count() == 0 {
        assert!(Instant::now() < deadline, "the check made no key");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status.code(), Some(1), "{report:#}");
    assert_eq!(report["interrupted"], true);
    assert!(
        row(&report, "clean up key")["detail"]
            .as_str()
            .unwrap()
            .starts_with("deleted")
    );
    assert!(
        row(&report, "clean up secret")["detail"]
            .as_str()
            .unwrap()
            .starts_with("deleted")
    );
    nothing_left(&sim);
}

#[test]
fn an_fs_keystore_gets_its_directory_checked() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let dir = pki.path("keys");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = pki.config(
        "fs.yml",
        &format!("keystore:\n  fs:\n    path: {}\n", dir.display()),
    );
    let config = config.display().to_string();
    let (code, report, stderr) = check_json(&config);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(
        verdicts(&report),
        [
            ("owner".to_string(), "ok".to_string()),
            ("mode".into(), "ok".into()),
            ("atomic rename".into(), "ok".into()),
            ("free space".into(), "ok".into()),
        ]
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing left behind"
    );
    // Open to others: a warning that says what to do.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, report, _) = check_json(&config);
    assert_eq!(code, 0);
    assert!(
        row(&report, "mode")["detail"]
            .as_str()
            .unwrap()
            .contains("chmod 0700")
    );
    // A file where the directory should be: the check fails.
    let file = pki.path("file");
    std::fs::write(&file, b"x").unwrap();
    let config = pki.config(
        "file.yml",
        &format!("keystore:\n  fs:\n    path: {}\n", file.display()),
    );
    let (code, report, _) = check_json(&config.display().to_string());
    assert_eq!(
        (code, row(&report, "directory")["verdict"].as_str()),
        (1, Some("fail"))
    );
}

#[test]
fn usage_errors_and_an_unreadable_config_are_clear() {
    let (code, _, stderr) = run_kes(&["keystore", "check"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--config is required"), "{stderr}");
    let (code, _, stderr) = run_kes(&["keystore", "check", "--config", "/no/such/config.yml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read config file '/no/such/config.yml'"),
        "{stderr}"
    );
    let (code, _, stderr) = run_kes(&["keystore", "verify"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a keystore command"), "{stderr}");
    let (code, _, stderr) = run_kes(&["keystore"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("kes keystore <command>"), "{stderr}");
}
