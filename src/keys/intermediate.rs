//! Intermediate keys (IKs) of resident keys (`intermediate_key:` of the CipherTrust
//! keystore section; docs/resident-keys.md, "Intermediate keys").
//!
//! Without them every data key of a resident key is one CipherTrust call. With them, kes
//! draws a random 256-bit IK per key (and key version) and has the keystore wrap it once
//! ([`KeyStore::seal`], with associated data that names the key and the IK's purpose);
//! data keys are then sealed here under the IK, and each envelope carries the wrapped
//! IK, so that any node can open it by having the keystore unwrap the IK once
//! ([`KeyStore::unseal`]). An IK is used for at most `ttl` after it was wrapped or
//! unwrapped and for at most `max_uses` data keys, never longer: that bounds how long a
//! key disabled in CipherTrust keeps working here.
//!
//! The IKs live in [`LockedSlots`] (locked into RAM, out of core dumps, wiped when let
//! go), in one bounded map: at most [`MAX_ENTRIES`] IKs and [`MAX_BYTES`] of names and
//! headers. Getting an IK is single flight: concurrent requests that need the same IK
//! share one keystore call, so a busy key costs one wrap per TTL per node, and a busy IK
//! one unwrap per TTL per node. A sweeper thread wipes spent IKs.
//!
//! With the setting off, envelopes under IKs still open (one unwrap per decrypt, nothing
//! kept), so turning it off never strands data.

mod maps;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::IntermediateKeySettings;
use crate::crypto::{fill_random, random_dek};
use crate::keystore::sealed::{IK_LEN, IK_NONCE_LEN, IkEnvelope, ik_header, seal_under, wrap_aad};
use crate::keystore::{KeyStore, KeyStoreError, StoredValue};
use crate::memory::{LockedSlot, LockedSlots};
use crate::observe::IkStats;
use crate::sync::lock;
use maps::{Flight, Id, Maps, Side, Slot, entry_bytes};
pub use maps::{Ik, MAX_BYTES, MAX_ENTRIES};

/// Locked slots beyond [`MAX_ENTRIES`], for IKs that requests in flight still hold after
/// the map let them go.
const SPARE_SLOTS: usize = 1024;
/// How many times a request looks for a usable IK before it gets one of its own.
const ROUNDS: usize = 3;
/// How a request got its IK, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IkUse {
    /// Kept here: no keystore call.
    Cached,
    /// This request had the keystore wrap a new IK.
    Wrapped,
    /// This request had the keystore unwrap the IK.
    Unwrapped,
}

impl IkUse {
    /// The value of the audit event's `intermediate_key` field.
    pub fn audit_name(self) -> &'static str {
        match self {
            IkUse::Cached => "cached",
            IkUse::Wrapped => "wrapped",
            IkUse::Unwrapped => "unwrapped",
        }
    }
}

/// The IKs of one server.
pub struct IntermediateKeys {
    /// `None`: off (envelopes under IKs still open, nothing is kept).
    settings: Option<IntermediateKeySettings>,
    slots: OnceLock<Option<Arc<LockedSlots>>>,
    maps: Mutex<Maps>,
    hits: [AtomicU64; 2],
    misses: [AtomicU64; 2],
}
/// Ends a flight that its leader left without an outcome (a panic): its waiters get an
/// error instead of waiting forever, and the next request starts a new one.
struct Leading<'a> {
    keys: &'a IntermediateKeys,
    id: Id<'a>,
    flight: Arc<Flight>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if lock(&self.flight.outcome).is_some() {
            return;
        }
        let mut maps = lock(&self.keys.maps);
        if matches!(maps.get_mut(self.id), Some(Slot::Loading(f)) if Arc::ptr_eq(f, &self.flight)) {
            maps.take(self.id);
        }
        drop(maps);
        self.flight.finish(Err(KeyStoreError::Other(
            "getting an intermediate key failed; try again".into(),
        )));
    }
}

