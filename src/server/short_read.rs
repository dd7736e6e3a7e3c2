//! Reading a non-blocking socket without the read that only says "nothing left".

use std::io::{self, Read};

/// Reads from `inner` and notes whether it returned less than asked for: on a TCP socket
/// that means its receive queue is empty now, so the `WouldBlock` read that would follow
/// can be skipped (edge-triggered polling reports bytes that arrive later).
pub(super) struct ShortRead<R> {
    pub inner: R,
    pub short: bool,
}

impl<R> ShortRead<R> {
    pub(super) fn new(inner: R) -> Self {
        ShortRead {
            inner,
            short: false,
        }
    }
}

impl<R: Read> Read for ShortRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}
