//! The CipherTrust keystore and the key cache against the CipherTrust Manager simulator.

#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ctm_sim::{CtmSim, ListQuirk, REFRESH_TOKEN, Route};
use kes::cache::{CacheConfig, KeyCache};
use kes::keystore::ciphertrust::{CALL_BUDGET, CipherTrust, CipherTrustConfig};
use kes::keystore::{KeyStore, KeyStoreError};
use zeroize::Zeroizing;

const MS: Duration = Duration::from_millis(1);

fn config(sim: &CtmSim) -> CipherTrustConfig {
    let mut cfg = CipherTrustConfig::new(sim.endpoint(), Zeroizing::new(REFRESH_TOKEN.to_string()));
    cfg.ca = Some(sim.ca_file().to_path_buf());
    cfg
}

fn connect(sim: &CtmSim) -> CipherTrust {
    CipherTrust::connect(config(sim)).expect("connect to the simulator")
}

/// Polls `check` every 20 ms until it holds; false if `limit` passes first.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(20 * MS);
    }
    check()
}

fn is_unreachable<T>(result: &Result<T, KeyStoreError>) -> bool {
    matches!(result, Err(KeyStoreError::Unreachable(_)))
}

type Cache = KeyCache<Arc<Vec<u8>>>;

fn load(cache: &Cache, store: &dyn KeyStore, name: &str) -> Result<Arc<Vec<u8>>, KeyStoreError> {
    cache.get_or_load(name, || {
        store.get(name).map(|value| Arc::new(value.to_vec()))
    })
}

#[test]
fn keys_land_as_seed_secrets() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    assert_eq!(store.describe(), format!("ciphertrust:{}", sim.endpoint()));

    store.create("my-key", b"c3RvcmVkIHZhbHVl").unwrap();
    assert_eq!(sim.secret("my-key").as_deref(), Some("c3RvcmVkIHZhbHVl"));
    assert_eq!(sim.secret_type("my-key").as_deref(), Some("seed"));
    assert_eq!(&store.get("my-key").unwrap()[..], b"c3RvcmVkIHZhbHVl");

    assert_eq!(store.create("my-key", b"other"), Err(KeyStoreError::Exists));
    assert_eq!(
        sim.secret("my-key").as_deref(),
        Some("c3RvcmVkIHZhbHVl"),
        "an existing key is never overwritten"
    );

    // The legacy JSON form needs escaping inside the JSON string.
    let legacy =
        br#"{"bytes":"AAAA","algorithm":"AES256-GCM_SHA256","created_at":"2020-01-01T00:00:00Z"}"#;
    store.create("legacy", legacy).unwrap();
    assert_eq!(&store.get("legacy").unwrap()[..], legacy);

    store.delete("my-key").unwrap();
    assert_eq!(sim.secret("my-key"), None);
    assert_eq!(store.get("my-key").unwrap_err(), KeyStoreError::NotFound);
    store
        .delete("my-key")
        .expect("CipherTrust's 404 counts as deleted");
    assert_eq!(sim.count(Route::Token), 1);
}

#[test]
fn trailing_slash_in_the_endpoint_is_ignored() {
    let sim = CtmSim::start();
    let mut cfg = config(&sim);
    cfg.endpoint.push('/');
    let store = CipherTrust::connect(cfg).unwrap();
    store.create("k", b"v").unwrap();
    assert_eq!(sim.secret("k").as_deref(), Some("v"));
}

#[test]
fn a_401_gets_a_new_token_and_the_call_succeeds() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    store.create("k", b"v").unwrap();
    sim.expire_all_tokens();
    assert_eq!(&store.get("k").unwrap()[..], b"v");
    assert_eq!(sim.count(Route::Token), 2);
    assert_eq!(
        sim.count(Route::Export),
        2,
        "the refused export and its repetition"
    );
}

#[test]
fn a_burst_of_401s_makes_one_token_request() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    store.create("k", b"v").unwrap();
    sim.set_latency(50 * MS);
    sim.expire_all_tokens();
    thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| assert_eq!(&store.get("k").unwrap()[..], b"v"));
        }
    });
    assert_eq!(sim.count(Route::Token), 2);
}

