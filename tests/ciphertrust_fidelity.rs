//! Resident keys speak to CipherTrust Manager as clients proven against a live one do
//! (docs/ciphertrust.md, fidelity table), through the real binary: decrypts address a
//! key version by its id (so a CipherTrust that ignores the version of a decrypt by name
//! changes nothing), answers lacking a field kes relies on are errors that name it, each
//! CipherTrust error answer means what it says, and a delete removes every version.
//! Each test runs against the stand-in in its default and in its strict mode.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;
#[path = "common/resident.rs"]
mod resident;

use std::time::{Duration, Instant};

use common::{Kes, Resp, metric};
use ctm_sim::{CryptoQuirk, Route};
use resident::{Mode, Setup, decrypt, envelope_version, generate};

in_both_modes!(
    old_versions_decrypt_by_their_id_after_a_rotation_and_a_restart,
    a_decrypt_by_name_that_ignores_the_version_changes_nothing,
    an_encrypt_answer_without_a_version_is_an_error_that_names_it,
    a_secret_of_the_same_name_is_not_taken_for_a_resident_key,
    only_a_gcm_failure_is_not_authentic_and_it_is_never_retried,
    a_key_or_version_gone_in_ciphertrust_is_a_missing_key,
    refused_permissions_are_server_errors_that_name_the_call_and_the_permission,
    ciphertrust_5xx_answers_are_retried_as_an_outage,
    deleting_a_key_removes_all_fifty_versions_within_the_budget,
    a_key_left_partly_deleted_is_reported_and_a_second_delete_finishes_it,
    a_ciphertrust_that_refuses_tag_len_gets_encrypts_without_it,
    metrics_count_ciphertrust_calls_by_route_and_errors_by_status,
);

fn not_authentic(r: &Resp) -> bool {
    (r.status, r.message().as_str()) == (400, "decryption failed: ciphertext is not authentic")
}

/// Waits until kes's error log has a line containing every part.
fn logged(kes: &Kes, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = kes.stderr();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn old_versions_decrypt_by_their_id_after_a_rotation_and_a_restart(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        resident::ALL_KEY_ROUTES,
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (plain0, sealed0) = generate(&mut c, "k", "ctx").unwrap();
    assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    let (plain1, sealed1) = generate(&mut c, "k", "ctx").unwrap();
    assert_eq!(
        (envelope_version(&sealed0), envelope_version(&sealed1)),
        (0, 1)
    );
    // The ids came with the encrypt answers: no listing needed.
    let listings = s.sim.count(Route::KeyList);
    assert_eq!(
        decrypt(&mut c, "k", &sealed0, "ctx").json()["plaintext"],
        plain0.as_str()
    );
    assert_eq!(
        decrypt(&mut c, "k", &sealed1, "ctx").json()["plaintext"],
        plain1.as_str()
    );
    assert_eq!(s.sim.count(Route::KeyList), listings);
    drop(c);
    drop(kes);

    // A new process knows no ids: one listing of the key's versions teaches them all.
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    let listings = s.sim.count(Route::KeyList);
    for _ in 0..3 {
        let r = decrypt(&mut c, "k", &sealed0, "ctx");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["plaintext"], plain0.as_str());
        assert_eq!(
            decrypt(&mut c, "k", &sealed1, "ctx").json()["plaintext"],
            plain1.as_str()
        );
    }
    assert_eq!(s.sim.count(Route::KeyList), listings + 1);
}

fn a_decrypt_by_name_that_ignores_the_version_changes_nothing(mode: Mode) {
    let s = Setup::new(mode);
    s.sim
        .set_crypto_quirk(CryptoQuirk::NameDecryptIgnoresVersion);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let old: Vec<_> = (0..5)
        .map(|i| generate(&mut c, "k", &i.to_string()).unwrap())
        .collect();
    for _ in 0..3 {
        assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    }
    for (i, (plain, sealed)) in old.iter().enumerate() {
        let r = decrypt(&mut c, "k", sealed, &i.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["plaintext"], plain.as_str());
    }
}

