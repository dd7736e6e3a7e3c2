//! The key cache the server puts in front of every keystore.
//!
//! Fetching a key from a remote keystore (CipherTrust Manager, ...) costs a network round
//! trip, and the keystore may be briefly unreachable. The cache keeps recently used keys in
//! memory so that most requests never leave the process, and keeps serving them for a
//! bounded time while the keystore is offline.
//!
//! # Rules (config.md §4, the *intended* semantics rather than the Go release's defaults bug)
//!
//! * **any**: an entry loaded longer than `any` ago is dropped.
//! * **unused**: an entry not served for `unused` is dropped.
//! * **offline**: while the keystore is offline and `offline` is not zero, entries that were
//!   still fresh when the keystore went offline keep serving — regardless of `any` and
//!   `unused` — until `offline` has passed since it went offline. With `offline` zero the
//!   offline state changes nothing and the two rules above apply.
//!
//! A zero `any` or `unused` disables that rule, as a zero ticker interval does in the original.
//!
//! # Design
//!
//! Expiry is checked lazily on every access, so an expired entry is never served no matter
//! when the sweeper last ran; one background thread per cache (not per entry) sweeps expired
//! entries now and then so that memory does not grow with keys nobody asks for any more.
//!
//! The map is split into shards, each behind its own mutex; a hit takes one shard lock for
//! a hash lookup and a clone of the value, nothing else.
//!
//! A miss is *single flight*: the first caller for a name loads it while later callers for
//! the same name wait for that load and share its result (value or error), so a burst of
//! requests for a key that is not cached makes exactly one keystore call.
//!
//! Who decides that the keystore is offline? The server, through [`KeyCache::set_offline`],
//! or a prober thread started with [`KeyCache::watch`] that asks [`KeyStore::status`] every
//! few seconds, as the original does every 10 s.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::sync::lock;
use std::thread;
use std::time::{Duration, Instant};

use crate::keystore::KeyStore;

/// How long cached keys live; see the module documentation for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Drop an entry this long after it was loaded. Zero: never for age alone.
    pub any: Duration,
    /// Drop an entry not served for this long. Zero: never for disuse alone.
    pub unused: Duration,
    /// While the keystore is offline, keep serving cached entries for this long.
    /// Zero: the offline state does not extend any entry's life.
    pub offline: Duration,
}

