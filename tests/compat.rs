//! `compat.oldest_reader` through the real binary: the config value, what each level
//! writes to an fs keystore and answers, a restart, `kes survey` and `kes migrate`.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::Digest;

use common::{Client, Credential, Kes, Pki, run_kes};
use ctm_sim::{CtmSim, REFRESH_TOKEN};

const CURRENT: &str = include_str!("vectors/ciphertext-current.json");
const LEGACY: &str = include_str!("vectors/ciphertext-legacy.json");
const STORED: &str = include_str!("vectors/stored-keys.json");
const LEVELS: [&str; 3] = ["v0.17", "2023", "current"];

fn vectors(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn post(c: &mut Client, path: &str, body: &Value) -> common::Resp {
    c.post(path, body.to_string().as_bytes())
}

fn fs_config(pki: &Pki, name: &str, admin: &Credential, keys: &Path, compat: &str) -> PathBuf {
    pki.config(
        name,
        &format!(
            "admin:\n  identity: {}\nkeystore:\n  fs:\n    path: {}\n{compat}",
            admin.identity,
            keys.display()
        ),
    )
}

/// The config value: a YAML number or a string, shown in `/v1/status` and the banner,
/// and applied to the keys the `keys:` list creates at startup; an unknown value names
/// the file, the line and the allowed values.
#[test]
fn oldest_reader_config_status_and_banner() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let keys = pki.path("keys");
    for (i, (compat, shown)) in [
        ("", "current"),
        ("compat:\n  oldest_reader: 2023\n", "2023"),
        ("compat:\n  oldest_reader: \"2023\"\n", "2023"),
        ("compat:\n  oldest_reader: v0.17\n", "v0.17"),
        ("compat:\n  oldest_reader: current\n", "current"),
    ]
    .into_iter()
    .enumerate()
    {
        let listed = format!("keys:\n  - name: listed-{i}\n{compat}");
        let config = fs_config(&pki, "config.yml", &admin, &keys, &listed);
        let kes = Kes::start(&pki, &config, &[]);
        let stored = std::fs::read_to_string(keys.join(format!("listed-{i}"))).unwrap();
        let form = match shown {
            "v0.17" => stored.starts_with(r#"{"bytes":""#),
            "2023" => stored.starts_with(r#"{"version":"v1","bytes":""#),
            _ => !stored.starts_with('{'),
        };
        assert!(form, "{shown}: {stored}");
        let status = kes.client(&admin).get("/v1/status").json();
        assert_eq!(status["oldest_reader"], shown, "{compat}");
        // Every field the status had before is still there.
        for field in [
            "version",
            "os",
            "arch",
            "uptime",
            "num_cpu",
            "mem_heap_used",
        ] {
            assert!(status.get(field).is_some(), "{field} missing: {status}");
        }
        let banner = kes.stderr();
        assert!(
            banner.contains(&format!("oldest reader: {shown} ")),
            "{banner}"
        );
    }

    for bad in ["2022", "v0.18", "latest", "0.17"] {
        let config = fs_config(
            &pki,
            "config.yml",
            &admin,
            &keys,
            &format!("compat:\n  oldest_reader: {bad}\n"),
        );
        let text = std::fs::read_to_string(&config).unwrap();
        let line = text
            .lines()
            .position(|l| l.contains("oldest_reader"))
            .unwrap()
            + 1;
        let (code, _, stderr) = run_kes(&[
            "server",
            "--config",
            config.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ]);
        assert_ne!(code, 0, "{bad} accepted");
        for needle in [
            format!("config.yml:{line}"),
            format!("'{bad}'"),
            "v0.17, 2023, current".to_string(),
        ] {
            assert!(stderr.contains(&needle), "{bad}: lacks {needle}: {stderr}");
        }
    }
    let config = fs_config(
        &pki,
        "config.yml",
        &admin,
        &keys,
        "compat:\n  oldest_reeder: 2023\n",
    );
    let (code, _, stderr) = run_kes(&["server", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("oldest_reeder"), "{stderr}");
}

/// One vector key imported at a level, and what the server wrote and answered for it.
struct Imported {
    name: String,
    context: String,
    deks: Vec<(String, String)>,
}

/// Every vector master key imported at each level: the stored value is the level's form,
/// generate writes the level's ciphertext form, everything decrypts, `describe` and
/// `hmac` answer as a node of that generation would, and all of it survives a restart.
#[test]
fn vector_keys_at_each_level_through_the_server() {
    let legacy = vectors(LEGACY);
    let current = vectors(CURRENT);
    let pki = Pki::new();
    let admin = pki.client("admin");
    for level in LEVELS {
        let keys = pki.path(&format!("keys-{level}"));
        let config = fs_config(
            &pki,
            &format!("{level}.yml"),
            &admin,
            &keys,
            &format!("compat:\n  oldest_reader: \"{level}\"\n"),
        );
        let mut kes = Kes::start(&pki, &config, &[]);
        let mut c = kes.client(&admin);
        let mut imported = Vec::new();
        for (i, case) in legacy["json"]
            .as_array()
            .unwrap()
            .iter()
            .chain(legacy["msgpack"].as_array().unwrap())
            .chain(current["cases"].as_array().unwrap())
            .enumerate()
        {
            let name = format!("vector-{i}");
            let master = case["master_key_b64"].as_str().unwrap();
            // formats.md §3.6: hex of the first 16 bytes of SHA-256(master key).
            let key_id: String = sha2::Sha256::digest(B64.decode(master).unwrap())[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let cipher = case["key_type"].as_str().unwrap();
            let r = post(
                &mut c,
                &format!("/v1/key/import/{name}"),
                &json!({ "key": master, "cipher": cipher }),
            );
            if level == "v0.17" && cipher == "ChaCha20" {
                // v0.17 keys have no algorithm: the cipher would be lost, so refused…
                assert_eq!(r.status, 406, "{}", r.text());
                assert!(r.message().contains("oldest_reader v0.17"), "{}", r.text());
                // …while the algorithm-less body of 2022-2023 is what such a node took.
                let r = post(
                    &mut c,
                    &format!("/v1/key/import/{name}"),
                    &json!({ "bytes": master }),
                );
                assert_eq!(r.status, 200, "{}", r.text());
            } else {
                assert_eq!(r.status, 200, "{level} {name}: {}", r.text());
            }

            let stored = std::fs::read_to_string(keys.join(&name)).unwrap();
            match level {
                "v0.17" => assert_eq!(stored, format!(r#"{{"bytes":"{master}"}}"#)),
                "2023" => {
                    let value: Value = serde_json::from_str(&stored).unwrap();
                    let legacy_name = if cipher == "AES256" {
                        "AES256-GCM_SHA256"
                    } else {
                        "XCHACHA20-POLY1305"
                    };
                    assert!(
                        stored.starts_with(r#"{"version":"v1","bytes":""#),
                        "{stored}"
                    );
                    assert_eq!(value["bytes"], master);
                    assert_eq!(value["algorithm"], legacy_name);
                    assert_eq!(value["created_by"], admin.identity.as_str());
                    assert!(value["created_at"].as_str().unwrap().ends_with('Z'));
                }
                _ => {
                    assert!(!stored.starts_with('{'), "{stored}");
                    B64.decode(&stored).expect("base64 protobuf");
                }
            }

            // The vector's own ciphertext still decrypts (reading never changes)…
            let r = post(
                &mut c,
                &format!("/v1/key/decrypt/{name}"),
                &json!({ "ciphertext": case["ciphertext_b64"], "context": case["context_b64"] }),
            );
            let binary = case.get("ciphertext_len").is_some();
            if level == "v0.17" && cipher == "ChaCha20" && binary {
                // …except what the algorithm-less import cannot keep: a binary ChaCha20
                // ciphertext names no algorithm, and the key now has none (AES256). The
                // reason a ChaCha20 import is refused at this level.
                assert_eq!(r.status, 400, "{level} {name}: {}", r.text());
            } else {
                assert_eq!(r.status, 200, "{level} {name}: {}", r.text());
                assert_eq!(r.json()["plaintext"], case["plaintext_b64"]);
            }

            let context = B64.encode(format!(r#"{{"bucket":"b{i}","object":"o"}}"#));
            let mut deks = Vec::new();
            for _ in 0..3 {
                let dek = post(
                    &mut c,
                    &format!("/v1/key/generate/{name}"),
                    &json!({ "context": context }),
                )
                .json();
                let ciphertext = B64.decode(dek["ciphertext"].as_str().unwrap()).unwrap();
                match level {
                    "v0.17" => {
                        let value: Value = serde_json::from_slice(&ciphertext).unwrap();
                        // v0.17's field order, as Go marshals its struct.
                        let text = String::from_utf8(ciphertext.clone()).unwrap();
                        let at: Vec<_> = ["aead", "id", "iv", "nonce", "bytes"]
                            .iter()
                            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
                            .collect();
                        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
                        assert!(text.starts_with(r#"{"aead":""#), "{text}");
                        assert_eq!(value["id"], key_id.as_str());
                        // Stored without algorithm: the AES form, readable everywhere.
                        assert_eq!(value["aead"], "AES-256-GCM-HMAC-SHA-256");
                    }
                    "2023" => {
                        assert_eq!(ciphertext[0], 0x95);
                        assert!(
                            ciphertext[1..].starts_with(b"\xb1AES256-GCM_SHA256")
                                || ciphertext[1..].starts_with(b"\xb2XCHACHA20-POLY1305")
                        );
                        let at = 2 + ciphertext[1] as usize - 0xa0;
                        assert_eq!(ciphertext[at], 0xd9);
                        assert_eq!(ciphertext[at + 1], 32);
                        assert_eq!(&ciphertext[at + 2..at + 34], key_id.as_bytes());
                    }
                    _ => assert_eq!(ciphertext.len(), 32 + 44),
                }
                deks.push((
                    dek["plaintext"].as_str().unwrap().to_string(),
                    dek["ciphertext"].as_str().unwrap().to_string(),
                ));
            }
            imported.push(Imported {
                name,
                context,
                deks,
            });
        }
        check_level_answers(&mut c, level, &imported, &admin);

        drop(c);
        kes.signal(libc::SIGTERM);
        kes.wait_exit(std::time::Duration::from_secs(5))
            .expect("stops");
        let kes = Kes::start(&pki, &config, &[]);
        let mut c = kes.client(&admin);
        check_level_answers(&mut c, level, &imported, &admin);
    }
}

fn check_level_answers(c: &mut Client, level: &str, imported: &[Imported], admin: &Credential) {
    for key in imported {
        for (plaintext, ciphertext) in &key.deks {
            let r = post(
                c,
                &format!("/v1/key/decrypt/{}", key.name),
                &json!({ "ciphertext": ciphertext, "context": key.context }),
            );
            assert_eq!(r.status, 200, "{level} {}: {}", key.name, r.text());
            assert_eq!(r.json()["plaintext"], plaintext.as_str());
        }
        let info = c.get(&format!("/v1/key/describe/{}", key.name)).json();
        let hmac = c.request(
            "PUT",
            &format!("/v1/key/hmac/{}", key.name),
            json!({ "message": "aGk=" }).to_string().as_bytes(),
        );
        match level {
            "v0.17" => {
                // What a 2023 node answers for a {"bytes"} key: no algorithm, Go's zero
                // time, no creator.
                assert!(info.get("algorithm").is_none(), "{info}");
                assert_eq!(info["created_at"], "0001-01-01T00:00:00Z");
                assert!(info.get("created_by").is_none(), "{info}");
            }
            "2023" => {
                let algorithm = info["algorithm"].as_str().unwrap();
                assert!(
                    ["AES256-GCM_SHA256", "XCHACHA20-POLY1305"].contains(&algorithm),
                    "{info}"
                );
                assert_eq!(info["created_by"], admin.identity.as_str());
            }
            _ => assert!(info["algorithm"].is_string(), "{info}"),
        }
        assert_eq!(info["id"].as_str().unwrap().len(), 32);
        if level == "current" {
            assert_eq!(hmac.status, 200, "{}", hmac.text());
        } else {
            // JSON-stored keys carry no HMAC key: the last release's answer.
            assert_eq!(hmac.status, 409, "{}", hmac.text());
            assert_eq!(hmac.message(), "key does not support HMAC");
        }
    }
}

/// A keystore holding every stored-key vector, plus one value that is no KES key.
fn write_vector_keys(put: &mut dyn FnMut(&str, &str)) -> Vec<String> {
    let stored = vectors(STORED);
    let mut secrets = Vec::new();
    for (i, case) in stored["cases"].as_array().unwrap().iter().enumerate() {
        let value = case["stored_value"].as_str().unwrap();
        put(&format!("key-{i}"), value);
        secrets.push(value.to_string());
    }
    put("not-a-key", "hello");
    secrets
}

fn check_survey_output(out: &str, secrets: &[String]) {
    for needle in [
        "8 keys",
        "2  JSON, no algorithm",
        "2  v1 JSON, 2022 algorithm names",
        "1  v1 JSON, 2023-10 algorithm names",
        "2  base64 protobuf",
        "1  not a KES key",
        "reads every key: 2024-02-29T08-12-28Z",
        "compat.oldest_reader in the config: 2023; keys that generation cannot read: 3",
    ] {
        assert!(out.contains(needle), "lacks {needle:?}:\n{out}");
    }
    let stored = vectors(STORED);
    for secret in secrets {
        assert!(!out.contains(secret.as_str()), "stored value printed");
    }
    for case in stored["cases"].as_array().unwrap() {
        let key = case["parsed"]["key_b64"].as_str().unwrap();
        assert!(!out.contains(key), "key material printed");
    }
}

#[test]
fn survey_counts_forms_in_fs_and_ciphertrust_keystores() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let secrets = write_vector_keys(&mut |name, value| {
        std::fs::write(keys.join(name), value).unwrap();
    });
    let before: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let config = dir.path().join("fs.yml");
    std::fs::write(
        &config,
        format!(
            "keystore:\n  fs:\n    path: {}\ncompat:\n  oldest_reader: 2023\n",
            keys.display()
        ),
    )
    .unwrap();
    let (code, out, err) = run_kes(&["survey", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    check_survey_output(&out, &secrets);
    // Read-only.
    let after: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(before, after);

    // A pattern, --keys and --json.
    let (code, out, err) = run_kes(&[
        "survey",
        "-c",
        config.to_str().unwrap(),
        "--json",
        "key-[46]",
    ]);
    assert_eq!(code, 0, "{err}");
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["keys"], 2);
    assert_eq!(value["oldest_go_release"], "v0.17.0 (or older)");
    assert_eq!(value["unreadable_at_oldest_reader"], 0);
    let (_, out, _) = run_kes(&["survey", "-c", config.to_str().unwrap(), "--keys"]);
    assert!(out.contains("  key-0  base64 protobuf"), "{out}");

    // The same keys in CipherTrust.
    let sim = CtmSim::start();
    write_vector_keys(&mut |name, value| sim.insert_secret(name, value));
    let config = dir.path().join("ctm.yml");
    std::fs::write(
        &config,
        format!(
            "keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH_TOKEN}\n        domain: \"\"\n      tls:\n        ca: {}\ncompat:\n  oldest_reader: 2023\n",
            sim.endpoint(),
            sim.ca_file().display()
        ),
    )
    .unwrap();
    let (code, out, err) = run_kes(&["survey", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    check_survey_output(&out, &secrets);
    assert!(!out.contains(REFRESH_TOKEN) && !err.contains(REFRESH_TOKEN));
    assert_eq!(sim.secret_count(), 8);

    let (code, _, err) = run_kes(&["survey"]);
    assert_ne!(code, 0);
    assert!(err.contains("--config"), "{err}");
}

/// `kes migrate` into a keystore whose config sets `compat.oldest_reader` writes every
/// key in a form that generation reads, and refuses what it cannot hold.
#[test]
fn migrate_writes_what_the_targets_oldest_reader_reads() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    write_vector_keys(&mut |name, value| {
        if name != "not-a-key" {
            std::fs::write(source.join(name), value).unwrap();
        }
    });
    let config = |name: &str, keys: &Path, compat: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("keystore:\n  fs:\n    path: {}\n{compat}", keys.display()),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let from = config("from.yml", &source, "");
    let target = dir.path().join("target-2023");
    let to = config("to.yml", &target, "compat:\n  oldest_reader: 2023\n");
    let (code, out, err) = run_kes(&["migrate", "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Migrated 7 keys in ")
            && out.contains(
                "  rewritten         3  of the copied and replaced, for compat.oldest_reader 2023\n"
            ),
        "{out}"
    );
    let (code, out, err) = run_kes(&["survey", "--config", &to]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("keys that generation cannot read: 0"), "{out}");
    assert!(
        out.contains("reads every key: v0.19.2 (2022-04-07)"),
        "{out}"
    );
    // Keys 2-4 and 6 were readable as they were and are copied byte for byte.
    for i in [2, 3, 4, 6] {
        assert_eq!(
            std::fs::read(source.join(format!("key-{i}"))).unwrap(),
            std::fs::read(target.join(format!("key-{i}"))).unwrap()
        );
    }

    // v0.17 cannot hold a ChaCha20 key (vector 1 is one): refused by name.
    let to = config(
        "to-v017.yml",
        &dir.path().join("target-v017"),
        "compat:\n  oldest_reader: v0.17\n",
    );
    let (code, _, err) = run_kes(&["migrate", "--from", &from, "--to", &to]);
    assert_ne!(code, 0);
    assert!(
        err.contains("key 'key-1' is a ChaCha20 key") && err.contains("v0.17"),
        "{err}"
    );
    let to = config(
        "to-v017b.yml",
        &dir.path().join("target-v017b"),
        "compat:\n  oldest_reader: v0.17\n",
    );
    let (code, out, err) = run_kes(&["migrate", "--from", &from, "--to", &to, "key-[0246]"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Migrated 4 keys in ") && out.contains("  rewritten         2  "),
        "{out}"
    );
    let (_, out, _) = run_kes(&["survey", "--config", &to]);
    assert!(out.contains("reads every key: v0.17.0"), "{out}");
}
