//! The key API through the real binary over real mTLS, with the fs keystore.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use common::{Client, Credential, Kes, Pki};

const DECRYPT_ERROR: &str = "decryption failed: ciphertext is not authentic";

struct Setup {
    pki: Pki,
    admin: Credential,
    config: PathBuf,
    keys_dir: PathBuf,
}

fn setup(extra: &str) -> Setup {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let keys_dir = pki.path("keys");
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\nkeystore:\n  fs:\n    path: {}\n{extra}",
            admin.identity,
            keys_dir.display()
        ),
    );
    Setup {
        pki,
        admin,
        config,
        keys_dir,
    }
}

fn post_json(c: &mut Client, path: &str, body: &Value) -> common::Resp {
    c.post(path, body.to_string().as_bytes())
}

#[test]
fn key_lifecycle() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);

    assert_eq!(c.post("/v1/key/create/my-key", b"").status, 200);
    // PUT works as well as POST.
    assert_eq!(c.request("PUT", "/v1/key/create/my-key-2", b"").status, 200);
    let again = c.post("/v1/key/create/my-key", b"");
    assert_eq!(
        (again.status, again.message().as_str()),
        (400, "key already exists")
    );

    let info = c.get("/v1/key/describe/my-key").json();
    assert_eq!(info["name"], "my-key");
    assert!(
        ["AES256-GCM_SHA256", "XCHACHA20-POLY1305"].contains(&info["algorithm"].as_str().unwrap())
    );
    assert_eq!(info["created_by"], s.admin.identity.as_str());
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    // The stored file is the last Go release's form, private to the owner.
    let stored = std::fs::read(s.keys_dir.join("my-key")).unwrap();
    let parsed = kes::crypto::KeyVersion::parse(&stored).unwrap();
    assert!(parsed.has_hmac());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(s.keys_dir.join("my-key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // generate → decrypt, without and with context.
    for context in [None, Some(B64.encode(br#"{"MinIO":"bucket/object"}"#))] {
        let body = match &context {
            Some(ctx) => json!({ "context": ctx }),
            None => json!({}),
        };
        let dek = post_json(&mut c, "/v1/key/generate/my-key", &body).json();
        let plaintext = dek["plaintext"].as_str().unwrap().to_string();
        assert_eq!(B64.decode(&plaintext).unwrap().len(), 32);
        let mut req = json!({ "ciphertext": dek["ciphertext"] });
        if let Some(ctx) = &context {
            req["context"] = json!(ctx);
        }
        let out = post_json(&mut c, "/v1/key/decrypt/my-key", &req);
        assert_eq!(out.status, 200, "{}", out.text());
        assert_eq!(out.json()["plaintext"], plaintext.as_str());
    }
    // generate without any body: a DEK like any other.
    let dek = c.post("/v1/key/generate/my-key", b"");
    assert_eq!(dek.status, 200, "{}", dek.text());
    let plaintext = dek.json()["plaintext"].as_str().unwrap().to_string();
    assert_eq!(B64.decode(&plaintext).unwrap().len(), 32);
    let out = post_json(
        &mut c,
        "/v1/key/decrypt/my-key",
        &json!({ "ciphertext": dek.json()["ciphertext"] }),
    );
    assert_eq!(out.json()["plaintext"], plaintext.as_str());

    // encrypt → decrypt.
    let ct = post_json(
        &mut c,
        "/v1/key/encrypt/my-key",
        &json!({ "plaintext": B64.encode(b"hello") }),
    )
    .json();
    let pt = post_json(
        &mut c,
        "/v1/key/decrypt/my-key",
        &json!({ "ciphertext": ct["ciphertext"] }),
    )
    .json();
    assert_eq!(pt["plaintext"], B64.encode(b"hello"));

    // hmac is deterministic per key.
    let h1 = c
        .request(
            "PUT",
            "/v1/key/hmac/my-key",
            json!({ "message": B64.encode(b"m") })
                .to_string()
                .as_bytes(),
        )
        .json();
    let h2 = c
        .request(
            "PUT",
            "/v1/key/hmac/my-key",
            json!({ "message": B64.encode(b"m") })
                .to_string()
                .as_bytes(),
        )
        .json();
    assert_eq!(h1["hmac"], h2["hmac"]);
    assert_eq!(B64.decode(h1["hmac"].as_str().unwrap()).unwrap().len(), 32);

    // Listing: NDJSON that both SDK generations read.
    let list = c.get("/v1/key/list/my-*");
    assert_eq!(list.header("content-type"), Some("application/x-ndjson"));
    let names: Vec<String> = list.listed_names().into_iter().collect();
    assert_eq!(names, ["my-key", "my-key-2"]);
    assert_eq!(c.get("/v1/key/list").text().lines().count(), 2);

    assert_eq!(
        c.request("DELETE", "/v1/key/delete/my-key", b"").status,
        200
    );
    let gone = c.get("/v1/key/describe/my-key");
    assert_eq!(
        (gone.status, gone.message().as_str()),
        (404, "key does not exist")
    );
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/my-key", b"").status,
        404
    );
    assert!(!s.keys_dir.join("my-key").exists());
}

#[test]
fn bad_ciphertexts_and_bodies_get_the_spec_errors_never_500() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let ctx = B64.encode(b"ctx");
    let dek = post_json(&mut c, "/v1/key/generate/k", &json!({ "context": ctx })).json();
    let ct = B64.decode(dek["ciphertext"].as_str().unwrap()).unwrap();

    let mut tampered = ct.clone();
    tampered[3] ^= 1;
    let cases = [
        json!({ "ciphertext": dek["ciphertext"], "context": B64.encode(b"other") }),
        json!({ "ciphertext": dek["ciphertext"] }),
        json!({ "ciphertext": B64.encode(&tampered), "context": ctx }),
        json!({ "ciphertext": B64.encode(&ct[..ct.len() - 1]), "context": ctx }),
        json!({ "ciphertext": B64.encode(&ct[..20]), "context": ctx }),
        json!({ "ciphertext": "" }),
    ];
    for case in cases {
        let r = post_json(&mut c, "/v1/key/decrypt/k", &case);
        assert_eq!(
            (r.status, r.message().as_str()),
            (400, DECRYPT_ERROR),
            "{case}"
        );
    }
    for body in [
        &b"not json"[..],
        br#"{"ciphertext":"***"}"#,
        br#"{"ciphertext":5}"#,
        b"[]",
    ] {
        let r = c.post("/v1/key/decrypt/k", body);
        assert_eq!(
            (r.status, r.message().as_str()),
            (400, "invalid request body")
        );
    }
    let r = c.post(
        "/v1/key/decrypt/missing",
        json!({ "ciphertext": dek["ciphertext"] })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "key does not exist")
    );
    for bad in ["..%2F..%2Fetc", "a.b", &"x".repeat(81), "with%20space"] {
        let r = c.post(&format!("/v1/key/create/{bad}"), b"");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // Nothing escaped the keystore directory.
    let files: Vec<_> = std::fs::read_dir(&s.keys_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["k"]);
    let r = c.post("/v1/key/import/x", br#"{"key":"AAAA","cipher":"AES256"}"#);
    assert_eq!(
        (r.status, r.message().as_str()),
        (406, "invalid key size for 'AES256'")
    );
    let r = c.post("/v1/key/import/x", br#"{"key":"AAAA"}"#);
    assert_eq!(
        (r.status, r.message().as_str()),
        (406, "algorithm '' is not supported")
    );
}

#[test]
fn imported_vector_keys_decrypt_the_vector_ciphertexts() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    let current: Value =
        serde_json::from_str(include_str!("vectors/ciphertext-current.json")).unwrap();
    let legacy: Value =
        serde_json::from_str(include_str!("vectors/ciphertext-legacy.json")).unwrap();
    let mut cases: Vec<&Value> = current["cases"].as_array().unwrap().iter().collect();
    cases.extend(legacy["json"].as_array().unwrap());
    cases.extend(legacy["msgpack"].as_array().unwrap());
    for (i, case) in cases.into_iter().enumerate() {
        let name = format!("vector-{i}");
        let cipher = if case["key_type"] == "AES256" {
            "AES256"
        } else {
            "ChaCha20"
        };
        // The last release's import body and the 2023 one, alternately.
        let body = if i % 2 == 0 {
            json!({ "key": case["master_key_b64"], "cipher": cipher })
        } else {
            json!({ "bytes": case["master_key_b64"], "algorithm": if cipher == "AES256" { "AES256-GCM_SHA256" } else { "XCHACHA20-POLY1305" } })
        };
        let r = post_json(&mut c, &format!("/v1/key/import/{name}"), &body);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let mut req = json!({ "ciphertext": case["ciphertext_b64"] });
        if !case["context_b64"].is_null() {
            req["context"] = case["context_b64"].clone();
        }
        let r = post_json(&mut c, &format!("/v1/key/decrypt/{name}"), &req);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json()["plaintext"], case["plaintext_b64"], "{name}");
    }
}

#[test]
fn bulk_decrypt_of_1000_items() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    assert_eq!(c.post("/v1/key/create/bulk", b"").status, 200);
    let mut items = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let ctx = B64.encode(format!("object-{i}"));
        let dek = post_json(&mut c, "/v1/key/generate/bulk", &json!({ "context": ctx })).json();
        items.push(json!({ "ciphertext": dek["ciphertext"], "context": ctx }));
        expected.push(dek["plaintext"].clone());
    }
    let r = c.post(
        "/v1/key/bulk/decrypt/bulk",
        Value::Array(items.clone()).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plaintext"].clone())
        .collect();
    assert_eq!(got, expected);
    items.push(items[0].clone());
    let r = c.post(
        "/v1/key/bulk/decrypt/bulk",
        Value::Array(items).to_string().as_bytes(),
    );
    assert_eq!(
        (r.status, r.message().as_str()),
        (400, "too many ciphertexts")
    );
}

