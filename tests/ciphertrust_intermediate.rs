//! Resident keys with intermediate keys (`intermediate_key:` in the CipherTrust section;
//! docs/resident-keys.md, "Intermediate keys"): the real `kes` binary over mTLS in front
//! of the CipherTrust stand-in, in both of its modes. The CipherTrust calls each node
//! makes (counted by the stand-in), the TTL and use bounds, a key removed in CipherTrust
//! ending within the TTL, ciphertexts readable with the setting on and off, tampered
//! envelopes refused, rotation, event-loop service, audit and metrics.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;
#[path = "common/resident.rs"]
mod resident;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use common::{Client, Kes};
use ctm_sim::Route;
use resident::{ALL_KEY_ROUTES, Mode, Setup, decrypt, generate};

in_both_modes!(
    one_wrap_per_key_version_and_one_unwrap_per_ik_per_node,
    the_use_count_bounds_an_intermediate_key,
    the_ttl_bounds_an_intermediate_key,
    a_key_removed_in_cipher_trust_stops_working_within_the_ttl,
    ciphertexts_stay_readable_with_the_setting_on_and_off,
    tampered_envelopes_are_not_authentic,
    a_rotation_starts_a_new_intermediate_key_at_once,
    a_warm_intermediate_key_is_served_on_the_event_loop,
    audit_events_and_metrics_show_intermediate_keys,
    a_node_without_intermediate_keys_is_no_oracle_for_them,
);

const NOT_AUTHENTIC: &str = "decryption failed: ciphertext is not authentic";

/// kes with resident keys and intermediate keys of `ttl` and `max_uses` (config file
/// `name`), started with `args`, with `top` added to the config.
fn node(s: &Setup, name: &str, ttl: &str, max_uses: u64, args: &[&str], top: &str) -> Kes {
    let ik = format!("intermediate_key: {{ttl: {ttl}, max_uses: {max_uses}}}");
    let config = s.config_with(
        name,
        "ciphertrust",
        Some("resident"),
        &["/v1/key/*", "/v1/status", "/v1/metrics"],
        &[&ik],
        top,
    );
    s.try_start(&config, args)
        .unwrap_or_else(|e| panic!("kes did not start: {e}"))
}

/// kes with resident keys and the setting off.
fn node_without_iks(s: &Setup, name: &str) -> Kes {
    s.start(&s.config(name, "ciphertrust", Some("resident"), ALL_KEY_ROUTES))
}

/// The header of a format-2 envelope: what names its intermediate key.
fn header(ciphertext: &[u8]) -> Vec<u8> {
    assert_eq!(&ciphertext[..4], &[0xC7, b'K', b'R', 2], "not format 2");
    let iv = usize::from(ciphertext[8]);
    let tag = usize::from(ciphertext[9 + iv]);
    ciphertext[..10 + iv + tag + 32].to_vec()
}

/// The CipherTrust key version that wrapped the intermediate key of an envelope.
fn wrapped_version(ciphertext: &[u8]) -> u32 {
    u32::from_be_bytes(ciphertext[4..8].try_into().unwrap())
}

fn generate_ok(c: &mut Client, name: &str, context: &str) -> (String, Vec<u8>) {
    generate(c, name, context).unwrap_or_else(|r| panic!("{}: {}", r.status, r.text()))
}

fn decrypts_to(c: &mut Client, name: &str, ciphertext: &[u8], context: &str, plain: &str) {
    let r = decrypt(c, name, ciphertext, context);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], plain);
}

fn calls(s: &Setup) -> (u64, u64) {
    (s.sim.count(Route::Encrypt), s.sim.count(Route::Decrypt))
}