fn an_encrypt_answer_without_a_version_is_an_error_that_names_it(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    s.sim.set_crypto_quirk(CryptoQuirk::EncryptWithoutVersion);
    let r = generate(&mut c, "k", "ctx").unwrap_err();
    assert_eq!((r.status, r.message().as_str()), (502, "failed to encrypt"));
    logged(
        &kes,
        &["POST /api/v1/crypto/encrypt", "key 'k'", "lacks `version`"],
    );
    // Never a ciphertext with a guessed version.
    s.sim.set_crypto_quirk(CryptoQuirk::None);
    let (_, sealed) = generate(&mut c, "k", "ctx").unwrap();
    assert_eq!(decrypt(&mut c, "k", &sealed, "ctx").status, 200);
}

fn a_secret_of_the_same_name_is_not_taken_for_a_resident_key(mode: Mode) {
    let s = Setup::new(mode);
    // A key kes keeps as a secret (made in secrets mode), and a resident key.
    let secrets_mode = s.config("plain.yml", "ciphertrust", None, resident::ALL_KEY_ROUTES);
    let kes = s.start(&secrets_mode);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/held", b"").status, 200);
    let (plain, held) = generate(&mut c, "held", "ctx").unwrap();
    drop(c);
    drop(kes);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/res", b"").status, 200);
    // In strict mode CipherTrust's key lookup finds the secret too, as an Opaque Object:
    // kes keeps reading it as the secret it is.
    let r = decrypt(&mut c, "held", &held, "ctx");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], plain.as_str());
    let described = c.get("/v1/key/describe/held").json();
    assert!(described["resident"].is_null(), "{described}");
    assert_eq!(c.get("/v1/key/describe/res").json()["resident"], true);
    let (_, sealed) = generate(&mut c, "held", "ctx").unwrap();
    assert_ne!(&sealed[..3], &[0xC7, b'K', b'R'], "a held key's ciphertext");
    // Each name listed once; a resident key of the secret's name cannot be made.
    assert_eq!(c.get("/v1/key/list/*").listed_names(), ["held", "res"]);
    assert_eq!(c.post("/v1/key/create/held", b"").status, 400);
    assert!(s.sim.key_versions("held").is_empty());
}

fn only_a_gcm_failure_is_not_authentic_and_it_is_never_retried(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "ctx").unwrap();
    let mut tampered = sealed.clone();
    tampered[4 + 4 + 1 + 12 + 1] ^= 1;
    for quirk in [CryptoQuirk::None, CryptoQuirk::TagFailureAs500] {
        s.sim.set_crypto_quirk(quirk);
        let before = s.sim.count(Route::Decrypt);
        let r = decrypt(&mut c, "k", &tampered, "ctx");
        assert!(not_authentic(&r), "{quirk:?}: {} {}", r.status, r.text());
        assert_eq!(
            s.sim.count(Route::Decrypt),
            before + 1,
            "{quirk:?}: not retried"
        );
    }
    // Any other 400 is not taken for a forgery: a server error, logged.
    s.sim.set_crypto_quirk(CryptoQuirk::None);
    s.sim.fail_route_with(Route::Decrypt, Some(400));
    let r = decrypt(&mut c, "k", &sealed, "ctx");
    assert_eq!((r.status, r.message().as_str()), (502, "failed to decrypt"));
    logged(&kes, &["could not decrypt with key 'k'", "400 Bad Request"]);
}