#[test]
fn listing_3000_keys_returns_all_and_keys_survive_a_restart() {
    let s = setup("");
    // Keys written straight into the directory, as a Go KES fs keystore leaves them.
    std::fs::create_dir_all(&s.keys_dir).unwrap();
    let stored: Value = serde_json::from_str(include_str!("vectors/stored-keys.json")).unwrap();
    for (i, case) in stored["cases"].as_array().unwrap().iter().enumerate() {
        std::fs::write(
            s.keys_dir.join(format!("go-key-{i}")),
            case["stored_value"].as_str().unwrap(),
        )
        .unwrap();
    }
    for i in 0..3000 {
        std::fs::write(
            s.keys_dir.join(format!("key-{i:05}")),
            stored["cases"][0]["stored_value"].as_str().unwrap(),
        )
        .unwrap();
    }
    let mut kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    let names = |c: &mut Client, path: &str| -> Vec<String> { c.get(path).listed_names() };
    let all = names(&mut c, "/v1/key/list/key-*");
    assert_eq!(all.len(), 3000);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 3000);
    assert_eq!(names(&mut c, "/v1/key/list/*").len(), 3000 + 7);
    // Every Go-written form is readable.
    for i in 0..7 {
        let r = c.get(&format!("/v1/key/describe/go-key-{i}"));
        assert_eq!(r.status, 200, "go-key-{i}: {}", r.text());
    }
    let dek = post_json(&mut c, "/v1/key/generate/go-key-0", &json!({}));
    assert_eq!(dek.status, 200, "{}", dek.text());
    let dek = dek.json();
    assert!(
        dek["plaintext"].is_string() && dek["ciphertext"].is_string(),
        "{dek}"
    );
    drop(c);
    kes.signal(libc::SIGTERM);
    kes.wait_exit(std::time::Duration::from_secs(5))
        .expect("stops");

    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    let r = post_json(
        &mut c,
        "/v1/key/decrypt/go-key-0",
        &json!({ "ciphertext": dek["ciphertext"] }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], dek["plaintext"]);
}