/// `threads` clients at once, each running `work` `n` times.
fn in_parallel<T: Send + 'static>(
    kes: &Arc<Kes>,
    s: &Setup,
    threads: usize,
    n: usize,
    work: impl Fn(&mut Client, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (kes, app, work) = (Arc::clone(kes), s.app.clone(), Arc::clone(&work));
            thread::spawn(move || {
                let mut c = kes.client(&app);
                (0..n).map(|i| work(&mut c, t * n + i)).collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn one_wrap_per_key_version_and_one_unwrap_per_ik_per_node(mode: Mode) {
    let s = Setup::new(mode);
    let a = Arc::new(node(&s, "a.yml", "5m", 1_000_000, &[], ""));
    let b = Arc::new(node(&s, "b.yml", "5m", 1_000_000, &[], ""));
    assert_eq!(a.client(&s.app).post("/v1/key/create/k", b"").status, 200);
    let before = calls(&s);

    // 40 data keys from 4 clients at once: one wrap.
    let made = in_parallel(&a, &s, 4, 10, |c, _| generate_ok(c, "k", "bucket/object"));
    assert_eq!(
        calls(&s),
        (before.0 + 1, before.1),
        "one wrap for 40 data keys"
    );
    let headers: HashSet<_> = made.iter().map(|(_, ct)| header(ct)).collect();
    assert_eq!(headers.len(), 1, "all under one intermediate key");

    // The node that wrapped it decrypts without CipherTrust...
    let mut ca = a.client(&s.app);
    for (plain, ct) in &made {
        decrypts_to(&mut ca, "k", ct, "bucket/object", plain);
    }
    assert_eq!(calls(&s), (before.0 + 1, before.1));

    // ... another node unwraps it once, also when 4 clients ask at once.
    let made = Arc::new(made);
    let list = Arc::clone(&made);
    let statuses = in_parallel(&b, &s, 4, 10, move |c, i| {
        let (plain, ct) = &list[i];
        let r = decrypt(c, "k", ct, "bucket/object");
        (r.status, r.json()["plaintext"] == plain.as_str())
    });
    assert!(statuses.iter().all(|s| *s == (200, true)), "{statuses:?}");
    assert_eq!(
        calls(&s),
        (before.0 + 1, before.1 + 1),
        "one unwrap on node b"
    );

    // Node b's own data keys take an intermediate key of its own (per node).
    let mut cb = b.client(&s.app);
    for _ in 0..5 {
        generate_ok(&mut cb, "k", "x");
    }
    assert_eq!(calls(&s), (before.0 + 2, before.1 + 1));
    assert_eq!(s.sim.export_count(), 0);
}

fn the_use_count_bounds_an_intermediate_key(mode: Mode) {
    let s = Setup::new(mode);
    let a = node(&s, "a.yml", "5m", 4, &[], "");
    let b = node(&s, "b.yml", "5m", 4, &[], "");
    let mut ca = a.client(&s.app);
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let before = calls(&s);
    let made: Vec<_> = (0..10).map(|_| generate_ok(&mut ca, "k", "ctx")).collect();
    assert_eq!(calls(&s).0, before.0 + 3, "10 data keys, at most 4 per IK");
    let headers: Vec<_> = made.iter().map(|(_, ct)| header(ct)).collect();
    assert_eq!(headers.iter().collect::<HashSet<_>>().len(), 3);
    assert!(headers[..4].iter().all(|h| *h == headers[0]));

    let mut cb = b.client(&s.app);
    for (plain, ct) in &made {
        decrypts_to(&mut cb, "k", ct, "ctx", plain);
    }
    assert_eq!(calls(&s).1, before.1 + 3, "one unwrap per distinct IK");
    // Node b used the first IK 4 times: a fifth use needs an unwrap again.
    decrypts_to(&mut cb, "k", &made[0].1, "ctx", &made[0].0);
    assert_eq!(calls(&s).1, before.1 + 4);
}

fn the_ttl_bounds_an_intermediate_key(mode: Mode) {
    let s = Setup::new(mode);
    let ttl = Duration::from_secs(1);
    let a = node(&s, "a.yml", "1s", 1_000_000, &[], "");
    let b = node(&s, "b.yml", "1s", 1_000_000, &[], "");
    let (mut ca, mut cb) = (a.client(&s.app), b.client(&s.app));
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let before = calls(&s);
    let first = generate_ok(&mut ca, "k", "ctx");
    decrypts_to(&mut cb, "k", &first.1, "ctx", &first.0);
    assert_eq!(calls(&s), (before.0 + 1, before.1 + 1));

    thread::sleep(ttl + Duration::from_millis(300));
    let second = generate_ok(&mut ca, "k", "ctx");
    assert_ne!(
        header(&first.1),
        header(&second.1),
        "a new IK after the TTL"
    );
    decrypts_to(&mut cb, "k", &first.1, "ctx", &first.0);
    assert_eq!(
        calls(&s),
        (before.0 + 2, before.1 + 2),
        "wrapped and unwrapped again"
    );
}

fn a_key_removed_in_cipher_trust_stops_working_within_the_ttl(mode: Mode) {
    let s = Setup::new(mode);
    let ttl = Duration::from_secs(2);
    let a = node(&s, "a.yml", "2s", 1_000_000, &[], "");
    let mut ca = a.client(&s.app);
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let wrapped_at = Instant::now();
    let (plain, ct) = generate_ok(&mut ca, "k", "ctx");

    // An administrator removes the key in CipherTrust.
    s.sim.remove_key("k");
    // A node that has no IK of it refuses at once: CipherTrust unwraps nothing.
    let b = node(&s, "b.yml", "2s", 1_000_000, &[], "");
    let r = decrypt(&mut b.client(&s.app), "k", &ct, "ctx");
    assert_eq!((r.status, r.message()), (404, "key does not exist".into()));
    // The node that has one keeps working until the IK's TTL...
    generate_ok(&mut ca, "k", "ctx");
    decrypts_to(&mut ca, "k", &ct, "ctx", &plain);
    assert!(
        wrapped_at.elapsed() < ttl,
        "the machine was too slow for this test"
    );

    // ... and not longer.
    let refused = loop {
        let r = decrypt(&mut ca, "k", &ct, "ctx");
        if r.status != 200 {
            break r;
        }
        assert!(
            wrapped_at.elapsed() < ttl + Duration::from_millis(500),
            "decrypts still work {:?} after the wrap",
            wrapped_at.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(wrapped_at.elapsed() >= ttl, "ended before the TTL");
    assert_eq!(
        (refused.status, refused.message()),
        (404, "key does not exist".into())
    );
    let r = generate(&mut ca, "k", "ctx").unwrap_err();
    assert_eq!((r.status, r.message()), (404, "key does not exist".into()));
}

fn ciphertexts_stay_readable_with_the_setting_on_and_off(mode: Mode) {
    let s = Setup::new(mode);
    let on = node(&s, "on.yml", "5m", 1_000_000, &[], "");
    let off = node_without_iks(&s, "off.yml");
    let (mut con, mut coff) = (on.client(&s.app), off.client(&s.app));
    assert_eq!(coff.post("/v1/key/create/k", b"").status, 200);

    let (p1, v1) = generate_ok(&mut coff, "k", "ctx");
    assert_eq!(&v1[..4], &[0xC7, b'K', b'R', 1], "off: format 1");
    let (p2, v2) = generate_ok(&mut con, "k", "ctx");
    header(&v2);
    assert_eq!(v2.len(), 130, "a 32-byte data key in format 2");

    // With the setting on, a format-1 envelope is one CipherTrust decrypt, as before.
    let before = calls(&s);
    decrypts_to(&mut con, "k", &v1, "ctx", &p1);
    decrypts_to(&mut con, "k", &v2, "ctx", &p2);
    assert_eq!(calls(&s).1, before.1 + 1);
    // With the setting off, a format-2 envelope is one unwrap per decrypt, nothing kept.
    for _ in 0..2 {
        decrypts_to(&mut coff, "k", &v2, "ctx", &p2);
        decrypts_to(&mut coff, "k", &v1, "ctx", &p1);
    }
    assert_eq!(calls(&s).1, before.1 + 5);

    // The same after a restart with the setting turned off: nothing is stranded.
    drop(on);
    let off_again = node_without_iks(&s, "off2.yml");
    let mut c = off_again.client(&s.app);
    decrypts_to(&mut c, "k", &v2, "ctx", &p2);
    decrypts_to(&mut c, "k", &v1, "ctx", &p1);
}

fn tampered_envelopes_are_not_authentic(mode: Mode) {
    let s = Setup::new(mode);
    let a = node(&s, "a.yml", "5m", 1_000_000, &[], "");
    let mut ca = a.client(&s.app);
    for key in ["k", "other"] {
        assert_eq!(ca.post(&format!("/v1/key/create/{key}"), b"").status, 200);
    }
    let (plain, ct) = generate_ok(&mut ca, "k", "ctx");
    let hl = header(&ct).len();
    let flipped = |at: usize| {
        let mut bytes = ct.clone();
        bytes[at] ^= 1;
        bytes
    };
    let mut tampered = vec![
        ("version", flipped(7)),
        ("wrap IV", flipped(9)),
        ("wrap tag", flipped(22)),
        ("wrapped key", flipped(38)),
        ("nonce", flipped(hl)),
        ("ciphertext", flipped(hl + 12)),
        ("tag", flipped(ct.len() - 1)),
        ("format byte 3", {
            let mut bytes = ct.clone();
            bytes[3] = 3;
            bytes
        }),
    ];
    for cut in [5, 30, hl, hl + 12, ct.len() - 1] {
        tampered.push(("cut off", ct[..cut].to_vec()));
    }
    // On the node that keeps the IK, and on one that must unwrap it first.
    let b = node(&s, "b.yml", "5m", 1_000_000, &[], "");
    let mut cb = b.client(&s.app);
    for c in [&mut ca, &mut cb] {
        for (what, bytes) in &tampered {
            let r = decrypt(c, "k", bytes, "ctx");
            assert_eq!(
                (r.status, r.message()),
                (400, NOT_AUTHENTIC.into()),
                "{what}"
            );
        }
        let r = decrypt(c, "k", &ct, "other context");
        assert_eq!(
            (r.status, r.message()),
            (400, NOT_AUTHENTIC.into()),
            "context"
        );
        let r = decrypt(c, "other", &ct, "ctx");
        assert_eq!((r.status, r.message()), (400, NOT_AUTHENTIC.into()), "key");
        decrypts_to(c, "k", &ct, "ctx", &plain);
    }

    // After a rotation, an envelope claiming the newer version is refused by CipherTrust.
    assert_eq!(ca.post("/v1/key/rotate/k", b"").status, 200);
    let r = decrypt(&mut cb, "k", &flipped(7), "ctx");
    assert_eq!(
        (r.status, r.message()),
        (400, NOT_AUTHENTIC.into()),
        "version"
    );

    // The associated data of an IK wrap is never a request's context.
    let reserved = [&[0xC7, b'K', b'R', b'I', b'K', 1][..], b"k"].concat();
    let body = serde_json::json!({ "context": B64.encode(&reserved) }).to_string();
    let r = ca.post("/v1/key/generate/k", body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.message().starts_with("context is reserved"),
        "{}",
        r.text()
    );
}

fn a_rotation_starts_a_new_intermediate_key_at_once(mode: Mode) {
    let s = Setup::new(mode);
    let a = node(&s, "a.yml", "5m", 1_000_000, &[], "");
    let mut ca = a.client(&s.app);
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let old = generate_ok(&mut ca, "k", "ctx");
    assert_eq!(wrapped_version(&old.1), 0);
    let r = ca.post("/v1/key/rotate/k", b"");
    assert_eq!((r.status, r.json()["version"].as_u64()), (200, Some(1)));
    let before = calls(&s);
    let new = generate_ok(&mut ca, "k", "ctx");
    assert_eq!(
        wrapped_version(&new.1),
        1,
        "the next data key is under version 1"
    );
    assert_eq!(calls(&s).0, before.0 + 1);
    decrypts_to(&mut ca, "k", &old.1, "ctx", &old.0);
    decrypts_to(&mut ca, "k", &new.1, "ctx", &new.0);
}

fn a_warm_intermediate_key_is_served_on_the_event_loop(mode: Mode) {
    let s = Setup::new(mode);
    // One loop and one pool worker: a request sent to the pool waits behind the hung one.
    let kes = Arc::new(node(
        &s,
        "a.yml",
        "5m",
        1_000_000,
        &["--loops", "1", "--workers", "1"],
        "",
    ));
    let mut c = kes.client(&s.app);
    for key in ["warm", "cold"] {
        assert_eq!(c.post(&format!("/v1/key/create/{key}"), b"").status, 200);
    }
    let (plain, ct) = generate_ok(&mut c, "warm", "ctx");

    s.sim.set_hang(true);
    let hung = {
        let (kes, app) = (Arc::clone(&kes), s.app.clone());
        thread::spawn(move || generate(&mut kes.client(&app), "cold", "ctx").map(|_| ()))
    };
    while s.sim.held(Route::KeyGet) + s.sim.held(Route::Encrypt) == 0 {
        assert!(!hung.is_finished(), "the cold generate answered without CM");
        thread::sleep(Duration::from_millis(10));
    }
    // The only worker waits for CipherTrust; the warm key is served anyway, on the loop.
    let started = Instant::now();
    let mut warm = kes.client(&s.app);
    for _ in 0..20 {
        generate_ok(&mut warm, "warm", "ctx");
        decrypts_to(&mut warm, "warm", &ct, "ctx", &plain);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!hung.is_finished(), "the cold generate was not held");
    s.sim.set_hang(false);
    let _ = hung.join().unwrap();
}

fn audit_events_and_metrics_show_intermediate_keys(mode: Mode) {
    let s = Setup::new(mode);
    let a = node(&s, "a.yml", "5m", 1_000_000, &[], "log:\n  audit: on\n");
    let b = node(&s, "b.yml", "5m", 1_000_000, &[], "log:\n  audit: on\n");
    let mut ca = a.client(&s.app);
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let made: Vec<_> = (0..5).map(|_| generate_ok(&mut ca, "k", "ctx")).collect();
    let mut cb = b.client(&s.app);
    for (plain, ct) in &made[..3] {
        decrypts_to(&mut cb, "k", ct, "ctx", plain);
    }

    let events = |kes: &Kes, want: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = kes.stdout.lock().unwrap().clone();
            let events: Vec<serde_json::Value> = out
                .lines()
                .filter(|l| l.contains("/v1/key/generate/") || l.contains("/v1/key/decrypt/"))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if events.len() >= want || Instant::now() > deadline {
                return events;
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    let seen: Vec<_> = events(&a, 5)
        .iter()
        .map(|e| e["intermediate_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["wrapped", "cached", "cached", "cached", "cached"]);
    let on_b = events(&b, 3);
    let seen: Vec<_> = on_b
        .iter()
        .map(|e| e["intermediate_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["unwrapped", "cached", "cached"]);
    // The original's fields are all there, unchanged.
    assert_eq!(on_b[0]["response"]["code"], 200);
    assert_eq!(on_b[0]["request"]["identity"], s.app.identity.as_str());
    assert!(on_b[0]["response"]["time"].is_u64());

    let scrape = |c: &mut Client| c.get("/v1/metrics").text();
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let text = scrape(&mut ca);
    assert_eq!(
        metric(&text, "kes_intermediate_keys_live{purpose=\"encrypt\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "kes_intermediate_keys_live{purpose=\"decrypt\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "kes_intermediate_key_cache_hits_total{purpose=\"encrypt\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            "kes_intermediate_key_cache_misses_total{purpose=\"encrypt\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "kes_intermediate_key_ciphertrust_calls_saved_total"),
        4.0
    );
    let text = scrape(&mut cb);
    assert_eq!(
        metric(
            &text,
            "kes_intermediate_key_cache_hits_total{purpose=\"decrypt\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "kes_intermediate_key_cache_misses_total{purpose=\"decrypt\"}"
        ),
        1.0
    );
}

#[test]
fn intermediate_keys_need_resident_keys() {
    let s = Setup::new(Mode::Default);
    let config = s.config_with(
        "config.yml",
        "ciphertrust",
        None,
        ALL_KEY_ROUTES,
        &["intermediate_key: {ttl: 5m}"],
        "",
    );
    let err = s.try_start(&config, &[]).err().expect("kes started");
    assert!(
        err.contains("intermediate_key") && err.contains("master_keys: resident"),
        "{err}"
    );
}

/// A node with the setting off makes resident-key calls on its event loops. Those calls
/// must refuse, as the blocking handlers do, the context an intermediate key is wrapped
/// with: else the wrapped key of any format-2 envelope, sent back as a format-1
/// envelope with that context, would come back decrypted (the intermediate key in the
/// clear), and a generate with it would make a wrap of the caller's choosing.
fn a_node_without_intermediate_keys_is_no_oracle_for_them(mode: Mode) {
    let s = Setup::new(mode);
    let a = node(&s, "a.yml", "5m", 1_000_000, &[], "");
    let mut ca = a.client(&s.app);
    assert_eq!(ca.post("/v1/key/create/k", b"").status, 200);
    let (plain, ct) = generate_ok(&mut ca, "k", "ctx");
    let b = node_without_iks(&s, "b.yml");
    let mut cb = b.client(&s.app);
    // The node itself uses the key (the key cache knows it: the loop makes the calls).
    let (own_plain, own) = generate_ok(&mut cb, "k", "ctx");
    decrypts_to(&mut cb, "k", &own, "ctx", &own_plain);

    let wrapped = header(&ct)[4..].to_vec();
    let as_format_1 = [&[0xC7, b'K', b'R', 1][..], &wrapped].concat();
    let reserved = [&[0xC7, b'K', b'R', b'I', b'K', 1][..], b"k"].concat();
    let body = serde_json::json!({
        "ciphertext": B64.encode(&as_format_1),
        "context": B64.encode(&reserved),
    });
    let decrypts_before = s.sim.count(Route::Decrypt);
    let r = cb.post("/v1/key/decrypt/k", body.to_string().as_bytes());
    assert_eq!(
        (r.status, r.message()),
        (400, NOT_AUTHENTIC.into()),
        "{}",
        r.text()
    );
    assert_eq!(
        s.sim.count(Route::Decrypt),
        decrypts_before,
        "never sent to CipherTrust"
    );
    for route in ["generate", "encrypt"] {
        let body = serde_json::json!({ "plaintext": B64.encode([7u8; 32]), "context": B64.encode(&reserved) });
        let r = cb.post(&format!("/v1/key/{route}/k"), body.to_string().as_bytes());
        assert_eq!(r.status, 400, "{route}: {}", r.text());
        assert!(
            r.message().starts_with("context is reserved"),
            "{route}: {}",
            r.text()
        );
    }
    // The envelope itself still opens there (its key is unwrapped on the pool).
    decrypts_to(&mut cb, "k", &ct, "ctx", &plain);
}
