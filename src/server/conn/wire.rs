//! A connection on the wire: the socket, its TLS records, and the plaintext buffer.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{Conn, LINGER_QUIET, READ_SLACK, Turn};
use crate::http;
use crate::memory::{drain_front_wiped, extend_wiped};
use crate::server::short_read::ShortRead;

impl Conn {
    /// Reads what the socket has into rustls and the decrypted bytes into `inbuf`, up to
    /// what the current request may need. Returns whether the socket was drained.
    pub(super) fn read_socket(&mut self) -> io::Result<bool> {
        let limit = http::MAX_HEAD + self.body_limit() + READ_SLACK;
        while self.inbuf.len() < limit && !self.eof {
            let mut probe = ShortRead::new(&self.sock);
            match self.tls.read_tls(&mut probe) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let short = probe.short;
            if let Err(e) = self.tls.process_new_packets() {
                return Err(io::Error::other(format!("TLS: {e}")));
            }
            self.drain_plaintext()?;
            if short && !self.peer_closed {
                // The kernel had less than rustls asked for: nothing is left to read,
                // and asking again would only cost a syscall that says so. (Bytes that
                // arrive meanwhile make the socket readable again.)
                return Ok(true);
            }
        }
        Ok(self.eof)
    }

    pub(super) fn drain_plaintext(&mut self) -> io::Result<()> {
        let mut reader = self.tls.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(plain) => {
                    let n = plain.len();
                    extend_wiped(&mut self.inbuf, plain);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops the first `n` bytes of input (wiping what moving the rest leaves behind).
    pub(super) fn consume_input(&mut self, n: usize) {
        drain_front_wiped(&mut self.inbuf, n);
    }

    /// Reads and drops whatever the client sends, until it closes, pauses for
    /// [`LINGER_QUIET`], or [`LINGER_MAX`] passes.
    pub(super) fn discard_input(&mut self) -> Turn {
        let Some(mut linger) = self.draining else {
            return Turn::Close;
        };
        let mut sink = [0u8; 16 * 1024];
        let mut arrived = false;
        loop {
            match self.sock.read(&mut sink) {
                Ok(0) => return Turn::Close,
                Ok(_) => arrived = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Close,
            }
        }
        let now = Instant::now();
        if arrived {
            linger.quiet_until = now + LINGER_QUIET;
            self.draining = Some(linger);
        }
        let deadline = linger.quiet_until.min(linger.until);
        if now >= deadline {
            Turn::Close
        } else {
            Turn::Park(deadline)
        }
    }

    /// Encrypts `bytes` into the output queue, which the client must have taken by
    /// `deadline`.
    pub(super) fn queue(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        self.tls.writer().write_all(bytes)?;
        self.write_deadline = deadline;
        self.queued += bytes.len();
        Ok(())
    }

    /// Sends queued TLS records as far as the socket takes them; `false` if it is full.
    pub(super) fn flush_tls(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.queued = 0;
        Ok(true)
    }

    /// Sends all queued TLS records, waiting for the socket at most until `deadline`
    /// (only log streams, on a thread of their own, wait like this).
    pub(super) fn flush_blocking(&mut self, deadline: Instant) -> io::Result<()> {
        while !self.flush_tls()? {
            wait_writable(&self.sock, deadline)?;
        }
        Ok(())
    }
}

/// Blocks until the socket can take more bytes, or fails at `deadline`: a client that
/// does not read its responses cannot hold a worker past the route's timeout.
fn wait_writable(sock: &TcpStream, deadline: Instant) -> io::Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client does not read its response",
        ));
    }
    let millis = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `fd` is a valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut fd, 1, millis) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    Ok(())
}
