//! Resident master keys (`master_keys: resident`): the real `kes` binary over mTLS in
//! front of the CipherTrust simulator, whose keys2 and crypto endpoints do real
//! AES-256-GCM. Lifecycle, rotation under load, wrong contexts, a secret-backed key beside
//! a resident one, CipherTrust down, and that no export route is ever called.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;
#[path = "common/resident.rs"]
mod resident;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use common::{Kes, Pki, Resp};
use ctm_sim::Route;
use resident::{ALL_KEY_ROUTES, Mode, Setup, decrypt, envelope_version, generate};

in_both_modes!(
    resident_key_lifecycle,
    wrong_context_version_or_bytes_are_not_authentic,
    rotation_under_load_loses_nothing,
    a_secret_backed_key_and_a_resident_key_on_one_server,
    cipher_trust_down_means_clear_errors_and_nothing_to_decrypt_with,
    a_cm_call_that_hangs_holds_a_pool_worker_not_the_event_loop,
    rotate_is_policy_checked_and_listed,
    a_listed_resident_key_is_created_once_and_found_at_the_next_start,
);

fn resident_key_lifecycle(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);

    assert_eq!(c.post("/v1/key/create/my-key", b"").status, 200);
    // A non-exportable CM key for encrypt and decrypt only; no secret.
    assert_eq!(s.sim.key_versions("my-key"), [(0, true, 12)]);
    assert_eq!(s.sim.secret_count(), 0);
    let again = c.post("/v1/key/create/my-key", b"");
    assert_eq!(
        (again.status, again.message()),
        (400, "key already exists".into())
    );

    let described = c.get("/v1/key/describe/my-key");
    assert_eq!(described.status, 200, "{}", described.text());
    let v = described.json();
    assert_eq!(
        (
            v["name"].as_str(),
            v["resident"].as_bool(),
            v["version"].as_u64()
        ),
        (Some("my-key"), Some(true), Some(0))
    );

    // Generate: a fresh data key sealed by CM, bound to the context.
    let (plain, sealed) = generate(&mut c, "my-key", "bucket/object").unwrap();
    assert_eq!(B64.decode(&plain).unwrap().len(), 32);
    assert_eq!(envelope_version(&sealed), 0);
    let r = decrypt(&mut c, "my-key", &sealed, "bucket/object");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], plain.as_str());

    // The key cache holds the key's facts: a generate is one CM call, nothing else, on
    // a connection kept alive (one client, so one pool worker at a time: one connection).
    let (encrypts, lookups) = (s.sim.count(Route::Encrypt), s.sim.count(Route::KeyGet));
    let connections = s.sim.connections_opened();
    for _ in 0..50 {
        generate(&mut c, "my-key", "ctx").unwrap();
    }
    assert_eq!(s.sim.count(Route::Encrypt), encrypts + 50);
    assert_eq!(s.sim.count(Route::KeyGet), lookups);
    assert!(
        s.sim.connections_opened() <= connections + 1,
        "{} new connections to CM for 50 generates",
        s.sim.connections_opened() - connections
    );

    // Encrypt and decrypt of a message.
    let r = c.post(
        "/v1/key/encrypt/my-key",
        json!({ "plaintext": B64.encode("hello"), "context": B64.encode("c") })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let message = B64
        .decode(r.json()["ciphertext"].as_str().unwrap())
        .unwrap();
    let r = decrypt(&mut c, "my-key", &message, "c");
    assert_eq!(r.json()["plaintext"], B64.encode("hello").as_str());

    // Bulk decrypt: every item, in order.
    let items: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| generate(&mut c, "my-key", &format!("ctx-{i}")).unwrap())
        .collect();
    let body: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, (_, ct))| json!({ "ciphertext": B64.encode(ct), "context": B64.encode(format!("ctx-{i}")) }))
        .collect();
    let r = c.post(
        "/v1/key/bulk/decrypt/my-key",
        json!(body).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    for (i, (plain, _)) in items.iter().enumerate() {
        assert_eq!(answers[i]["plaintext"], plain.as_str());
    }
    // No item, one (no helper thread wanted) and two (one helper): the same answers.
    for n in [0, 1, 2] {
        let r = c.post(
            "/v1/key/bulk/decrypt/my-key",
            json!(body[..n]).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{n} items: {}", r.text());
        let plaintexts: Vec<_> = items[..n].iter().map(|(plain, _)| plain.as_str()).collect();
        let answered: Vec<_> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["plaintext"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(answered, plaintexts, "{n} items");
    }

    // HMAC and import are refused with the reason.
    let r = c.post(
        "/v1/key/hmac/my-key",
        json!({ "message": B64.encode("m") }).to_string().as_bytes(),
    );
    assert_eq!(
        (r.status, r.message()),
        (501, "HMAC is not supported for resident keys".into())
    );
    let r = c.post(
        "/v1/key/import/other",
        json!({ "key": B64.encode([7u8; 32]), "cipher": "AES256" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(
        r.message()
            .contains("not supported with master_keys: resident"),
        "{}",
        r.text()
    );
    assert!(s.sim.key_versions("other").is_empty() && s.sim.secret_count() == 0);

    // List and status.
    assert_eq!(c.post("/v1/key/create/my-key-2", b"").status, 200);
    let r = c.get("/v1/key/list/my-*");
    assert_eq!(r.status, 200);
    let names: Vec<String> = r.listed_names().into_iter().collect();
    assert_eq!(names, ["my-key", "my-key-2"]);
    assert_eq!(c.get("/v1/status").status, 200);

    // Never an export, of a secret or a key.
    assert_eq!(s.sim.export_count(), 0);

    // Delete: gone from CM, and from the cache.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/my-key", b"").status,
        200
    );
    assert!(s.sim.key_versions("my-key").is_empty());
    assert_eq!(c.get("/v1/key/describe/my-key").status, 404);
    // A key deleted in CM behind kes's back: the generate that finds it gone makes kes
    // forget its cached facts, so describe says so too.
    generate(&mut c, "my-key-2", "ctx").unwrap();
    assert_eq!(c.get("/v1/key/describe/my-key-2").status, 200);
    s.sim.remove_key("my-key-2");
    assert_eq!(generate(&mut c, "my-key-2", "ctx").unwrap_err().status, 404);
    assert_eq!(c.get("/v1/key/describe/my-key-2").status, 404);
    // (Not resident any more, the name is looked up among the secrets too.)
    assert_eq!(
        decrypt(&mut c, "my-key", &sealed, "bucket/object").status,
        404
    );
    assert_eq!(s.sim.count(Route::KeyExport), 0);
}

fn wrong_context_version_or_bytes_are_not_authentic(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("gemalto.keysecure");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "right").unwrap();
    let not_authentic = |what: &str, r: Resp| {
        assert_eq!(
            (r.status, r.message()),
            (400, "decryption failed: ciphertext is not authentic".into()),
            "{what}: {}",
            r.text()
        );
    };
    not_authentic("sealed wrong", decrypt(&mut c, "k", &sealed, "wrong"));
    not_authentic("sealed ", decrypt(&mut c, "k", &sealed, ""));
    // A flipped tag byte, a flipped ciphertext byte.
    let mut bad = sealed.clone();
    bad[4 + 4 + 1 + 12 + 1] ^= 1;
    not_authentic("bad right", decrypt(&mut c, "k", &bad, "right"));
    let mut bad = sealed.clone();
    *bad.last_mut().unwrap() ^= 1;
    not_authentic("bad right", decrypt(&mut c, "k", &bad, "right"));
    // Another version: after a rotation, version 1 exists but did not seal this.
    assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    let mut bad = sealed.clone();
    bad[7] = 1;
    not_authentic("bad right", decrypt(&mut c, "k", &bad, "right"));
    // A version CM does not have, a cut envelope, and a ciphertext of another form.
    bad[7] = 9;
    not_authentic("bad right", decrypt(&mut c, "k", &bad, "right"));
    not_authentic(
        "sealed[..20] right",
        decrypt(&mut c, "k", &sealed[..20], "right"),
    );
    not_authentic("[0u8; 60] right", decrypt(&mut c, "k", &[0u8; 60], "right"));
    // The original still decrypts.
    assert_eq!(decrypt(&mut c, "k", &sealed, "right").status, 200);
}

fn rotation_under_load_loses_nothing(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        ALL_KEY_ROUTES,
    );
    let kes = Arc::new(s.start(&config));
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/hot", b"").status, 200);
    let (_, before) = generate(&mut c, "hot", "old").unwrap();

    // 8 clients × 125 generate + decrypt; a rotation when half of them are done.
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let versions_seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (kes, app) = (Arc::clone(&kes), s.app.clone());
            let (done, failures, seen) = (
                Arc::clone(&done),
                Arc::clone(&failures),
                Arc::clone(&versions_seen),
            );
            thread::spawn(move || {
                let mut c = kes.client(&app);
                for i in 0..125 {
                    let context = format!("w{w}-{i}");
                    match generate(&mut c, "hot", &context) {
                        Ok((plain, sealed)) => {
                            seen.lock().unwrap().insert(envelope_version(&sealed));
                            let r = decrypt(&mut c, "hot", &sealed, &context);
                            if r.status != 200 || r.json()["plaintext"] != plain.as_str() {
                                eprintln!("decrypt failed: {} {}", r.status, r.text());
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(r) => {
                            eprintln!("generate failed: {} {}", r.status, r.text());
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // (A worker that panics stops counting: then wait for the joins below to report it.)
    while done.load(Ordering::SeqCst) < 500 && !workers.iter().all(|w| w.is_finished()) {
        thread::sleep(std::time::Duration::from_millis(2));
    }
    let r = c.post("/v1/key/rotate/hot", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 1000);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    // Both versions sealed data keys, and the newest seals new ones.
    assert_eq!(*versions_seen.lock().unwrap(), [0, 1].into());
    let (_, after) = generate(&mut c, "hot", "new").unwrap();
    assert_eq!(envelope_version(&after), 1);
    assert_eq!(decrypt(&mut c, "hot", &before, "old").status, 200);
    assert_eq!(c.get("/v1/key/describe/hot").json()["version"], 1);
    assert_eq!(s.sim.key_versions("hot").len(), 2);
    assert_eq!(s.sim.export_count(), 0);
}

fn a_secret_backed_key_and_a_resident_key_on_one_server(mode: Mode) {
    let s = Setup::new(mode);
    // Yesterday: the original's way, a secret kes exports.
    let exported = s.config("exported.yml", "ciphertrust", None, ALL_KEY_ROUTES);
    let old_sealed = {
        let kes = s.start(&exported);
        let mut c = kes.client(&s.app);
        assert_eq!(c.post("/v1/key/create/old-key", b"").status, 200);
        // Rotation is for resident keys only, with a clear reason.
        let r = c.post("/v1/key/rotate/old-key", b"");
        assert_eq!(r.status, 501, "{}", r.text());
        assert!(
            r.message()
                .starts_with("rotation is not supported for this key"),
            "{}",
            r.text()
        );
        generate(&mut c, "old-key", "ctx").unwrap()
    };
    assert!(s.sim.key_versions("old-key").is_empty());
    assert_eq!(
        s.sim.count(Route::KeyGet) + s.sim.count(Route::KeyCreate),
        0
    );

    // Today: master_keys: resident on the same CipherTrust.
    let resident = s.config(
        "resident.yml",
        "ciphertrust",
        Some("resident"),
        ALL_KEY_ROUTES,
    );
    let kes = s.start(&resident);
    let mut c = kes.client(&s.app);
    let r = decrypt(&mut c, "old-key", &old_sealed.1, "ctx");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], old_sealed.0.as_str());
    // The old key stays what it was: local ciphertexts, HMAC, no versions.
    let (_, more) = generate(&mut c, "old-key", "ctx").unwrap();
    assert_ne!(&more[..4], &[0xC7, b'K', b'R', 1]);
    assert_eq!(
        c.post(
            "/v1/key/hmac/old-key",
            json!({ "message": "" }).to_string().as_bytes()
        )
        .status,
        200
    );
    assert_eq!(c.post("/v1/key/rotate/old-key", b"").status, 501);
    // A resident key cannot take the secret's name.
    assert_eq!(c.post("/v1/key/create/old-key", b"").status, 400);
    assert!(s.sim.key_versions("old-key").is_empty());

    assert_eq!(c.post("/v1/key/create/new-key", b"").status, 200);
    let (plain, sealed) = generate(&mut c, "new-key", "ctx").unwrap();
    assert_eq!(envelope_version(&sealed), 0);
    assert_eq!(
        decrypt(&mut c, "new-key", &sealed, "ctx").json()["plaintext"],
        plain.as_str()
    );
    // A ciphertext of one key does not open with the other.
    assert_eq!(decrypt(&mut c, "old-key", &sealed, "ctx").status, 400);
    assert_eq!(decrypt(&mut c, "new-key", &old_sealed.1, "ctx").status, 400);

    let listed = c.get("/v1/key/list/*").text();
    assert!(
        listed.contains("\"old-key\"") && listed.contains("\"new-key\""),
        "{listed}"
    );
    // The secret was exported (it is one); the resident key never was.
    assert_eq!(s.sim.count(Route::KeyExport), 0);
}

fn cipher_trust_down_means_clear_errors_and_nothing_to_decrypt_with(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "ctx").unwrap();

    s.sim.go_down();
    // The key is cached (existence, version), but nothing in kes can decrypt with it.
    for r in [
        generate(&mut c, "k", "ctx").unwrap_err(),
        decrypt(&mut c, "k", &sealed, "ctx"),
        c.post("/v1/key/rotate/k", b""),
        c.post("/v1/key/create/k2", b""),
    ] {
        assert!(
            r.status == 502 || r.status == 503,
            "{} {}",
            r.status,
            r.text()
        );
        assert!(!r.message().is_empty());
    }
    let status = c.get("/v1/status").json();
    assert_eq!(status["keystore_unreachable"], true, "{status}");

    s.sim.come_up();
    let mut ok = false;
    for _ in 0..50 {
        if decrypt(&mut c, "k", &sealed, "ctx").status == 200 {
            ok = true;
            break;
        }
        thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "decrypt did not recover after CipherTrust came back");
    assert_eq!(s.sim.export_count(), 0);
}

fn a_cm_call_that_hangs_holds_a_pool_worker_not_the_event_loop(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        ALL_KEY_ROUTES,
    );
    // One event loop: were a CM call made on it, every other client would wait too.
    let kes = Arc::new(s.try_start(&config, &["--loops", "1"]).unwrap());
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    generate(&mut c, "k", "ctx").unwrap();

    s.sim.set_hang(true);
    let hung = {
        let (kes, app) = (Arc::clone(&kes), s.app.clone());
        thread::spawn(move || generate(&mut kes.client(&app), "k", "ctx").map(|_| ()))
    };
    while s.sim.held(Route::Encrypt) == 0 {
        // A generate that answers without calling CM would otherwise be waited for forever.
        assert!(!hung.is_finished(), "generate answered without calling CM");
        thread::sleep(std::time::Duration::from_millis(10));
    }
    // The loop still serves others while CM holds the generate's call.
    let mut other = kes.client(&s.app);
    assert_eq!(other.get("/version").status, 200);
    assert_eq!(other.get("/v1/api").status, 403);
    // (Had the loop waited, kes would have given the CM call up first: after its 10 s
    // budget, answering the generate with 502.)
    assert!(!hung.is_finished(), "answered only after kes gave up on CM");
    s.sim.set_hang(false);
    let _ = hung.join().unwrap();
}

fn rotate_is_policy_checked_and_listed(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        &["/v1/key/create/*", "/v1/key/generate/*", "/v1/api"],
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    assert_eq!(c.post("/v1/key/rotate/k", b"").status, 403);
    assert_eq!(s.sim.count(Route::KeyVersion), 0);
    let api = c.get("/v1/api").text();
    assert!(api.contains("/v1/key/rotate/"), "{api}");
}

#[test]
fn fs_keys_cannot_rotate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin = pki.client("admin");
    let config = pki.config(
        "fs.yml",
        &format!(
            "address: 0.0.0.0:7373\nadmin:\n  identity: {}\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            dir.path().display()
        ),
    );
    let kes = Kes::start(&pki, &config, &["--auth=off"]);
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let r = c.post("/v1/key/rotate/k", b"");
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(
        r.message()
            .starts_with("rotation is not supported for this key")
    );
    assert_eq!(c.post("/v1/key/rotate/missing", b"").status, 404);
}

#[test]
fn an_unknown_master_keys_value_is_a_config_error() {
    let s = Setup::new(Mode::Default);
    let config = s.config("config.yml", "ciphertrust", Some("hsm"), ALL_KEY_ROUTES);
    let err = s.try_start(&config, &[]).err().expect("kes started");
    assert!(
        err.contains("master_keys") && err.contains("'hsm'"),
        "{err}"
    );
    assert!(err.contains("resident"), "{err}");
}

/// A resident key listed under `keys:` is created at the first start and found at the
/// next: CipherTrust holds it, kes has no stored value of it to check, and the server
/// starts.
fn a_listed_resident_key_is_created_once_and_found_at_the_next_start(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        ALL_KEY_ROUTES,
    );
    let mut body = std::fs::read_to_string(&config).unwrap();
    body.push_str("keys:\n- name: listed\n");
    std::fs::write(&config, body).unwrap();
    for start in ["first", "second"] {
        let kes = s.start(&config);
        let mut c = kes.client(&s.app);
        let info = c.get("/v1/key/describe/listed");
        assert_eq!(info.status, 200, "{start} start: {}", info.text());
        assert_eq!(info.json()["resident"], true, "{start} start");
        assert!(generate(&mut c, "listed", "").is_ok(), "{start} start");
    }
}
