//! The intermediate keys a server keeps: one map for those that seal new data keys (by
//! key name) and those that open envelopes (by key name and envelope header), bounded in
//! entries and bytes, each slot either a ready IK with its uses left or a wrap or unwrap
//! in progress ([`Flight`]) that later requests wait for.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::keystore::KeyStoreError;
use crate::keystore::sealed::IK_LEN;
use crate::memory::LockedSlot;
use crate::sync::lock;

/// The most IKs kept at once, for new data keys and for decrypts together.
pub const MAX_ENTRIES: usize = 4096;
/// The most bytes the kept IKs' names and headers may take (their keys are in locked
/// memory besides: 32 bytes each).
pub const MAX_BYTES: usize = 1 << 20;

/// An intermediate key: its bytes in locked memory, and the header of every envelope made
/// under it (which carries the wrapped IK).
pub struct Ik {
    pub(super) key: LockedSlot,
    pub(super) header: Box<[u8]>,
    pub(super) version: u32,
    /// Never used from then on.
    pub(super) expires: Instant,
}

impl Ik {
    pub(super) fn key(&self) -> &[u8; IK_LEN] {
        self.key
            .bytes()
            .first_chunk()
            .expect("IK slots are IK_LEN bytes long")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Seal = 0,
    Open = 1,
}

/// Which IK: the one for new data keys of a key, or the one an envelope carries.
#[derive(Clone, Copy)]
pub(super) enum Id<'a> {
    Seal(&'a str),
    Open(&'a str, &'a [u8]),
}

impl<'a> Id<'a> {
    pub(super) fn name(self) -> &'a str {
        match self {
            Id::Seal(name) | Id::Open(name, _) => name,
        }
    }

    pub(super) fn side(self) -> Side {
        match self {
            Id::Seal(_) => Side::Seal,
            Id::Open(..) => Side::Open,
        }
    }
}

pub(super) enum Slot {
    Ready { ik: Arc<Ik>, uses_left: u64 },
    Loading(Arc<Flight>),
}

/// A wrap or unwrap in progress, which later requests for the same IK wait for.
#[derive(Default)]
pub(super) struct Flight {
    /// `Ok(true)`: the IK is in the map; `Ok(false)`: not authentic; `Err`: the failure.
    pub(super) outcome: Mutex<Option<Result<bool, KeyStoreError>>>,
    done: Condvar,
}

impl Flight {
    pub(super) fn finish(&self, outcome: Result<bool, KeyStoreError>) {
        lock(&self.outcome).get_or_insert(outcome);
        self.done.notify_all();
    }

    pub(super) fn wait(&self) -> Result<bool, KeyStoreError> {
        let mut outcome = lock(&self.outcome);
        loop {
            if let Some(outcome) = &*outcome {
                return outcome.clone();
            }
            outcome = self.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default)]
pub(super) struct Maps {
    pub(super) sealing: HashMap<String, Slot>,
    pub(super) opening: HashMap<String, HashMap<Box<[u8]>, Slot>>,
    /// Ready slots, and the bytes [`entry_bytes`] counts of them.
    pub(super) entries: usize,
    pub(super) bytes: usize,
}

pub(super) fn entry_bytes(name: &str, ik: &Ik) -> usize {
    name.len() + 2 * ik.header.len()
}

impl Maps {
    pub(super) fn get_mut(&mut self, id: Id) -> Option<&mut Slot> {
        match id {
            Id::Seal(name) => self.sealing.get_mut(name),
            Id::Open(name, header) => self.opening.get_mut(name)?.get_mut(header),
        }
    }

    /// Puts `slot` at `id`, and counts it.
    pub(super) fn put(&mut self, id: Id, slot: Slot) {
        self.take(id);
        if let Slot::Ready { ik, .. } = &slot {
            self.entries += 1;
            self.bytes += entry_bytes(id.name(), ik);
        }
        match id {
            Id::Seal(name) => {
                self.sealing.insert(name.to_owned(), slot);
            }
            Id::Open(name, header) => {
                self.opening
                    .entry(name.to_owned())
                    .or_default()
                    .insert(header.into(), slot);
            }
        }
    }

    /// Removes what is at `id`, and uncounts it.
    pub(super) fn take(&mut self, id: Id) -> Option<Slot> {
        let slot = match id {
            Id::Seal(name) => self.sealing.remove(name),
            Id::Open(name, header) => {
                let of_name = self.opening.get_mut(name)?;
                let slot = of_name.remove(header);
                if of_name.is_empty() {
                    self.opening.remove(name);
                }
                slot
            }
        }?;
        if let Slot::Ready { ik, .. } = &slot {
            self.entries -= 1;
            self.bytes -= entry_bytes(id.name(), ik);
        }
        Some(slot)
    }

    /// Drops every ready IK for which `drop` says so.
    pub(super) fn drop_where(&mut self, mut drop: impl FnMut(&str, &Ik, u64) -> bool) {
        let (mut entries, mut bytes) = (0, 0);
        let mut keep = |name: &str, slot: &Slot| match slot {
            Slot::Ready { ik, uses_left } if drop(name, ik, *uses_left) => false,
            Slot::Ready { ik, .. } => {
                entries += 1;
                bytes += entry_bytes(name, ik);
                true
            }
            Slot::Loading(_) => true,
        };
        self.sealing.retain(|name, slot| keep(name, slot));
        self.opening.retain(|name, of_name| {
            of_name.retain(|_, slot| keep(name, slot));
            !of_name.is_empty()
        });
        (self.entries, self.bytes) = (entries, bytes);
    }

    /// Makes room for one more IK of `bytes`: first by dropping spent IKs, then the
    /// IKs that would expire soonest.
    pub(super) fn make_room(&mut self, bytes: usize, now: Instant) {
        let full = |maps: &Maps| maps.entries >= MAX_ENTRIES || maps.bytes + bytes > MAX_BYTES;
        if !full(self) {
            return;
        }
        self.drop_where(|_, ik, uses_left| uses_left == 0 || now >= ik.expires);
        while full(self) {
            let Some(soonest) = self.ready().map(|(_, ik)| ik.expires).min() else {
                return;
            };
            let mut dropped = false;
            self.drop_where(|_, ik, _| {
                let this = !dropped && ik.expires == soonest;
                dropped |= this;
                this
            });
        }
    }

    /// Every ready IK with the side it serves.
    pub(super) fn ready(&self) -> impl Iterator<Item = (Side, &Arc<Ik>)> {
        fn ready(side: Side, slot: &Slot) -> Option<(Side, &Arc<Ik>)> {
            match slot {
                Slot::Ready { ik, .. } => Some((side, ik)),
                Slot::Loading(_) => None,
            }
        }
        self.sealing
            .values()
            .filter_map(|slot| ready(Side::Seal, slot))
            .chain(
                self.opening
                    .values()
                    .flat_map(|of_name| of_name.values())
                    .filter_map(|slot| ready(Side::Open, slot)),
            )
    }
}