#[test]
fn tokens_expiring_every_second_cause_no_failures_in_2000_operations() {
    let sim = CtmSim::start();
    sim.set_token_secs(1);
    sim.set_latency(3 * MS);
    let store = connect(&sim);
    let stop = AtomicBool::new(false);
    let failures = AtomicUsize::new(0);
    let operations = AtomicUsize::new(0);

    thread::scope(|scope| {
        scope.spawn(|| {
            // Revoke early now and then too, so the 401 path is exercised besides expiry.
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(700 * MS);
                sim.expire_all_tokens();
            }
        });
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (store, failures, operations) = (&store, &failures, &operations);
                scope.spawn(move || {
                    for i in 0..167 {
                        let name = format!("w{worker}-{i}");
                        let results = [
                            store.create(&name, b"value").err(),
                            store.get(&name).err(),
                            store.delete(&name).err(),
                        ];
                        for err in results.into_iter().flatten() {
                            eprintln!("operation on {name} failed: {err}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                        operations.fetch_add(3, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(operations.into_inner() >= 2000);
    assert_eq!(failures.into_inner(), 0);
    let tokens = sim.count(Route::Token);
    eprintln!("2000 operations used {tokens} tokens");
    assert!(tokens >= 3, "tokens were renewed: {tokens}");
    assert_eq!(sim.secret_count(), 0);
}

#[test]
fn offline_cache_serves_cached_keys_and_the_store_recovers() {
    let sim = CtmSim::start();
    let store: Arc<dyn KeyStore> = Arc::new(connect(&sim));
    store.create("cached", b"v1").unwrap();
    store.create("uncached", b"v2").unwrap();

    // `any`/`unused` leave room for the prober's first failing probe: on a loaded machine
    // it can take a second (a pooled connection cut by go_down is retried after a pause).
    let offline_window = Duration::from_secs(3);
    let cache: Cache = KeyCache::new(CacheConfig {
        any: 1500 * MS,
        unused: 1500 * MS,
        offline: offline_window,
    });
    assert_eq!(&load(&cache, &*store, "cached").unwrap()[..], b"v1");
    assert_eq!(sim.count(Route::Export), 1);
    cache.watch(Arc::clone(&store), 20 * MS).unwrap();

    sim.go_down();
    assert!(eventually(Duration::from_secs(2), || cache.is_offline()));
    let offline_seen = Instant::now();

    // Past `any` and `unused`: still served, from memory.
    thread::sleep(1600 * MS);
    assert_eq!(&load(&cache, &*store, "cached").unwrap()[..], b"v1");

    let started = Instant::now();
    let missing = load(&cache, &*store, "uncached");
    assert!(is_unreachable(&missing), "{missing:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails at once: {:?}",
        started.elapsed()
    );

    let created = store.create("new", b"v3");
    assert!(is_unreachable(&created), "{created:?}");
    assert!(is_unreachable(&store.status()));

    // The offline window runs out.
    thread::sleep(
        (offline_seen + offline_window + 100 * MS).saturating_duration_since(Instant::now()),
    );
    assert!(is_unreachable(&load(&cache, &*store, "cached")));

    sim.come_up();
    assert!(eventually(Duration::from_secs(3), || !cache.is_offline()));
    let exports = sim.count(Route::Export);
    assert_eq!(&load(&cache, &*store, "cached").unwrap()[..], b"v1");
    assert_eq!(sim.count(Route::Export), exports + 1);
    assert_eq!(
        sim.secret("new"),
        None,
        "the failed create left nothing behind"
    );
    store.create("new", b"v3").unwrap();
    assert_eq!(sim.secret("new").as_deref(), Some("v3"));
}

#[test]
fn store_started_while_ctm_is_down_becomes_usable_when_it_comes_up() {
    let sim = CtmSim::start();
    sim.go_down();
    let started = Instant::now();
    let store =
        CipherTrust::connect(config(&sim)).expect("an unreachable CipherTrust is no startup error");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(is_unreachable(&store.get("k")));
    assert!(is_unreachable(&store.create("k", b"v")));
    assert!(is_unreachable(&store.status()));

    thread::sleep(500 * MS);
    sim.come_up();
    assert!(eventually(Duration::from_secs(5), || store.get("k")
        == Err(KeyStoreError::NotFound)));
    store.create("k", b"v").unwrap();
    assert!(store.status().is_ok());
}

#[test]
fn store_started_while_ctm_answers_5xx_becomes_usable() {
    let sim = CtmSim::start();
    sim.fail_with(Some(503));
    let store =
        CipherTrust::connect(config(&sim)).expect("5xx at start is an outage, not a config error");
    assert!(is_unreachable(&store.get("k")));
    sim.fail_with(None);
    assert!(eventually(Duration::from_secs(5), || store.get("k")
        == Err(KeyStoreError::NotFound)));
}

#[test]
fn two_stores_on_one_ctm_see_each_others_keys() {
    let sim = CtmSim::start();
    let a = connect(&sim);
    let b = connect(&sim);
    a.create("from-a", b"1").unwrap();
    b.create("from-b", b"2").unwrap();
    assert_eq!(&b.get("from-a").unwrap()[..], b"1");
    assert_eq!(&a.get("from-b").unwrap()[..], b"2");
    assert_eq!(a.list("", None, 100).unwrap().names, ["from-a", "from-b"]);
    assert_eq!(b.create("from-a", b"x"), Err(KeyStoreError::Exists));
    b.delete("from-a").unwrap();
    assert_eq!(a.get("from-a"), Err(KeyStoreError::NotFound));
}

#[test]
fn listing_2500_keys_is_complete_and_sorted() {
    let sim = CtmSim::start();
    // Inserted out of order: the store must sort.
    for i in (0..2500).rev() {
        sim.insert_secret(&format!("key-{i:05}"), "v");
    }
    let store = connect(&sim);

    let mut names = Vec::new();
    let mut start: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list("", start.as_deref(), 1024).unwrap();
        pages += 1;
        names.extend(page.names);
        match page.continue_at {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..2500).map(|i| format!("key-{i:05}")).collect();
    assert_eq!(names, expected);
    assert_eq!(
        sim.count(Route::List),
        3 * 13,
        "13 CipherTrust pages of 200 per listing"
    );

    let page = store.list("key-024", None, 1024).unwrap();
    assert_eq!(page.names.len(), 100);
    assert_eq!(page.continue_at, None);
}

#[test]
fn listing_guards_against_a_misbehaving_ctm() {
    let sim = CtmSim::start();
    for i in 0..450 {
        sim.insert_secret(&format!("k{i}"), "v");
    }
    let store = connect(&sim);

    sim.set_list_quirk(ListQuirk::EmptyPagesAfterFirst);
    let started = Instant::now();
    match store.list("", None, 10) {
        Err(KeyStoreError::Other(msg)) => assert!(msg.contains("empty page"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(sim.count(Route::List), 2);

    sim.set_list_quirk(ListQuirk::WrongSkip);
    match store.list("", None, 10) {
        Err(KeyStoreError::Other(msg)) => assert!(msg.contains("out of step"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_thousand_cache_loads_make_one_export_per_cache_period() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    store.create("hot", b"v").unwrap();
    let cache: Cache = KeyCache::new(CacheConfig {
        any: 700 * MS,
        unused: Duration::from_secs(10),
        offline: Duration::ZERO,
    });

    let burst = |cache: &Cache| {
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..125 {
                        assert_eq!(&load(cache, &store, "hot").unwrap()[..], b"v");
                    }
                });
            }
        });
    };
    burst(&cache);
    assert_eq!(sim.count(Route::Export), 1);
    thread::sleep(800 * MS);
    burst(&cache);
    assert_eq!(sim.count(Route::Export), 2);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1998, 2));
}

#[test]
fn wrong_refresh_token_is_a_clear_startup_error() {
    let sim = CtmSim::start();
    let mut cfg = config(&sim);
    cfg.refresh_token = Zeroizing::new("wrong-refresh-token-4711".to_string());
    let err = CipherTrust::connect(cfg).unwrap_err();
    let KeyStoreError::Other(msg) = &err else {
        panic!("expected Other, got {err:?}")
    };
    assert!(msg.contains("refresh token was rejected"), "{msg}");
    assert!(msg.contains("401"), "{msg}");
    assert!(
        msg.contains("invalid refresh token"),
        "CipherTrust's reason is kept: {msg}"
    );
    assert!(
        !msg.contains("wrong-refresh-token-4711") && !msg.contains(REFRESH_TOKEN),
        "{msg}"
    );

    let mut cfg = config(&sim);
    cfg.domain = "other-domain".into();
    assert!(matches!(
        CipherTrust::connect(cfg),
        Err(KeyStoreError::Other(_))
    ));
}

#[test]
fn refresh_token_revoked_later_is_reported_by_status() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    store.create("k", b"v").unwrap();
    sim.set_refresh_token("a-new-refresh-token-after-rotation");
    sim.expire_all_tokens();
    match store.get("k") {
        Err(KeyStoreError::Other(msg)) => {
            assert!(msg.contains("refresh token was rejected"), "{msg}");
            assert!(!msg.contains(REFRESH_TOKEN), "{msg}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    match store.status() {
        Err(KeyStoreError::Other(msg)) => {
            assert!(msg.contains("refresh token was rejected"), "{msg}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn untrusted_server_certificate_is_a_startup_error() {
    let sim = CtmSim::start();
    let other = CtmSim::start();
    let mut cfg = config(&sim);
    cfg.ca = Some(other.ca_file().to_path_buf());
    match CipherTrust::connect(cfg) {
        Err(KeyStoreError::Other(msg)) => assert!(msg.contains("tls.ca"), "{msg}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(sim.count(Route::Token), 0);

    // And with verification explicitly off, it connects.
    let mut cfg = config(&sim);
    cfg.ca = Some(other.ca_file().to_path_buf());
    cfg.insecure_skip_verify = true;
    assert!(CipherTrust::connect(cfg).is_ok());
}

#[test]
fn server_errors_are_retried_twice() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    store.create("k", b"v").unwrap();

    sim.fail_next(2);
    assert_eq!(&store.get("k").unwrap()[..], b"v");
    assert_eq!(sim.count(Route::Export), 3);

    sim.fail_with(Some(500));
    let started = Instant::now();
    match store.get("k") {
        Err(KeyStoreError::Other(msg)) => {
            assert!(
                msg.contains("500") && msg.contains("simulated failure"),
                "{msg}"
            )
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(sim.count(Route::Export), 6);
    assert!(started.elapsed() < Duration::from_secs(3));
    sim.fail_with(None);
}

#[test]
fn create_repeated_after_a_5xx_that_stored_the_key_succeeds() {
    // CipherTrust stored the secret but answered 503 (as a proxy timing out would); the
    // repetition then meets 409 — which must not be reported as "key exists".
    let sim = CtmSim::start();
    let store = connect(&sim);
    sim.insert_secret("k", "v");
    sim.fail_next(1);
    assert_eq!(store.create("k", b"v"), Ok(()));
    // Without an earlier failure, 409 is "exists"; with a different value too.
    assert_eq!(store.create("k", b"v"), Err(KeyStoreError::Exists));
    sim.fail_next(1);
    assert_eq!(store.create("k", b"different"), Err(KeyStoreError::Exists));
}

#[test]
fn status_measures_the_round_trip_without_a_token() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    sim.set_latency(100 * MS);
    let latency = store.status().unwrap();
    assert!(latency >= 100 * MS, "{latency:?}");
    assert_eq!(sim.count(Route::Probe), 1);
    sim.fail_with(Some(500));
    assert!(store.status().is_ok(), "any HTTP answer means reachable");
    sim.fail_with(None);
    sim.set_latency(Duration::ZERO);
    sim.go_down();
    assert!(is_unreachable(&store.status()));
}

#[test]
fn debug_output_has_no_secrets() {
    let sim = CtmSim::start();
    let cfg = config(&sim);
    assert!(!format!("{cfg:?}").contains(REFRESH_TOKEN));
    let store = CipherTrust::connect(cfg).unwrap();
    let shown = format!("{store:?}");
    assert!(
        !shown.contains(REFRESH_TOKEN) && !shown.contains("eyJ"),
        "{shown}"
    );
}

#[test]
fn a_ctm_that_stops_answering_fails_within_the_call_budget() {
    let sim = CtmSim::start();
    let store = connect(&sim);
    sim.set_hang(true);
    thread::scope(|scope| {
        let status = scope.spawn(|| {
            let started = Instant::now();
            (store.status(), started.elapsed())
        });
        let started = Instant::now();
        let result = store.get("k");
        let elapsed = started.elapsed();
        assert!(is_unreachable(&result), "{result:?}");
        assert!(
            elapsed >= CALL_BUDGET - 500 * MS && elapsed < CALL_BUDGET + 1500 * MS,
            "{elapsed:?}"
        );
        let (status, elapsed) = status.join().unwrap();
        assert!(is_unreachable(&status), "{status:?}");
        assert!(elapsed < CALL_BUDGET + 1500 * MS, "{elapsed:?}");
    });
    sim.set_hang(false);
    assert_eq!(store.get("k"), Err(KeyStoreError::NotFound));
}
