//! Random bytes for keys, data keys, IVs and nonces.
//!
//! Everything comes from the operating system's CSPRNG (`getrandom(2)` on Linux), which
//! never repeats across processes, unlike a user-space generator seeded at start. The
//! kernel's bytes are fetched 512 at a time per thread: a generate request needs 60
//! (key, IV, nonce), and one syscall for eight requests instead of two per request is a
//! measurable share of the hot path. Every byte is handed out once and wiped from the
//! pool as it is handed out, so a copy of a key never lingers there.

use std::cell::RefCell;

use zeroize::{Zeroize, Zeroizing};

/// Bytes fetched from the kernel at once, per thread.
const POOL: usize = 512;

/// Requests larger than this bypass the pool: they would empty it at once.
const LARGEST_POOLED: usize = POOL / 4;

/// One thread's unread random bytes: `bytes[next..]`; `bytes[..next]` is handed out and
/// zero.
struct Pool {
    bytes: Zeroizing<[u8; POOL]>,
    next: usize,
}

impl Pool {
    fn empty() -> Pool {
        Pool {
            bytes: Zeroizing::new([0; POOL]),
            next: POOL,
        }
    }

    /// Fills `buf` (at most [`LARGEST_POOLED`] bytes) from the pool, refilling the whole
    /// pool with `refill` first when too few unread bytes are left.
    fn take(&mut self, buf: &mut [u8], refill: impl FnOnce(&mut [u8])) {
        if POOL - self.next < buf.len() {
            refill(&mut self.bytes[..]);
            self.next = 0;
        }
        let taken = &mut self.bytes[self.next..self.next + buf.len()];
        buf.copy_from_slice(taken);
        taken.zeroize();
        self.next += buf.len();
    }
}

thread_local! {
    static RANDOM: RefCell<Pool> = RefCell::new(Pool::empty());
}

fn os_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random number generator failed")
}

/// Fills `buf` with fresh random bytes.
///
/// # Panics
/// If the operating system's random number generator fails (it does not on Linux once
/// the system has booted).
pub fn fill_random(buf: &mut [u8]) {
    if buf.len() > LARGEST_POOLED {
        return os_random(buf);
    }
    RANDOM.with_borrow_mut(|pool| pool.take(buf, os_random));
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A refill that writes a counter: every pool's bytes differ from every other's and
    /// none is zero, so a byte handed out twice, or one never refilled, shows.
    fn counting_refill(count: &mut u8) -> impl FnOnce(&mut [u8]) + '_ {
        move |bytes| {
            *count += 1;
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (*count).wrapping_mul(3).wrapping_add(i as u8 | 1) | 1;
            }
        }
    }

    #[test]
    fn the_pool_hands_out_each_byte_once_and_wipes_it() {
        let mut pool = Pool::empty();
        let mut count = 0u8;
        let mut seen = Vec::new();
        for len in [
            1, 27, 28, 32, 60, 128, 1, 127, 128, 100, 3, 128, 128, 128, 128, 5,
        ] {
            let mut buf = vec![0u8; len];
            let refills_before = count;
            let unread_before = POOL - pool.next;
            pool.take(&mut buf, counting_refill(&mut count));
            // A refill happens exactly when the unread bytes do not suffice.
            assert_eq!(count != refills_before, unread_before < len, "len {len}");
            assert!(
                buf.iter().all(|&b| b != 0),
                "len {len}: zero bytes handed out"
            );
            // Handed-out bytes are wiped, unread ones are not.
            assert!(pool.bytes[..pool.next].iter().all(|&b| b == 0));
            assert!(pool.bytes[pool.next..].iter().all(|&b| b != 0));
            seen.push((count, pool.next - len, buf));
        }
        // No (pool, offset) position was handed out twice.
        let mut positions = HashSet::new();
        for (refill, start, buf) in &seen {
            for i in 0..buf.len() {
                assert!(
                    positions.insert((*refill, start + i)),
                    "byte handed out twice"
                );
            }
        }
    }

    #[test]
    fn a_request_that_fits_exactly_takes_the_last_bytes_without_a_refill() {
        let mut pool = Pool::empty();
        let mut count = 0u8;
        pool.take(&mut [0u8; 128], counting_refill(&mut count));
        pool.take(&mut [0u8; 128], counting_refill(&mut count));
        pool.take(&mut [0u8; 128], counting_refill(&mut count));
        let mut last = [0u8; 128];
        pool.take(&mut last, counting_refill(&mut count));
        assert_eq!((count, pool.next), (1, POOL));
        assert!(last.iter().all(|&b| b != 0));
        pool.take(&mut [0u8; 1], counting_refill(&mut count));
        assert_eq!((count, pool.next), (2, 1));
    }

    /// Draws of sizes around and across the pool size never repeat, never hand out a
    /// byte twice (which, wiped, would come back as zeros) and never return a zero run
    /// that a broken refill would leave.
    #[test]
    fn draws_of_every_size_are_fresh() {
        let mut outputs = HashSet::new();
        let mut stream = Vec::new();
        for round in 0..40 {
            for len in [1, 27, 28, 32, 127, 128, 129, 511, 512, 513, 4096] {
                let mut buf = vec![0u8; len];
                fill_random(&mut buf);
                assert!(
                    !buf.windows(8).any(|w| w.iter().all(|&b| b == 0)),
                    "round {round}, len {len}: a run of zeros"
                );
                if len >= 16 {
                    assert!(
                        outputs.insert(buf.clone()),
                        "round {round}, len {len}: a repeat"
                    );
                }
                stream.extend_from_slice(&buf);
            }
        }
        // Across all draws, no 16-byte window occurs twice.
        let mut windows = HashSet::new();
        for w in stream.windows(16).step_by(7) {
            assert!(windows.insert(w), "a 16-byte window repeats");
        }
        // Single bytes, many in a row, cross pool refills too.
        let ones: Vec<u8> = (0..3 * POOL)
            .map(|_| {
                let mut b = [0u8; 1];
                fill_random(&mut b);
                b[0]
            })
            .collect();
        assert!(!ones.windows(8).any(|w| w.iter().all(|&b| b == 0)));
        let mut windows = HashSet::new();
        for w in ones.windows(16) {
            assert!(windows.insert(w), "single-byte draws repeat");
        }
    }
}
