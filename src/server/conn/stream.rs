//! Log streams (`/v1/log/audit`, `/v1/log/error`): a connection that, once its request
//! is answered, is sent events until the client leaves.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::Conn;
use crate::http;

impl Conn {
    /// Sends `events` as chunks until the client leaves, the events end, or `closing`
    /// is set. Runs on a thread of its own: a stream never occupies a worker.
    pub fn stream_events(mut self, events: Receiver<Arc<[u8]>>, closing: &AtomicBool) {
        const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
        // Bound what a slow subscriber can have queued in the kernel too; past that it
        // loses events (counted) instead of holding memory.
        set_send_buffer(&self.sock, 64 * 1024);
        if self.flush_blocking(Instant::now() + WRITE_TIMEOUT).is_err() {
            return;
        }
        loop {
            if closing.load(Ordering::Acquire) {
                break;
            }
            match events.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => {
                    let chunk = http::ndjson_chunk(&line);
                    let deadline = Instant::now() + WRITE_TIMEOUT;
                    if self.queue(&chunk, deadline).is_err()
                        || self.flush_blocking(deadline).is_err()
                    {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Notice a client that went away while nothing happened.
                    if self.read_socket().is_err() || self.eof {
                        return;
                    }
                    self.inbuf.clear();
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.queue(b"0\r\n\r\n", Instant::now());
        self.tls.send_close_notify();
        let _ = self.flush_blocking(Instant::now() + Duration::from_secs(1));
    }
}

fn set_send_buffer(sock: &TcpStream, bytes: libc::c_int) {
    // SAFETY: valid socket and option value for the duration of the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
