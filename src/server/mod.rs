//! The server: one acceptor, one poller, a bounded pool of workers.
//!
//! ```text
//! acceptor ──new conn──▶ poller (parked conns + deadlines) ──readable──▶ workers
//!                           ▲                                               │
//!                           └────────── park (needs more bytes) ◀───────────┘
//! ```
//! Workers only ever run when a connection has bytes to process; waiting happens in the
//! poller, which also closes connections whose deadline has passed. See
//! `docs/ARCHITECTURE.md` for the way of one request.

mod conn;
mod dev;
pub mod run;

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use polling::{Event, Events, Poller};

use conn::{Conn, Next};
pub use conn::{HEADER_TIMEOUT, IDLE_TIMEOUT};

use crate::state::State;

/// Server tuning that is not part of the original config file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub workers: usize,
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            workers: (4 * cores).clamp(4, 64),
            max_connections: 4096,
            grace: Duration::from_secs(10),
        }
    }
}

/// Counters the metrics route reads.
#[derive(Debug, Default)]
pub struct Gauges {
    pub open_connections: AtomicUsize,
    pub busy_workers: AtomicUsize,
    pub refused_connections: AtomicUsize,
    pub workers: AtomicUsize,
}

/// Parked connections, keyed by their poller key.
struct Parked {
    conns: HashMap<usize, (Conn, Instant)>,
    next_key: usize,
}

struct Shared {
    state: Arc<State>,
    poller: Poller,
    parked: Mutex<Parked>,
    /// No new connections; connections close once their request is answered.
    closing: AtomicBool,
    /// Grace period over: the poller stops.
    stopped: AtomicBool,
    gauges: Arc<Gauges>,
}

impl Shared {
    /// Hands a connection to the poller until it is readable or `deadline` passes.
    ///
    /// A connection stays registered while a worker has it (its oneshot event disarmed
    /// it), so parking it again re-arms it with one `epoll_ctl(MOD)` instead of the
    /// DEL + ADD pair that taking it out and putting it back would cost per request.
    fn park(&self, mut conn: Conn, deadline: Instant) {
        if self.closing.load(Ordering::Acquire) && !conn.mid_request() {
            self.close(conn);
            return;
        }
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let key = parked.next_key;
        parked.next_key = parked.next_key.wrapping_add(1);
        let armed = if conn.registered {
            self.poller.modify(&conn.sock, Event::readable(key)).is_ok()
        } else {
            // SAFETY: the socket is deleted from the poller (`close`, `sweep`) before it
            // is dropped; the poller drops parked sockets only after deleting them.
            let added = unsafe { self.poller.add(&conn.sock, Event::readable(key)) }.is_ok();
            conn.registered = added;
            added
        };
        if armed {
            parked.conns.insert(key, (conn, deadline));
        } else {
            drop(parked);
            self.close(conn);
        }
    }

    /// Takes a connection whose event fired; it stays registered, but disarmed.
    fn take(&self, key: usize) -> Option<Conn> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let (conn, _) = parked.conns.remove(&key)?;
        Some(conn)
    }

    /// Closes a connection that is not parked.
    fn close(&self, mut conn: Conn) {
        self.deregister(&mut conn);
        drop(conn);
    }

    /// Removes a connection that is not parked from the poller.
    fn deregister(&self, conn: &mut Conn) {
        if conn.registered {
            let _ = self.poller.delete(&conn.sock);
            conn.registered = false;
        }
    }

    /// Closes parked connections whose deadline has passed, and while closing those
    /// between requests; `all` closes every one.
    fn sweep(&self, now: Instant, all: bool) {
        let closing = self.closing.load(Ordering::Acquire);
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<usize> = parked
            .conns
            .iter()
            .filter(|(_, (conn, deadline))| {
                all || *deadline <= now || closing && !conn.mid_request()
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some((conn, _)) = parked.conns.remove(&key) {
                let _ = self.poller.delete(&conn.sock);
            }
        }
    }
}

/// A running server; [`Server::shutdown`] stops it gracefully.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
    grace: Duration,
}