impl Default for CacheConfig {
    /// any 5 min, unused 30 s, offline disabled: the documented KES defaults.
    fn default() -> Self {
        Self {
            any: Duration::from_secs(5 * 60),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered without calling the loader: cached entries, and callers that
    /// waited for another caller's load of the same name.
    pub hits: u64,
    /// Lookups that called the loader (whether it succeeded or not).
    pub misses: u64,
}

/// How often the prober of [`KeyCache::watch`] asks the keystore, as in the original.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

const SHARDS: usize = 16;

/// A key cache: name → `V`, where `V` is whatever the server wants to keep per key
/// (typically an `Arc` of the parsed key, so clones are cheap).
pub struct KeyCache<V> {
    inner: Arc<Inner<V>>,
    /// Dropping this sender tells the sweeper thread to stop.
    _stop_sweeper: mpsc::Sender<()>,
}

struct Inner<V> {
    config: CacheConfig,
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
    /// The reference point of `offline_since_nanos`.
    epoch: Instant,
    /// Nanoseconds after `epoch` (plus one, so zero can mean "online") at which the
    /// keystore went offline. An atomic so that the hot path takes no extra lock.
    offline_since_nanos: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// One part of the map, with its own lock.
type Shard<V> = Mutex<HashMap<String, Slot<V>>>;

enum Slot<V> {
    Ready(Entry<V>),
    Loading(Arc<Flight<V>>),
}

struct Entry<V> {
    value: V,
    loaded_at: Instant,
    last_used: Instant,
}

/// What a load in progress will deliver. Errors are stored type-erased because the error
/// type belongs to each call of [`KeyCache::get_or_load`], not to the cache.
type Outcome<V> = Result<V, Arc<dyn Any + Send + Sync>>;

struct Flight<V> {
    state: Mutex<FlightState<V>>,
    done: Condvar,
}

enum FlightState<V> {
    Running,
    Finished(Outcome<V>),
    /// The loader panicked: waiters must load for themselves.
    Abandoned,
}

impl<V: Clone + Send + Sync + 'static> KeyCache<V> {
    /// Creates an empty cache and its sweeper thread.
    pub fn new(config: CacheConfig) -> Self {
        let inner = Arc::new(Inner {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            offline_since_nanos: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let (stop_sweeper, stopped) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&inner);
        let every = sweep_interval(&config);
        let spawned = thread::Builder::new()
            .name("kes-cache-sweep".into())
            .spawn(move || {
                // Ends when the cache is dropped (the sender goes away) or no longer exists.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match weak.upgrade() {
                        Some(inner) => inner.sweep(),
                        None => break,
                    }
                }
            });
        if let Err(err) = spawned {
            // Expiry is still enforced on access; only memory of dead entries lingers.
            log::warn!(
                "key cache: cannot start the sweeper thread ({err}); expired keys are dropped only when asked for"
            );
        }
        Self {
            inner,
            _stop_sweeper: stop_sweeper,
        }
    }

    /// The configuration this cache was built with.
    pub fn config(&self) -> CacheConfig {
        self.inner.config
    }

    /// Returns the cached value of `name`, or calls `load` once to get it.
    ///
    /// Concurrent callers missing the same name share one call of `load`: the first one
    /// runs it, the others wait and receive a clone of its value or its error. (A waiter
    /// whose error type differs from the loader's, or whose loader panicked, loads for
    /// itself.) Errors are not cached: the next call after a failure loads again.
    pub fn get_or_load<E>(&self, name: &str, load: impl FnOnce() -> Result<V, E>) -> Result<V, E>
    where
        E: Clone + Send + Sync + 'static,
    {
        let shard = self.inner.shard(name);
        // Joining another caller's flight can come back empty-handed (its loader panicked, or
        // it failed with another error type); then look again, but only a bounded number of
        // times, so that a call never waits forever.
        for _ in 0..2 {
            let (flight, leading) = {
                let mut map = lock(shard);
                let now = Instant::now();
                match map.get_mut(name) {
                    Some(Slot::Ready(entry)) if self.inner.is_fresh(entry, now) => {
                        entry.last_used = now;
                        self.inner.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(entry.value.clone());
                    }
                    Some(Slot::Loading(flight)) => (Arc::clone(flight), false),
                    _ => {
                        let flight = Arc::new(Flight {
                            state: Mutex::new(FlightState::Running),
                            done: Condvar::new(),
                        });
                        map.insert(name.to_owned(), Slot::Loading(Arc::clone(&flight)));
                        (flight, true)
                    }
                }
            };
            if leading {
                return self.lead(name, &flight, load);
            }
            match wait_for(&flight) {
                Some(Ok(value)) => {
                    self.inner.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Some(Err(shared)) => {
                    if let Some(err) = shared.downcast_ref::<E>() {
                        self.inner.hits.fetch_add(1, Ordering::Relaxed);
                        return Err(err.clone());
                    }
                }
                None => {}
            }
        }
        // Still nothing to share: load without publishing a flight of our own.
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        load()
    }

    /// The cached value of `name` if it is fresh, without ever loading or waiting for a
    /// load: for callers that must not wait. A value returned counts as a hit.
    pub fn get_fresh(&self, name: &str) -> Option<V> {
        let mut map = lock(self.inner.shard(name));
        let now = Instant::now();
        match map.get_mut(name) {
            Some(Slot::Ready(entry)) if self.inner.is_fresh(entry, now) => {
                entry.last_used = now;
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.value.clone())
            }
            _ => None,
        }
    }

    /// Runs `load` as the registered loader of `name`, stores a successful value and hands
    /// the result to every caller waiting on `flight`.
    fn lead<E>(
        &self,
        name: &str,
        flight: &Arc<Flight<V>>,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E>
    where
        E: Clone + Send + Sync + 'static,
    {
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(load));

        let mut map = lock(self.inner.shard(name));
        // Only touch the slot if it is still ours: if `remove` ran meanwhile (the key was
        // deleted), the value loaded before the delete must not be cached.
        let ours = matches!(map.get(name), Some(Slot::Loading(f)) if Arc::ptr_eq(f, flight));
        match result {
            Ok(Ok(value)) => {
                if ours {
                    let now = Instant::now();
                    map.insert(
                        name.to_owned(),
                        Slot::Ready(Entry {
                            value: value.clone(),
                            loaded_at: now,
                            last_used: now,
                        }),
                    );
                }
                drop(map);
                finish(flight, FlightState::Finished(Ok(value.clone())));
                Ok(value)
            }
            Ok(Err(err)) => {
                if ours {
                    map.remove(name);
                }
                drop(map);
                let shared: Arc<dyn Any + Send + Sync> = Arc::new(err.clone());
                finish(flight, FlightState::Finished(Err(shared)));
                Err(err)
            }
            Err(panic) => {
                if ours {
                    map.remove(name);
                }
                drop(map);
                finish(flight, FlightState::Abandoned);
                resume_unwind(panic)
            }
        }
    }

    /// Forgets `name`, e.g. after the key was deleted from the keystore. A load of `name`
    /// in progress still answers its callers but does not store its value.
    pub fn remove(&self, name: &str) {
        lock(self.inner.shard(name)).remove(name);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            lock(shard).retain(|_, slot| matches!(slot, Slot::Loading(_)));
        }
    }