fn a_key_or_version_gone_in_ciphertrust_is_a_missing_key(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed0) = generate(&mut c, "k", "ctx").unwrap();
    assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    let (_, sealed1) = generate(&mut c, "k", "ctx").unwrap();
    // Version 0 deleted in CipherTrust (its id was known): "key does not exist", not a
    // forgery; version 1 still decrypts.
    s.sim.remove_key_version("k", 0);
    let r = decrypt(&mut c, "k", &sealed0, "ctx");
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "key does not exist"),
        "{}",
        r.text()
    );
    assert_eq!(decrypt(&mut c, "k", &sealed1, "ctx").status, 200);
    // Asked again once kes forgot its ids: the listing shows version 0 is gone.
    let r = decrypt(&mut c, "k", &sealed0, "ctx");
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "key does not exist")
    );
    // A version the key never had is no key's ciphertext.
    let mut unknown = sealed1.clone();
    unknown[7] = 7;
    assert!(not_authentic(&decrypt(&mut c, "k", &unknown, "ctx")));
    // The whole key gone: its name is missing.
    s.sim.remove_key("k");
    let r = decrypt(&mut c, "k", &sealed1, "ctx");
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "key does not exist")
    );
}

fn refused_permissions_are_server_errors_that_name_the_call_and_the_permission(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "ctx").unwrap();

    s.sim.fail_route_with(Route::Decrypt, Some(403));
    let r = decrypt(&mut c, "k", &sealed, "ctx");
    assert_eq!((r.status, r.message().as_str()), (502, "failed to decrypt"));
    let line = logged(&kes, &["POST /api/v1/crypto/decrypt", "403 Forbidden"]);
    assert!(
        line.contains("DecryptWithKey, UseKey and ReadKey on kylo:kylo:vault:keys:"),
        "{line}"
    );
    assert!(line.contains("docs/ciphertrust.md"), "{line}");

    s.sim.fail_route_with(Route::Encrypt, Some(403));
    let r = generate(&mut c, "k", "ctx").unwrap_err();
    assert_eq!((r.status, r.message().as_str()), (502, "failed to encrypt"));
    logged(
        &kes,
        &[
            "POST /api/v1/crypto/encrypt",
            "403 Forbidden",
            "EncryptWithKey, UseKey",
        ],
    );

    // A 401 that survives a fresh token: the same kind of answer.
    let tokens = s.sim.count(Route::Token);
    s.sim.fail_route_with(Route::Encrypt, Some(401));
    let r = generate(&mut c, "k", "ctx").unwrap_err();
    assert_eq!(r.status, 502);
    assert_eq!(
        s.sim.count(Route::Token),
        tokens + 1,
        "one fresh token was tried"
    );
    logged(&kes, &["POST /api/v1/crypto/encrypt", "401 Unauthorized"]);

    s.sim.fail_route_with(Route::KeyVersion, Some(403));
    let r = c.post("/v1/key/rotate/k", b"");
    assert_eq!(
        (r.status, r.message().as_str()),
        (502, "failed to rotate key")
    );
    logged(
        &kes,
        &["/versions", "403 Forbidden", "CreateKey and ReadKey"],
    );
}

fn ciphertrust_5xx_answers_are_retried_as_an_outage(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (plain, sealed) = generate(&mut c, "k", "ctx").unwrap();
    // Two 503s, then CipherTrust answers: the client never sees them.
    s.sim.fail_next(2);
    let r = decrypt(&mut c, "k", &sealed, "ctx");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], plain.as_str());
    // A 5xx that lasts: the event loop's attempt, then the pool's (the first and two
    // retries, as the original), then an outage.
    s.sim.fail_route_with(Route::Decrypt, Some(500));
    let before = s.sim.count(Route::Decrypt);
    let r = decrypt(&mut c, "k", &sealed, "ctx");
    assert_eq!((r.status, r.message().as_str()), (502, "failed to decrypt"));
    assert_eq!(s.sim.count(Route::Decrypt), before + 1 + 3);
    logged(
        &kes,
        &["not reachable", "POST /api/v1/crypto/decrypt answered 500"],
    );
}