impl Server {
    /// Starts serving `listener` with `state`.
    pub fn start(
        listener: TcpListener,
        state: Arc<State>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        let gauges = state.gauges.clone();
        gauges
            .workers
            .store(limits.workers.max(1), Ordering::Relaxed);
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state,
            poller: Poller::new()?,
            parked: Mutex::new(Parked {
                conns: HashMap::new(),
                next_key: 0,
            }),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            gauges,
        });
        let (work_tx, work_rx) = channel::<Conn>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let mut threads = Vec::new();
        for i in 0..limits.workers.max(1) {
            let (shared, work_rx) = (shared.clone(), work_rx.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("kes-worker-{i}"))
                    .spawn(move || worker(&shared, &work_rx))?,
            );
        }
        {
            let shared = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name("kes-poller".into())
                    .spawn(move || poll_loop(&shared, &work_tx))?,
            );
        }
        {
            let shared = shared.clone();
            let max = limits.max_connections;
            threads.push(
                thread::Builder::new()
                    .name("kes-acceptor".into())
                    .spawn(move || accept_loop(&shared, listener, max))?,
            );
        }
        Ok(Server {
            shared,
            threads,
            grace: limits.grace,
        })
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish (at most
    /// the grace period), then returns.
    pub fn shutdown(self) {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::Release);
        let _ = shared.poller.notify();
        let deadline = Instant::now() + self.grace;
        let in_flight = || {
            shared.gauges.busy_workers.load(Ordering::Acquire) > 0
                || !shared
                    .parked
                    .lock()
                    .map(|p| p.conns.is_empty())
                    .unwrap_or(true)
        };
        while in_flight() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        shared.stopped.store(true, Ordering::Release);
        let _ = shared.poller.notify();
        shared.sweep(Instant::now(), true);
        drop(self.threads);
    }

    pub fn state(&self) -> &Arc<State> {
        &self.shared.state
    }
}

fn accept_loop(shared: &Shared, listener: TcpListener, max_connections: usize) {
    let mut last_refusal_log = Instant::now() - Duration::from_secs(60);
    while !shared.closing.load(Ordering::Acquire) {
        let mut fd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `fd` is a valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut fd, 1, 200) } <= 0 {
            continue;
        }
        loop {
            let (sock, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            };
            let gauges = &shared.gauges;
            if gauges.open_connections.load(Ordering::Acquire) >= max_connections {
                gauges.refused_connections.fetch_add(1, Ordering::Relaxed);
                if last_refusal_log.elapsed() >= Duration::from_secs(10) {
                    log::warn!(
                        "too many open connections ({max_connections}): refusing new ones, e.g. from {peer}"
                    );
                    last_refusal_log = Instant::now();
                }
                drop(sock);
                continue;
            }
            let tls = shared.state.live().tls.clone();
            match Conn::new(sock, peer, tls, gauges.clone()) {
                Ok(conn) => {
                    let deadline = conn.first_deadline();
                    shared.park(conn, deadline);
                }
                Err(e) => log::debug!("cannot set up connection from {peer}: {e}"),
            }
        }
    }
}

fn poll_loop(shared: &Shared, work_tx: &Sender<Conn>) {
    let mut events = Events::new();
    let mut last_sweep = Instant::now();
    loop {
        events.clear();
        let _ = shared
            .poller
            .wait(&mut events, Some(Duration::from_millis(250)));
        if shared.stopped.load(Ordering::Acquire) {
            shared.sweep(Instant::now(), true);
            return;
        }
        for event in events.iter() {
            if let Some(conn) = shared.take(event.key) {
                if work_tx.send(conn).is_err() {
                    return;
                }
            }
        }
        let now = Instant::now();
        if shared.closing.load(Ordering::Acquire)
            || now.duration_since(last_sweep) >= Duration::from_millis(250)
        {
            shared.sweep(now, false);
            last_sweep = now;
        }
    }
}

fn worker(shared: &Arc<Shared>, work_rx: &Mutex<Receiver<Conn>>) {
    loop {
        let job = {
            let rx = work_rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut conn) = job else { return };
        shared.gauges.busy_workers.fetch_add(1, Ordering::AcqRel);
        let closing = shared.closing.load(Ordering::Acquire);
        let next = conn.advance(&shared.state, closing);
        shared.gauges.busy_workers.fetch_sub(1, Ordering::AcqRel);
        match next {
            Next::Park(deadline) => shared.park(conn, deadline),
            Next::Close => shared.close(conn),
            Next::Stream(events) => {
                // The stream thread owns the socket from now on: out of the poller.
                shared.deregister(&mut conn);
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("kes-log-stream".into())
                    .spawn(move || conn.stream_events(events, &shared.closing));
                if let Err(e) = spawned {
                    log::warn!("cannot start a log stream: {e}");
                }
            }
        }
    }
}