    /// Tells the cache whether the keystore is offline. Going offline starts the `offline`
    /// window; telling it again while offline does not restart the window.
    pub fn set_offline(&self, offline: bool) {
        let slot = &self.inner.offline_since_nanos;
        if offline {
            let since = self.inner.nanos_since_epoch(Instant::now()).max(1);
            let _ = slot.compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
        } else {
            slot.store(0, Ordering::Release);
        }
    }

    /// Whether the keystore was last reported offline. While it is, the server can report
    /// "unreachable" without asking the keystore, as the original does.
    pub fn is_offline(&self) -> bool {
        self.inner.offline_since_nanos.load(Ordering::Acquire) != 0
    }

    /// Starts a thread that asks `store` for its status every `interval` and sets the
    /// offline state from the answer. The thread ends once the cache is dropped.
    pub fn watch(&self, store: Arc<dyn KeyStore>, interval: Duration) -> std::io::Result<()> {
        let weak: Weak<Inner<V>> = Arc::downgrade(&self.inner);
        let interval = interval.max(Duration::from_millis(10));
        thread::Builder::new()
            .name("kes-cache-probe".into())
            .spawn(move || {
                loop {
                    let online = store.status().is_ok();
                    let Some(inner) = weak.upgrade() else { break };
                    let was_offline = inner.offline_since_nanos.load(Ordering::Acquire) != 0;
                    if online == was_offline {
                        log::info!(
                            "key cache: keystore {} is {}",
                            store.describe(),
                            if online { "back online" } else { "offline" }
                        );
                    }
                    if online {
                        inner.offline_since_nanos.store(0, Ordering::Release);
                    } else {
                        let since = inner.nanos_since_epoch(Instant::now()).max(1);
                        let _ = inner.offline_since_nanos.compare_exchange(
                            0,
                            since,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                    drop(inner);
                    thread::sleep(interval);
                }
            })?;
        Ok(())
    }

    /// Drops every expired entry now. The sweeper thread calls this periodically.
    pub fn sweep(&self) {
        self.inner.sweep();
    }

    /// The number of cached entries (loads in progress not counted), expired or not.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .values()
                    .filter(|s| matches!(s, Slot::Ready(_)))
                    .count()
            })
            .sum()
    }

    /// Whether no entry is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hit and miss counters since the cache was created.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
        }
    }
}

impl<V> Inner<V> {
    fn shard(&self, name: &str) -> &Shard<V> {
        let index = (self.hasher.hash_one(name) as usize) % self.shards.len();
        &self.shards[index]
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the keystore went offline, if it is offline and the offline rule is enabled.
    fn offline_since(&self) -> Option<Instant> {
        if self.config.offline.is_zero() {
            return None;
        }
        match self.offline_since_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    fn is_fresh(&self, entry: &Entry<V>, now: Instant) -> bool {
        match self.offline_since() {
            // Serve what was fresh when the keystore went away, for the offline window.
            Some(since) => {
                now < since + self.config.offline && self.fresh_at(entry, since.min(now))
            }
            None => self.fresh_at(entry, now),
        }
    }

    /// The normal rules, `any` and `unused`, evaluated at `at`.
    fn fresh_at(&self, entry: &Entry<V>, at: Instant) -> bool {
        let CacheConfig { any, unused, .. } = self.config;
        let young = any.is_zero() || at.saturating_duration_since(entry.loaded_at) < any;
        let used = unused.is_zero() || at.saturating_duration_since(entry.last_used) < unused;
        young && used
    }

    fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            lock(shard).retain(|_, slot| match slot {
                Slot::Ready(entry) => self.is_fresh(entry, now),
                Slot::Loading(_) => true,
            });
        }
    }
}

/// How often the sweeper runs: often enough that dead entries do not pile up for long,
/// rarely enough to cost nothing. Correctness never depends on it (expiry is checked on
/// every access).
fn sweep_interval(config: &CacheConfig) -> Duration {
    [config.any, config.unused, config.offline]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Waits for another caller's load; `None` if that load panicked.
fn wait_for<V: Clone>(flight: &Flight<V>) -> Option<Outcome<V>> {
    let mut state = lock(&flight.state);
    loop {
        match &*state {
            FlightState::Running => {
                state = flight.done.wait(state).unwrap_or_else(|e| e.into_inner())
            }
            FlightState::Finished(result) => return Some(result.clone()),
            FlightState::Abandoned => return None,
        }
    }
}

fn finish<V>(flight: &Flight<V>, outcome: FlightState<V>) {
    *lock(&flight.state) = outcome;
    flight.done.notify_all();
}

#[cfg(test)]
mod tests;