fn deleting_a_key_removes_all_fifty_versions_within_the_budget(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    for _ in 0..49 {
        assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    }
    assert_eq!(s.sim.key_versions("k").len(), 50);
    // 20 ms a call, as a CipherTrust in the same data centre.
    s.sim.set_latency(Duration::from_millis(20));
    let deletes = s.sim.count(Route::KeyDelete);
    let started = Instant::now();
    let r = c.request("DELETE", "/v1/key/delete/k", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(s.sim.key_versions("k").is_empty());
    assert_eq!(
        s.sim.count(Route::KeyDelete),
        deletes + 50,
        "one call per version"
    );
    assert_eq!(c.get("/v1/key/describe/k").status, 404);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
}

fn a_key_left_partly_deleted_is_reported_and_a_second_delete_finishes_it(mode: Mode) {
    let s = Setup::new(mode);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    for _ in 0..9 {
        assert_eq!(c.post("/v1/key/rotate/k", b"").status, 200);
    }
    s.sim.fail_route_after(Route::KeyDelete, 4, 403);
    let r = c.request("DELETE", "/v1/key/delete/k", b"");
    assert_eq!(
        (r.status, r.message().as_str()),
        (502, "failed to delete key"),
        "{}",
        r.text()
    );
    let line = logged(
        &kes,
        &[
            "key 'k' is partly deleted (4 versions removed",
            "delete it again",
        ],
    );
    assert!(line.contains("DeleteKey"), "{line}");
    assert_eq!(s.sim.key_versions("k").len(), 6);
    s.sim.fail_route_with(Route::KeyDelete, None);
    assert_eq!(c.request("DELETE", "/v1/key/delete/k", b"").status, 200);
    assert!(s.sim.key_versions("k").is_empty());
}

fn a_ciphertrust_that_refuses_tag_len_gets_encrypts_without_it(mode: Mode) {
    let s = Setup::new(mode);
    s.sim.set_crypto_quirk(CryptoQuirk::RefuseTagLen);
    let kes = s.resident("ciphertrust");
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let encrypts = s.sim.count(Route::Encrypt);
    let (plain, sealed) = generate(&mut c, "k", "ctx").unwrap();
    assert_eq!(
        s.sim.count(Route::Encrypt),
        encrypts + 2,
        "refused, then without tag_len"
    );
    logged(
        &kes,
        &["refused the GCM tag length field", "no longer sends it"],
    );
    for _ in 0..3 {
        generate(&mut c, "k", "ctx").unwrap();
    }
    assert_eq!(s.sim.count(Route::Encrypt), encrypts + 5);
    assert_eq!(
        decrypt(&mut c, "k", &sealed, "ctx").json()["plaintext"],
        plain.as_str()
    );
}

fn metrics_count_ciphertrust_calls_by_route_and_errors_by_status(mode: Mode) {
    let s = Setup::new(mode);
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        &["/v1/key/*", "/v1/metrics"],
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "ctx").unwrap();
    for _ in 0..3 {
        generate(&mut c, "k", "ctx").unwrap();
    }
    s.sim.fail_route_with(Route::Decrypt, Some(403));
    assert_eq!(decrypt(&mut c, "k", &sealed, "ctx").status, 502);
    let scrape = c.get("/v1/metrics").text();
    let count = |route: &str| {
        metric(
            &scrape,
            &format!("kes_ciphertrust_call_duration_seconds_count{{route=\"{route}\"}}"),
        )
    };
    assert_eq!(count("encrypt"), 4.0, "{scrape}");
    assert_eq!(count("decrypt"), 1.0);
    assert!(count("key_create") >= 1.0 && count("token") >= 1.0);
    assert_eq!(
        metric(
            &scrape,
            "kes_ciphertrust_call_errors_total{route=\"decrypt\",status=\"403\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            "kes_ciphertrust_call_duration_seconds_bucket{route=\"encrypt\",le=\"+Inf\"}"
        ),
        4.0
    );
}
