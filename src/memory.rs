//! Process hardening for a key server: no core dumps, memory locked where permitted,
//! enough file descriptors for many clients; and [`LockedSlots`], small pieces of memory
//! that are locked whatever the process's limit allows for the rest.

use std::sync::{Arc, Mutex};

use zeroize::{Zeroize, Zeroizing};

/// Applies what the platform permits and says clearly what it could not.
pub fn harden() {
    disable_core_dumps();
    raise_open_file_limit();
    lock_memory();
}

fn disable_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        // Not dumpable: no core file, and no ptrace by other processes of the same user.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < limit.rlim_max
    {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is valid.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Locks memory so keys are never swapped out. Pages are locked as they are touched
/// (MCL_ONFAULT), so locking costs no extra memory. Locking is skipped when the limit
/// is too small to run under: with MCL_FUTURE an allocation past the limit would fail.
fn lock_memory() {
    const ENOUGH: libc::rlim_t = 1 << 30;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < ENOUGH {
        log::warn!(
            "memory is not locked: the memlock limit is {} KiB; to keep keys out of swap run kes with LimitMEMLOCK=infinity (systemd) or 'ulimit -l unlimited'",
            limit.rlim_cur / 1024
        );
        return;
    }
    // SAFETY: plain syscall.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        log::info!("memory is locked: keys are never written to swap");
    } else {
        log::warn!(
            "memory is not locked: mlockall failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Appends `bytes` to a buffer of secrets. When it must grow, a new buffer is allocated
/// and the old one wiped, never reallocated in place: a reallocation would leave the old
/// copy in freed memory.
pub fn extend_wiped(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            (buf.capacity() * 2).max(needed).max(1024),
        ));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(bytes);
}

/// Drops the first `n` bytes of a buffer of secrets, wiping the copies that moving the
/// rest forward leaves behind in its spare capacity.
pub fn drain_front_wiped(buf: &mut Vec<u8>, n: usize) {
    buf.drain(..n);
    let spare = buf.spare_capacity_mut();
    let vacated = n.min(spare.len());
    for byte in &mut spare[..vacated] {
        byte.write(0);
    }
}

/// A fixed number of equal slots in one mapping of its own: locked into RAM (`mlock`, so
/// never written to swap) and left out of core dumps (`MADV_DONTDUMP`). A slot is wiped
/// when it is given back. For keys that live long (intermediate keys) where
/// `mlockall` may not have been permitted: one mapping locked once costs a few pages of
/// the memlock limit, not a gigabyte.
pub struct LockedSlots {
    base: *mut u8,
    len: usize,
    slot: usize,
    free: Mutex<Vec<usize>>,
    locked: bool,
}

// SAFETY: the mapping is owned by this value; each slot is reached only through the one
// `LockedSlot` that holds its index (or, when free, by nobody), and the free list is
// behind a mutex.
unsafe impl Send for LockedSlots {}
unsafe impl Sync for LockedSlots {}

impl LockedSlots {
    /// `count` slots of `slot` bytes each. Fails only when the mapping cannot be made;
    /// memory that cannot be locked (the memlock limit) is used unlocked, which
    /// [`LockedSlots::is_locked`] tells.
    pub fn new(count: usize, slot: usize) -> std::io::Result<Arc<LockedSlots>> {
        let len = count.max(1) * slot.max(1);
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `base..base+len` is the mapping just made.
        let locked = unsafe {
            libc::madvise(base, len, libc::MADV_DONTDUMP);
            libc::mlock(base, len) == 0
        };
        Ok(Arc::new(LockedSlots {
            base: base.cast(),
            len,
            slot: slot.max(1),
            free: Mutex::new((0..count.max(1)).rev().collect()),
            locked,
        }))
    }

    /// Whether the slots are locked into RAM (the memlock limit allowed it).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// A free slot (all zeros), or `None` when every slot is taken.
    pub fn take(self: &Arc<Self>) -> Option<LockedSlot> {
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(LockedSlot {
            slots: Arc::clone(self),
            index,
        })
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        self.len / self.slot - self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for LockedSlots {
    fn drop(&mut self) {
        // Every slot was wiped when given back (a slot holds an `Arc` of this).
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One slot of [`LockedSlots`], wiped and given back when dropped.
pub struct LockedSlot {
    slots: Arc<LockedSlots>,
    index: usize,
}

impl LockedSlot {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slot lies inside the mapping, and only this value reaches it.
        unsafe {
            std::slice::from_raw_parts(
                self.slots.base.add(self.index * self.slots.slot),
                self.slots.slot,
            )
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.slots.base.add(self.index * self.slots.slot),
                self.slots.slot,
            )
        }
    }
}

impl Drop for LockedSlot {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        self.slots
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_wiped_appends_and_grows_into_a_new_buffer() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        extend_wiped(&mut buf, b"ab");
        let first = buf.as_ptr();
        assert_eq!((&buf[..], buf.capacity()), (&b"ab"[..], 4));
        extend_wiped(&mut buf, b"cd");
        assert_eq!((&buf[..], buf.as_ptr()), (&b"abcd"[..], first));
        let long = vec![7u8; 3000];
        extend_wiped(&mut buf, &long);
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(&buf[4..], &long[..]);
        assert!(buf.capacity() >= 3004);
    }

    #[test]
    fn drain_front_wiped_leaves_no_copy_in_the_spare_capacity() {
        let mut buf = b"secret-rest".to_vec();
        drain_front_wiped(&mut buf, 7);
        assert_eq!(&buf[..], b"rest");
        // SAFETY: the bytes read are within the capacity, and were all written once.
        let whole = unsafe { std::slice::from_raw_parts(buf.as_ptr(), 11) };
        assert_eq!(&whole[4..], &[0u8; 7]);
    }

    #[test]
    fn slots_are_separate_bounded_and_wiped_when_given_back() {
        let slots = LockedSlots::new(3, 32).unwrap();
        let mut a = slots.take().unwrap();
        let mut b = slots.take().unwrap();
        let c = slots.take().unwrap();
        assert!(slots.take().is_none(), "only three slots");
        a.bytes_mut().fill(0xAA);
        b.bytes_mut().fill(0xBB);
        assert!(a.bytes().iter().all(|&x| x == 0xAA));
        assert!(b.bytes().iter().all(|&x| x == 0xBB));
        assert!(c.bytes().iter().all(|&x| x == 0) && c.bytes().len() == 32);
        assert_eq!(slots.in_use(), 3);
        drop(a);
        assert_eq!(slots.in_use(), 2);
        let again = slots.take().unwrap();
        assert!(
            again.bytes().iter().all(|&x| x == 0),
            "wiped when given back"
        );
    }
}