/// 50 keys on disk, none cached (the server has just started): 50 first-time generates,
/// all at once, go to the two pool workers and all succeed, each loading its key once;
/// decrypting with them afterwards is answered from the cache.
#[test]
fn fifty_concurrent_first_uses_of_uncached_keys_all_succeed() {
    let s = setup("");
    std::fs::create_dir_all(&s.keys_dir).unwrap();
    let stored: Value = serde_json::from_str(include_str!("vectors/stored-keys.json")).unwrap();
    for i in 0..50 {
        std::fs::write(
            s.keys_dir.join(format!("cold-{i:02}")),
            stored["cases"][0]["stored_value"].as_str().unwrap(),
        )
        .unwrap();
    }
    let kes = Kes::start(&s.pki, &s.config, &["--loops", "1", "--workers", "2"]);
    let mut admin = kes.client(&s.admin);
    let misses = |c: &mut Client| common::metric(&c.get("/v1/metrics").text(), "kes_cache_misses");
    let hits = |c: &mut Client| common::metric(&c.get("/v1/metrics").text(), "kes_cache_hits");
    let misses_before = misses(&mut admin);

    let start = std::sync::Barrier::new(50);
    let deks: Vec<(String, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (mut c, start) = (kes.client(&s.admin), &start);
                scope.spawn(move || {
                    c.connect().unwrap();
                    start.wait();
                    let name = format!("cold-{i:02}");
                    let r = post_json(&mut c, &format!("/v1/key/generate/{name}"), &json!({}));
                    assert_eq!(r.status, 200, "first generate with {name}: {}", r.text());
                    (name, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        misses(&mut admin) - misses_before,
        50.0,
        "each key is loaded from the keystore once"
    );

    let hits_before = hits(&mut admin);
    for (name, dek) in &deks {
        let r = post_json(
            &mut admin,
            &format!("/v1/key/decrypt/{name}"),
            &json!({ "ciphertext": dek["ciphertext"] }),
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json()["plaintext"], dek["plaintext"], "{name}");
    }
    assert_eq!(
        misses(&mut admin) - misses_before,
        50.0,
        "no key loaded again"
    );
    assert!(hits(&mut admin) - hits_before >= 50.0);
    let distinct: HashSet<&str> = deks
        .iter()
        .map(|(_, dek)| dek["plaintext"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 50, "every data key is new");
}

#[test]
fn sixteen_concurrent_creates_of_one_name_make_exactly_one_key() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let results: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let mut c = kes.client(&s.admin);
                scope.spawn(move || c.post("/v1/key/create/contended", b"").status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|&&s| s == 200).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|&&s| s == 400).count(),
        15,
        "{results:?}"
    );
    let files: Vec<_> = std::fs::read_dir(&s.keys_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["contended"]);
}

#[test]
fn deks_never_repeat_across_server_processes() {
    let s = setup("");
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let kes = Kes::start(&s.pki, &s.config, &[]);
        let mut c = kes.client(&s.admin);
        let _ = c.post("/v1/key/create/k", b"");
        for _ in 0..200 {
            let dek = c.post("/v1/key/generate/k", b"{}").json();
            assert!(
                seen.insert(dek["plaintext"].as_str().unwrap().to_string()),
                "a DEK repeated"
            );
        }
    }
}