impl IntermediateKeys {
    /// The IKs of a server with `settings` (`None`: off), and with the setting on, the
    /// sweeper thread that wipes spent IKs (it ends when the IKs are dropped).
    pub fn new(settings: Option<IntermediateKeySettings>) -> Arc<IntermediateKeys> {
        let keys = IntermediateKeys::without_sweeper(settings);
        if let Some(settings) = settings {
            // The locked memory now, so that a memlock limit too small shows at start.
            let _ = keys.locked_slots();
            let weak = Arc::downgrade(&keys);
            let every = (settings.ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            let spawned = thread::Builder::new()
                .name("kes-ik-sweep".into())
                .spawn(move || sweep_until_dropped(&weak, every));
            if let Err(err) = spawned {
                log::warn!(
                    "intermediate keys: cannot start the sweeper thread ({err}); spent keys are wiped only when room is needed"
                );
            }
        }
        keys
    }

    /// The IKs without the sweeper thread: spent IKs stay in memory (never used) until
    /// room is needed. For the tests of the rules that must hold without it.
    fn without_sweeper(settings: Option<IntermediateKeySettings>) -> Arc<IntermediateKeys> {
        Arc::new(IntermediateKeys {
            settings,
            slots: OnceLock::new(),
            maps: Mutex::default(),
            hits: Default::default(),
            misses: Default::default(),
        })
    }

    /// Whether the setting is on: new data keys are sealed under IKs.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// Seals `plaintext` under the IK of key `name` for new data keys (`warm`, taken for
    /// this request on an event loop, or kept here, or a new one the keystore wraps now),
    /// with `context` as associated data. `version`: the newest version of the key known
    /// to the server; an IK of an older one is not used.
    pub fn seal(
        &self,
        store: &dyn KeyStore,
        name: &str,
        version: u32,
        plaintext: &[u8],
        context: &[u8],
        warm: Option<&Arc<Ik>>,
    ) -> Result<(Vec<u8>, IkUse), KeyStoreError> {
        let (ik, how) = match warm {
            Some(ik) => (Arc::clone(ik), IkUse::Cached),
            None => self.sealing_ik(store, name, version)?,
        };
        let mut nonce = [0; IK_NONCE_LEN];
        fill_random(&mut nonce);
        let envelope = seal_under(ik.key(), &ik.header, &nonce, plaintext, context);
        Ok((envelope, how))
    }

    /// Opens envelope `envelope` of key `name`: `Ok(None)` when it is not authentic (the
    /// keystore refuses to unwrap its IK for this key, or the data key does not open).
    pub fn open(
        &self,
        store: &dyn KeyStore,
        name: &str,
        envelope: &IkEnvelope,
        context: &[u8],
        warm: Option<&Arc<Ik>>,
    ) -> Result<(Option<StoredValue>, IkUse), KeyStoreError> {
        let (ik, how) = match warm.filter(|ik| *ik.header == *envelope.header) {
            Some(ik) => (Arc::clone(ik), IkUse::Cached),
            None => match self.opening_ik(store, name, envelope)? {
                (Some(ik), how) => (ik, how),
                (None, how) => return Ok((None, how)),
            },
        };
        Ok((envelope.open(ik.key(), context), how))
    }

    /// The IK for new data keys of `name` (version `version` or newer), with one use
    /// taken, if one is kept: never a keystore call, never a wait. For the event loops.
    pub fn warm_seal(&self, name: &str, version: u32) -> Option<Arc<Ik>> {
        self.settings?;
        self.take_use(Id::Seal(name), |ik| ik.version >= version)
    }

    /// The IK that opens envelopes of `name` starting with `header`, with one use taken,
    /// if one is kept: never a keystore call, never a wait.
    pub fn warm_open(&self, name: &str, header: &[u8]) -> Option<Arc<Ik>> {
        self.settings?;
        self.take_use(Id::Open(name, header), |_| true)
    }

    /// Lets every IK of `name` go (deleted, or gone from the keystore).
    pub fn forget(&self, name: &str) {
        self.let_go(name, true);
    }

    /// Lets the IK for new data keys of `name` go (rotated: new data keys take a new IK
    /// of the new version at once); IKs that open older envelopes stay.
    pub fn rotated(&self, name: &str) {
        self.let_go(name, false);
    }

    /// Removes the IK for new data keys of `name`, and with `opening_too` every IK of it;
    /// a wrap or unwrap in progress still answers its requests but is not kept.
    fn let_go(&self, name: &str, opening_too: bool) {
        let mut maps = lock(&self.maps);
        maps.take(Id::Seal(name));
        if opening_too {
            if let Some(of_name) = maps.opening.remove(name) {
                for slot in of_name.values() {
                    if let Slot::Ready { ik, .. } = slot {
                        maps.entries -= 1;
                        maps.bytes -= entry_bytes(name, ik);
                    }
                }
            }
        }
    }

    /// The numbers for `/v1/metrics`, with the setting on.
    pub fn stats(&self) -> Option<IkStats> {
        self.settings?;
        let now = Instant::now();
        let mut maps = lock(&self.maps);
        maps.drop_where(|_, ik, uses_left| uses_left == 0 || now >= ik.expires);
        let live = |side: Side| maps.ready().filter(|(s, _)| *s == side).count() as u64;
        let count =
            |counters: &[AtomicU64; 2], side: Side| counters[side as usize].load(Ordering::Relaxed);
        Some(IkStats {
            live_seal: live(Side::Seal),
            live_open: live(Side::Open),
            hits_seal: count(&self.hits, Side::Seal),
            hits_open: count(&self.hits, Side::Open),
            misses_seal: count(&self.misses, Side::Seal),
            misses_open: count(&self.misses, Side::Open),
            locked: self
                .slots
                .get()
                .and_then(Option::as_ref)
                .is_some_and(|slots| slots.is_locked()),
        })
    }

    fn sealing_ik(
        &self,
        store: &dyn KeyStore,
        name: &str,
        version: u32,
    ) -> Result<(Arc<Ik>, IkUse), KeyStoreError> {
        let Some(settings) = self.settings else {
            return Err(KeyStoreError::Other(
                "intermediate keys are off: set intermediate_key in the CipherTrust keystore section".into(),
            ));
        };
        let found = self.get(
            Id::Seal(name),
            |ik| ik.version >= version,
            || self.wrap(store, name, settings.ttl).map(Some),
        );
        let (ik, how) = self.forgetting_on_not_found(name, found)?;
        let ik = ik.ok_or_else(|| KeyStoreError::Other("no intermediate key".into()))?;
        if how == IkUse::Wrapped {
            // This node opens its own envelopes without an unwrap.
            let mut maps = lock(&self.maps);
            let id = Id::Open(name, &ik.header);
            if maps.get_mut(id).is_none() {
                maps.make_room(entry_bytes(name, &ik), Instant::now());
                let uses_left = settings.max_uses;
                let slot = Slot::Ready {
                    ik: Arc::clone(&ik),
                    uses_left,
                };
                maps.put(id, slot);
            }
        }
        Ok((ik, how))
    }

    fn opening_ik(
        &self,
        store: &dyn KeyStore,
        name: &str,
        envelope: &IkEnvelope,
    ) -> Result<(Option<Arc<Ik>>, IkUse), KeyStoreError> {
        let found = if self.settings.is_some() {
            let ttl = self.settings.map(|s| s.ttl).unwrap_or_default();
            self.get(
                Id::Open(name, envelope.header),
                |_| true,
                || self.unwrap(store, name, envelope, ttl),
            )
        } else {
            // Off: one unwrap for this decrypt, nothing kept.
            self.misses[Side::Open as usize].fetch_add(1, Ordering::Relaxed);
            self.unwrap(store, name, envelope, Duration::ZERO)
                .map(|ik| (ik.map(Arc::new), IkUse::Unwrapped))
        };
        self.forgetting_on_not_found(name, found)
    }

    /// A keystore that no longer has the key: every IK of it goes at once.
    fn forgetting_on_not_found<T>(
        &self,
        name: &str,
        found: Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        if matches!(found, Err(KeyStoreError::NotFound)) {
            self.forget(name);
        }
        found
    }

    /// A kept IK at `id` that `fits`, with one use taken.
    fn take_use(&self, id: Id, fits: impl Fn(&Ik) -> bool) -> Option<Arc<Ik>> {
        let mut maps = lock(&self.maps);
        match maps.get_mut(id)? {
            Slot::Ready { ik, uses_left }
                if *uses_left > 0 && Instant::now() < ik.expires && fits(ik) =>
            {
                *uses_left -= 1;
                self.hits[id.side() as usize].fetch_add(1, Ordering::Relaxed);
                Some(Arc::clone(ik))
            }
            _ => None,
        }
    }

    /// The IK at `id` with one use taken: a kept one that `fits`, or the one another
    /// request is getting, or one `load` gets now (`Ok(None)` from `load`: not
    /// authentic, shared with the requests that waited).
    fn get(
        &self,
        id: Id,
        fits: impl Fn(&Ik) -> bool,
        load: impl FnOnce() -> Result<Option<Ik>, KeyStoreError>,
    ) -> Result<(Option<Arc<Ik>>, IkUse), KeyStoreError> {
        let side = id.side();
        let miss = match side {
            Side::Seal => IkUse::Wrapped,
            Side::Open => IkUse::Unwrapped,
        };
        let max_uses = self.settings.map_or(1, |s| s.max_uses);
        let mut load = Some(load);
        for _ in 0..ROUNDS {
            if let Some(ik) = self.take_use(id, &fits) {
                return Ok((Some(ik), IkUse::Cached));
            }
            let (flight, leading) = {
                let mut maps = lock(&self.maps);
                match maps.get_mut(id) {
                    Some(Slot::Loading(flight)) => (Arc::clone(flight), false),
                    _ => {
                        let flight = Arc::new(Flight::default());
                        maps.put(id, Slot::Loading(Arc::clone(&flight)));
                        (flight, true)
                    }
                }
            };
            if !leading {
                match flight.wait() {
                    Ok(true) => continue,
                    Ok(false) => return Ok((None, miss)),
                    Err(err) => return Err(err),
                }
            }
            let guard = Leading {
                keys: self,
                id,
                flight,
            };
            self.misses[side as usize].fetch_add(1, Ordering::Relaxed);
            let Some(load) = load.take() else { break };
            let loaded = load();
            let mut maps = lock(&self.maps);
            let ours =
                matches!(maps.get_mut(id), Some(Slot::Loading(f)) if Arc::ptr_eq(f, &guard.flight));
            if ours {
                maps.take(id);
            }
            let outcome = match loaded {
                Ok(Some(ik)) => {
                    let ik = Arc::new(ik);
                    if ours {
                        // The IK's first use is this request's.
                        maps.make_room(entry_bytes(id.name(), &ik), Instant::now());
                        let uses_left = max_uses.saturating_sub(1);
                        maps.put(
                            id,
                            Slot::Ready {
                                ik: Arc::clone(&ik),
                                uses_left,
                            },
                        );
                    }
                    drop(maps);
                    guard.flight.finish(Ok(true));
                    return Ok((Some(ik), miss));
                }
                Ok(None) => Ok(false),
                Err(err) => Err(err),
            };
            drop(maps);
            guard.flight.finish(outcome.clone());
            return outcome.map(|_| (None, miss));
        }
        // Others took every use of the IKs this request waited for: one of its own.
        self.misses[side as usize].fetch_add(1, Ordering::Relaxed);
        let load = load.ok_or_else(|| KeyStoreError::Other("no intermediate key".into()))?;
        Ok((load()?.map(Arc::new), miss))
    }

    fn slot(&self) -> Result<LockedSlot, KeyStoreError> {
        self.locked_slots()
            .and_then(LockedSlots::take)
            .ok_or_else(|| {
                KeyStoreError::Other(
                    "no memory left for intermediate keys (all locked slots in use); try again"
                        .into(),
                )
            })
    }

    /// The locked memory of the IKs, mapped at the first call.
    fn locked_slots(&self) -> Option<&Arc<LockedSlots>> {
        let slots = self.slots.get_or_init(|| {
            match LockedSlots::new(MAX_ENTRIES + SPARE_SLOTS, IK_LEN) {
                Ok(slots) => {
                    if !slots.is_locked() {
                        log::warn!(
                            "intermediate keys are not locked in memory (mlock refused: raise the memlock limit, e.g. LimitMEMLOCK=infinity with systemd); they may be written to swap"
                        );
                    }
                    Some(slots)
                }
                Err(err) => {
                    log::error!("cannot map memory for intermediate keys: {err}");
                    None
                }
            }
        });
        slots.as_ref()
    }

    /// A new IK of key `name`, wrapped by the keystore.
    fn wrap(&self, store: &dyn KeyStore, name: &str, ttl: Duration) -> Result<Ik, KeyStoreError> {
        let started = Instant::now();
        let mut key = self.slot()?;
        key.bytes_mut().copy_from_slice(&random_dek()[..]);
        let wrapped = store.seal(name, key.bytes(), &wrap_aad(name))?;
        let header = ik_header(&wrapped).map_err(|why| {
            KeyStoreError::Other(format!(
                "the keystore's wrap of an intermediate key of '{name}' is unusable: {why}"
            ))
        })?;
        Ok(Ik {
            key,
            header: header.into(),
            version: wrapped.version,
            expires: started + ttl,
        })
    }

    /// The IK that `envelope` carries, unwrapped by the keystore for key `name`; `None`
    /// when the keystore refuses it as not authentic.
    fn unwrap(
        &self,
        store: &dyn KeyStore,
        name: &str,
        envelope: &IkEnvelope,
        ttl: Duration,
    ) -> Result<Option<Ik>, KeyStoreError> {
        let started = Instant::now();
        let Some(plain) = store.unseal(name, &envelope.wrapped, &wrap_aad(name))? else {
            return Ok(None);
        };
        if plain.len() != IK_LEN {
            return Ok(None);
        }
        let mut key = self.slot()?;
        key.bytes_mut().copy_from_slice(&plain);
        Ok(Some(Ik {
            key,
            header: envelope.header.into(),
            version: envelope.wrapped.version,
            expires: started + ttl,
        }))
    }

    /// Wipes the IKs that are spent (expired or used up).
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.maps).drop_where(|_, ik, uses_left| uses_left == 0 || now >= ik.expires);
    }
}

fn sweep_until_dropped(keys: &Weak<IntermediateKeys>, every: Duration) {
    loop {
        thread::sleep(every);
        match keys.upgrade() {
            Some(keys) => keys.sweep(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests;
