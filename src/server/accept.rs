//! Taking new connections from the listening socket.
//!
//! With a handshake stage (the default), its threads accept themselves: each watches the
//! listening socket in its own poll, so a new connection reaches the thread that runs
//! its handshake without a hand-off. Without one (`--handshake-threads 0`), a thread of
//! its own (`accept_loop`, beside the event loops) accepts and hands each connection to
//! its event loop.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::Conn;
use crate::state::{Gauges, State};
use crate::sync::lock;

/// The listening socket, shared by the threads that accept from it.
pub struct Listener {
    /// Taken away (closed) when the server starts closing: new connections are refused.
    socket: Mutex<Option<TcpListener>>,
    pub fd: RawFd,
    max_connections: usize,
    /// Round robin over the event loops, across the accepting threads.
    next_home: AtomicUsize,
    /// How many event loops there are.
    homes: usize,
    gauges: Arc<Gauges>,
}

/// What [`Listener::accept_all`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Every waiting connection was taken.
    Drained,
    /// `accept` failed (out of file descriptors, say): try again shortly, since no new
    /// readiness event will say that the waiting connections are still there.
    Retry,
    /// The listener is closed.
    Closed,
}

impl Listener {
    /// A listener that hands connections to `homes` event loops and counts them in
    /// `gauges`.
    pub fn new(
        socket: TcpListener,
        max_connections: usize,
        homes: usize,
        gauges: Arc<Gauges>,
    ) -> std::io::Result<Listener> {
        socket.set_nonblocking(true)?;
        Ok(Listener {
            fd: socket.as_raw_fd(),
            socket: Mutex::new(Some(socket)),
            max_connections,
            next_home: AtomicUsize::new(0),
            homes,
            gauges,
        })
    }

    /// Closes the listening socket; connections not accepted yet are refused.
    pub fn close(&self) {
        lock(&self.socket).take();
    }

    /// Accepts every connection that is waiting and gives each to `take`, its event loop
    /// chosen and the TLS config of `state` its own; refuses those beyond
    /// `--max-connections`. `last_refusal_log` rate-limits the refusal warning of the
    /// calling thread.
    pub fn accept_all(
        &self,
        state: &State,
        last_refusal_log: &mut Instant,
        mut take: impl FnMut(Conn),
    ) -> Accepted {
        loop {
            let accepted = match lock(&self.socket).as_ref() {
                Some(socket) => socket.accept(),
                None => return Accepted::Closed,
            };
            let (sock, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return Accepted::Retry;
                }
            };
            let gauges = &self.gauges;
            if gauges.open_connections.load(Ordering::Acquire) >= self.max_connections {
                gauges.refused_connections.fetch_add(1, Ordering::Relaxed);
                if last_refusal_log.elapsed() >= Duration::from_secs(10) {
                    log::warn!(
                        "too many open connections ({}): refusing new ones, e.g. from {peer}",
                        self.max_connections
                    );
                    *last_refusal_log = Instant::now();
                }
                drop(sock);
                continue;
            }
            let tls = state.live().tls.clone();
            match Conn::new(sock, peer, tls, gauges.clone()) {
                Ok(mut conn) => {
                    conn.home = self.next_home.fetch_add(1, Ordering::Relaxed) % self.homes;
                    take(conn);
                }
                Err(e) => log::debug!("cannot set up connection from {peer}: {e}"),
            }
        }
    }
}

/// A time long enough ago that the first refusal is logged.
pub fn never_logged() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_secs(60))
        .unwrap_or_else(Instant::now)
}
