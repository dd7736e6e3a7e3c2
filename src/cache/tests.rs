//! The cache's rules, each on its own: expiry (`any`, `unused`), the offline window,
//! eviction, sweeping, single flight (values, errors, panics) and the keystore prober.

use super::*;
use std::sync::Barrier;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;

const MS: Duration = Duration::from_millis(1);

fn cache(any: u64, unused: u64, offline: u64) -> KeyCache<u32> {
    KeyCache::new(CacheConfig {
        any: MS * any as u32,
        unused: MS * unused as u32,
        offline: MS * offline as u32,
    })
}

/// Loads `name` through the cache and tells whether the loader ran.
fn loaded(cache: &KeyCache<u32>, name: &str) -> bool {
    let mut ran = false;
    cache
        .get_or_load(name, || {
            ran = true;
            Ok::<_, String>(7)
        })
        .unwrap();
    ran
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = CacheConfig::default();
    assert_eq!(config.any, Duration::from_secs(300));
    assert_eq!(config.unused, Duration::from_secs(30));
    assert_eq!(config.offline, Duration::ZERO);
}

#[test]
fn hit_after_miss_and_counters() {
    let cache = cache(10_000, 10_000, 0);
    assert!(loaded(&cache, "a"));
    assert!(!loaded(&cache, "a"));
    assert!(!loaded(&cache, "a"));
    assert!(loaded(&cache, "b"));
    assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 2 });
    assert_eq!(cache.len(), 2);
}

#[test]
fn errors_are_returned_and_not_cached() {
    let cache = cache(10_000, 10_000, 0);
    let err = cache.get_or_load("a", || Err::<u32, _>("down".to_string()));
    assert_eq!(err, Err("down".to_string()));
    assert!(cache.is_empty());
    assert!(loaded(&cache, "a"));
}

#[test]
fn any_drops_old_entries_even_when_used() {
    let cache = cache(300, 0, 0);
    assert!(loaded(&cache, "a"));
    for _ in 0..5 {
        thread::sleep(20 * MS);
        assert!(!loaded(&cache, "a"));
    }
    thread::sleep(250 * MS);
    assert!(
        loaded(&cache, "a"),
        "older than `any`: must be loaded again"
    );
}

#[test]
fn unused_drops_idle_entries_but_keeps_used_ones() {
    let cache = cache(0, 200, 0);
    assert!(loaded(&cache, "busy"));
    assert!(loaded(&cache, "idle"));
    for _ in 0..6 {
        thread::sleep(50 * MS);
        assert!(!loaded(&cache, "busy"), "used every 50 ms: stays");
    }
    assert!(loaded(&cache, "idle"), "idle for 300 ms: dropped");
}

#[test]
fn remove_evicts() {
    let cache = cache(10_000, 10_000, 0);
    assert!(loaded(&cache, "a"));
    cache.remove("a");
    assert!(loaded(&cache, "a"));
}

#[test]
fn remove_during_load_does_not_cache_the_stale_value() {
    let cache = Arc::new(cache(10_000, 10_000, 0));
    let started = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let loader = {
        let (cache, started, release) = (
            Arc::clone(&cache),
            Arc::clone(&started),
            Arc::clone(&release),
        );
        thread::spawn(move || {
            cache.get_or_load("a", || {
                started.wait();
                release.wait();
                Ok::<_, String>(1)
            })
        })
    };
    started.wait();
    cache.remove("a");
    release.wait();
    assert_eq!(loader.join().unwrap(), Ok(1));
    assert!(
        loaded(&cache, "a"),
        "the value loaded before the delete must not stay cached"
    );
}

#[test]
fn offline_window_keeps_entries_beyond_any_and_unused() {
    let cache = cache(100, 100, 800);
    assert!(loaded(&cache, "a"));
    cache.set_offline(true);
    assert!(cache.is_offline());
    thread::sleep(300 * MS);
    assert!(
        !loaded(&cache, "a"),
        "offline: served past `any` and `unused`"
    );
    thread::sleep(600 * MS);
    assert!(loaded(&cache, "a"), "offline window over: dropped");
}

#[test]
fn offline_does_not_revive_entries_that_had_expired() {
    let cache = cache(0, 50, 1_000);
    assert!(loaded(&cache, "a"));
    thread::sleep(80 * MS);
    cache.set_offline(true);
    assert!(
        loaded(&cache, "a"),
        "was already unused too long when the keystore went away"
    );
}