#[test]
fn keys_section_creates_keys_before_serving_and_failures_stop_startup() {
    let s = setup("keys:\n- name: my-first-key\n- name: my-second-key\n");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let mut c = kes.client(&s.admin);
    assert_eq!(c.get("/v1/key/describe/my-first-key").status, 200);
    assert_eq!(c.get("/v1/key/describe/my-second-key").status, 200);
    drop(kes);

    // A listed key the keystore cannot create stops startup with an error naming the
    // key, and nothing of it is written.
    let s = setup("keys:\n- name: my-first-key\n- name: \"my doomed key\"\n");
    let err = match Kes::try_start(&s.pki, &s.config, &[]) {
        Ok(_) => panic!("kes started although a listed key could not be created"),
        Err(err) => err,
    };
    assert!(err.contains("exited with"), "{err}");
    assert!(
        err.contains("my doomed key"),
        "message does not name the key: {err}"
    );
    let written: Vec<_> = std::fs::read_dir(&s.keys_dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        !written
            .iter()
            .any(|n| n.to_string_lossy().contains("doomed")),
        "{written:?}"
    );
}

#[test]
fn policies_apply_to_key_routes_by_name() {
    let pki = Pki::new();
    let (admin, app, minio) = (pki.client("admin"), pki.client("app"), pki.client("minio"));
    let config = pki.config(
        "config.yml",
        &format!(
            "root: disabled\npolicy:\n  my-app:\n    allow:\n    - /v1/key/create/my-app*\n    - /v1/key/generate/my-app*\n    - /v1/key/decrypt/my-app*\n    identities:\n    - {}\n  minio-server:\n    allow:\n    - /v1/key/create/*\n    - /v1/key/generate/*\n    - /v1/key/decrypt/*\n    - /v1/key/bulk/decrypt\n    - /v1/key/list/*\n    - /v1/status\n    deny:\n    - /v1/key/*/my-app-internal*\n    identities:\n    - {}\nkeystore:\n  fs:\n    path: {}\n",
            app.identity,
            minio.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &["--auth=off"]);
    let mut a = kes.client(&app);
    assert_eq!(a.post("/v1/key/create/my-app-key", b"").status, 200);
    let dek = a.post("/v1/key/generate/my-app-key", b"{}").json();
    assert_eq!(
        a.post(
            "/v1/key/decrypt/my-app-key",
            json!({ "ciphertext": dek["ciphertext"] })
                .to_string()
                .as_bytes()
        )
        .status,
        200
    );
    assert_eq!(a.post("/v1/key/create/other", b"").status, 403);
    assert_eq!(a.get("/v1/key/describe/my-app-key").status, 403);
    assert_eq!(
        a.request("DELETE", "/v1/key/delete/my-app-key", b"").status,
        403
    );

    let mut m = kes.client(&minio);
    assert_eq!(m.post("/v1/key/create/minio-key", b"").status, 200);
    let dek = m.post("/v1/key/generate/minio-key", b"{}").json();
    let items = json!([{ "ciphertext": dek["ciphertext"] }]);
    let bulk = m.post(
        "/v1/key/bulk/decrypt/minio-key",
        items.to_string().as_bytes(),
    );
    assert_eq!(bulk.status, 200, "{}", bulk.text());
    assert_eq!(bulk.json(), json!([{ "plaintext": dek["plaintext"] }]));
    let list = m.get("/v1/key/list/*");
    assert_eq!(list.status, 200, "{}", list.text());
    let listed: HashSet<String> = list.listed_names().into_iter().collect();
    assert_eq!(
        listed,
        HashSet::from(["my-app-key".to_string(), "minio-key".to_string()])
    );
    assert_eq!(m.post("/v1/key/create/my-app-internal-1", b"").status, 403);
    assert_eq!(
        m.post("/v1/key/generate/my-app-internal-1", b"{}").status,
        403
    );
    // `root: disabled`: no admin at all.
    assert_eq!(kes.client(&admin).get("/v1/status").status, 403);
}

/// Thousands of DEKs generated at once on every event loop (connections are spread
/// over the loops in turn, and each loop thread has its own random pool) are pairwise
/// distinct, and so are their ciphertexts.
#[test]
fn thousands_of_concurrent_deks_on_all_loops_are_pairwise_distinct() {
    let s = setup("");
    let kes = Kes::start(&s.pki, &s.config, &["--loops", "4"]);
    assert_eq!(
        kes.client(&s.admin).post("/v1/key/create/k", b"").status,
        200
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let mut c = kes.client(&s.admin);
            std::thread::spawn(move || {
                (0..500)
                    .map(|_| {
                        let r = c.post("/v1/key/generate/k", b"{}");
                        assert_eq!(r.status, 200, "{}", r.text());
                        let dek = r.json();
                        (
                            dek["plaintext"].as_str().unwrap().to_string(),
                            dek["ciphertext"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let (mut plaintexts, mut ciphertexts) = (HashSet::new(), HashSet::new());
    for w in workers {
        for (plaintext, ciphertext) in w.join().unwrap() {
            assert_eq!(B64.decode(&plaintext).unwrap().len(), 32);
            assert!(plaintexts.insert(plaintext), "a DEK repeated");
            assert!(ciphertexts.insert(ciphertext), "a ciphertext repeated");
        }
    }
    assert_eq!(plaintexts.len(), 4000);
}

/// A key listed under `keys:` that exists but cannot be used (a directory, or a file
/// that holds no key, under its name) stops startup naming the key, instead of letting
/// the server start and fail at the key's first use. An existing good key is kept.
#[test]
fn keys_section_refuses_an_existing_name_that_holds_no_usable_key() {
    for what in ["a directory", "a file of garbage"] {
        let s = setup("keys:\n- name: listed\n");
        std::fs::create_dir_all(&s.keys_dir).unwrap();
        let planted = s.keys_dir.join("listed");
        if what == "a directory" {
            std::fs::create_dir(&planted).unwrap();
        } else {
            std::fs::write(&planted, b"zq-garbage-zq").unwrap();
        }
        let err = match Kes::try_start(&s.pki, &s.config, &[]) {
            Ok(_) => panic!("kes started although 'listed' is {what}"),
            Err(err) => err,
        };
        assert!(err.contains("exited with"), "{what}: {err}");
        assert!(
            err.contains("'listed'"),
            "{what}: message does not name the key: {err}"
        );
        // What the file holds is never echoed.
        assert!(!err.contains("zq-garbage-zq"), "{what}: {err}");
        println!("{what}: {}", err.lines().last().unwrap_or(""));
    }

    // A good key already there is used as it is.
    let s = setup("keys:\n- name: listed\n");
    let kes = Kes::start(&s.pki, &s.config, &[]);
    let before = std::fs::read(s.keys_dir.join("listed")).unwrap();
    drop(kes);
    let kes = Kes::start(&s.pki, &s.config, &[]);
    assert_eq!(std::fs::read(s.keys_dir.join("listed")).unwrap(), before);
    let mut c = kes.client(&s.admin);
    assert_eq!(c.post("/v1/key/generate/listed", b"{}").status, 200);
}