#[test]
fn back_online_applies_the_normal_rules_again() {
    let cache = cache(100, 0, 1_000);
    assert!(loaded(&cache, "a"));
    cache.set_offline(true);
    thread::sleep(150 * MS);
    assert!(!loaded(&cache, "a"));
    cache.set_offline(false);
    assert!(!cache.is_offline());
    assert!(loaded(&cache, "a"), "online again and older than `any`");
}

#[test]
fn repeated_offline_reports_do_not_extend_the_window() {
    let cache = cache(0, 0, 200);
    assert!(loaded(&cache, "a"));
    cache.set_offline(true);
    for _ in 0..5 {
        thread::sleep(50 * MS);
        cache.set_offline(true);
    }
    assert!(
        loaded(&cache, "a"),
        "window counted from the first offline report"
    );
}

#[test]
fn zero_offline_means_normal_expiry_while_offline() {
    let cache = cache(100, 0, 0);
    assert!(loaded(&cache, "a"));
    cache.set_offline(true);
    thread::sleep(150 * MS);
    assert!(loaded(&cache, "a"));
}

#[test]
fn sweep_frees_expired_entries() {
    let cache = cache(50, 0, 0);
    for name in ["a", "b", "c"] {
        assert!(loaded(&cache, name));
    }
    assert_eq!(cache.len(), 3);
    thread::sleep(80 * MS);
    cache.sweep();
    assert_eq!(cache.len(), 0);
}

#[test]
fn single_flight_16_threads_one_load() {
    let cache = Arc::new(cache(10_000, 10_000, 0));
    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (cache, loads, barrier) =
                (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                cache.get_or_load("k", || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(100 * MS);
                    Ok::<_, String>(42)
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(42));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 15,
            misses: 1
        }
    );
}

#[test]
fn single_flight_shares_errors() {
    let cache = Arc::new(cache(10_000, 10_000, 0));
    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (cache, loads, barrier) =
                (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                cache.get_or_load("k", || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(100 * MS);
                    Err::<u32, _>("unreachable".to_string())
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Err("unreachable".to_string()));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_loader_does_not_strand_waiters() {
    let cache = Arc::new(cache(10_000, 10_000, 0));
    let entered = Arc::new(Barrier::new(2));
    let panicker = {
        let (cache, entered) = (Arc::clone(&cache), Arc::clone(&entered));
        thread::spawn(move || {
            let _ = cache.get_or_load("k", || -> Result<u32, String> {
                entered.wait();
                thread::sleep(50 * MS);
                panic!("loader failed");
            });
        })
    };
    entered.wait();
    let value = cache.get_or_load("k", || Ok::<_, String>(5));
    assert_eq!(value, Ok(5));
    assert!(panicker.join().is_err());
}

#[test]
fn watch_follows_the_keystore_status() {
    struct Flaky(AtomicBool);
    impl KeyStore for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn create(&self, _: &str, _: &[u8]) -> Result<(), crate::keystore::KeyStoreError> {
            unimplemented!()
        }
        fn get(
            &self,
            _: &str,
        ) -> Result<crate::keystore::StoredValue, crate::keystore::KeyStoreError> {
            unimplemented!()
        }
        fn delete(&self, _: &str) -> Result<(), crate::keystore::KeyStoreError> {
            unimplemented!()
        }
        fn list(
            &self,
            _: &str,
            _: Option<&str>,
            _: usize,
        ) -> Result<crate::keystore::ListPage, crate::keystore::KeyStoreError> {
            unimplemented!()
        }
        fn status(&self) -> Result<Duration, crate::keystore::KeyStoreError> {
            if self.0.load(Ordering::SeqCst) {
                Ok(Duration::ZERO)
            } else {
                Err(crate::keystore::KeyStoreError::Unreachable("test".into()))
            }
        }
    }
    let store = Arc::new(Flaky(AtomicBool::new(false)));
    let cache = cache(0, 0, 1_000);
    cache.watch(store.clone(), 10 * MS).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cache.is_offline() {
        assert!(Instant::now() < deadline);
        thread::sleep(5 * MS);
    }
    store.0.store(true, Ordering::SeqCst);
    while cache.is_offline() {
        assert!(Instant::now() < deadline);
        thread::sleep(5 * MS);
    }
}
