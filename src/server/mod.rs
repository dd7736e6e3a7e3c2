//! The server: a handshake stage, a few event loops, a bounded pool of blocking workers.
//!
//! ```text
//! listener ──new conn──▶ handshake stage (accepts; TLS handshakes at a lower priority)
//!                          │ handshake done
//!                          ▼
//!                        event loop (one per core: its connections, their deadlines)
//!                          │  ▲  TLS, HTTP, identity, policy, handler, response
//!           may wait ──────┘  └────── answered, back to the loop
//!                          ▼  │
//!                  blocking workers (keystore calls that can wait: CipherTrust, disk)
//! ```
//! A request whose key is cached (MinIO's generate and decrypt) is answered on the event
//! loop that read it, with no hand-off between threads; a request that may wait goes to
//! a pool worker and comes back. Waiting for clients happens only in the loops' polls, so
//! silent or slow clients never hold a thread. Full TLS handshakes (a few hundred µs of
//! CPU each) run on threads of their own, so that a burst of new connections does not
//! delay the requests of connections already served. See `docs/ARCHITECTURE.md`.

mod accept;
mod conn;
mod dev;
pub mod expiry;
mod renew;
pub mod run;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use accept::{Accepted, Listener, accept_loop, never_logged};
use conn::{Conn, Next, Role};
pub use conn::{HEADER_TIMEOUT, IDLE_TIMEOUT};

use crate::state::State;
use crate::sync::lock;

/// Server tuning that is not part of the original config file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Event loops: threads that serve connections without ever waiting on one.
    pub loops: usize,
    /// Handshake threads: loops that run the TLS handshakes of new connections, at a
    /// lower CPU priority than the event loops. 0: the event loops run them.
    pub handshakers: usize,
    /// Blocking workers: threads for requests that may wait for the keystore.
    pub workers: usize,
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            loops: cores.clamp(1, 16),
            handshakers: cores.clamp(1, 16),
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

struct Shared {
    state: Arc<State>,
    listener: Listener,
    loops: Vec<Reactor>,
    /// The handshake stage's loops (none: the event loops run the handshakes).
    stage: Vec<Reactor>,
    /// Requests whose handlers may wait, for the pool; taken away at stop, which ends
    /// the pool workers.
    to_pool: Mutex<Option<Sender<Conn>>>,
    /// No new connections; connections close once their request is answered.
    closing: AtomicBool,
    /// Grace period over: the loops stop.
    stopped: AtomicBool,
    gauges: Arc<Gauges>,
}

/// What other threads see of an event loop: its inbox and how to wake it.
struct Reactor {
    waker: Waker,
    /// Connections handed to this loop (new ones, and ones back from the pool) with what
    /// to wait for.
    inbox: Mutex<Vec<(Conn, Next)>>,
}

impl Shared {
    /// Hands `conn` to its home loop, to act on `next` there.
    fn send_home(&self, conn: Conn, next: Next) {
        let reactor = &self.loops[conn.home];
        lock(&reactor.inbox).push((conn, next));
        let _ = reactor.waker.wake();
    }

    fn wake_all(&self) {
        for reactor in &self.loops {
            let _ = reactor.waker.wake();
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
        let listener = Listener::new(listener, limits.max_connections)?;
        let (loops, polls) = reactors(limits.loops.max(1))?;
        let (stage, stage_polls) = reactors(limits.handshakers)?;
        let (to_pool, pool_rx) = channel::<Conn>();
        let shared = Arc::new(Shared {
            state,
            listener,
            loops,
            stage,
            to_pool: Mutex::new(Some(to_pool)),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            gauges,
        });
        let pool_rx = Arc::new(Mutex::new(pool_rx));
        let mut threads = Vec::new();
        for i in 0..limits.workers.max(1) {
            let (shared, pool_rx) = (shared.clone(), pool_rx.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("kes-worker-{i}"))
                    .spawn(move || worker(&shared, &pool_rx))?,
            );
        }
        for (i, poll) in polls.into_iter().enumerate() {
            let shared = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("kes-loop-{i}"))
                    .spawn(move || event_loop(&shared, Role::Loop, i, poll))?,
            );
        }
        for (i, poll) in stage_polls.into_iter().enumerate() {
            let shared = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("kes-handshake-{i}"))
                    .spawn(move || {
                        lower_priority();
                        event_loop(&shared, Role::Handshake, i, poll)
                    })?,
            );
        }
        if shared.stage.is_empty() {
            let shared = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name("kes-acceptor".into())
                    .spawn(move || accept_loop(&shared))?,
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
        shared.wake_all();
        let deadline = Instant::now() + self.grace;
        // Idle connections close at once, log streams within half a second, the others
        // once their request is answered.
        while shared.gauges.open_connections.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        shared.stopped.store(true, Ordering::Release);
        shared.wake_all();
        // Pool workers end once the queue is gone and empty.
        lock(&shared.to_pool).take();
        drop(self.threads);
    }

    pub fn state(&self) -> &Arc<State> {
        &self.shared.state
    }
}

/// A reactor and its poll for each of `n` loops.
fn reactors(n: usize) -> std::io::Result<(Vec<Reactor>, Vec<Poll>)> {
    let mut reactors = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..n {
        let poll = Poll::new()?;
        reactors.push(Reactor {
            waker: Waker::new(poll.registry(), WAKER)?,
            inbox: Mutex::new(Vec::new()),
        });
        polls.push(poll);
    }
    Ok((reactors, polls))
}

/// Lowers the calling thread's CPU priority (Linux `nice` applies per thread), so that
/// while handshakes keep the CPUs busy, the kernel still runs an event loop as soon as a
/// request arrives. Five steps (weight 335 against 1024) rather than more: other
/// programs at the default priority on the same host (MinIO itself, say) would leave a
/// lower stage too little CPU, and new connections would wait. See docs/BENCHMARKS.md.
fn lower_priority() {
    const LOWER_BY: libc::c_int = 5;
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + LOWER_BY).min(19));
    }
}

/// A connection an event loop holds, and what it waits for.
struct Parked {
    conn: Conn,
    deadline: Instant,
    /// Waiting to write (the socket was full) rather than to read.
    writing: bool,
}

/// The token of a loop's waker; connections are keyed by their slab index.
const WAKER: Token = Token(usize::MAX);
/// The token of the listening socket, which the handshake stage's loops watch.
const LISTENER: Token = Token(usize::MAX - 1);

/// One event loop: serves its connections as their bytes arrive, until the server stops.
/// A loop of the handshake stage (`role` [`Role::Handshake`]) accepts new connections,
/// runs their handshakes only, and hands each finished one to its event loop.
///
/// Readiness is edge-triggered: a connection is parked only after its socket said it has
/// nothing more (a short read or `WouldBlock`), so the next event means new bytes.
fn event_loop(shared: &Arc<Shared>, role: Role, me: usize, mut poll: Poll) {
    const SWEEP_EVERY: Duration = Duration::from_millis(250);
    let reactor = match role {
        Role::Handshake => &shared.stage[me],
        _ => &shared.loops[me],
    };
    let mut conns: Slab<Parked> = Slab::new();
    let mut events = Events::with_capacity(256);
    let mut arrivals = Vec::new();
    // Connections that yielded their turn with more to do; no event will announce them.
    let mut runnable = Vec::new();
    let mut running = Vec::new();
    let mut last_sweep = Instant::now();
    let mut accepts = role == Role::Handshake;
    if accepts {
        let fd = shared.listener.fd;
        if let Err(e) = poll
            .registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
        {
            log::error!("handshake loop {me} cannot watch the listening socket: {e}");
        }
    }
    let mut accept_retry = false;
    let mut last_refusal_log = never_logged();
    loop {
        let timeout = if !runnable.is_empty() {
            Duration::ZERO
        } else if accept_retry {
            Duration::from_millis(50)
        } else {
            SWEEP_EVERY
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("{role:?} loop {me}: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
        // Deadlines are enforced as of this poll: bytes that arrived before it are in its
        // events and are read below, before the sweep. A deadline that passes while this
        // round runs is enforced after the next poll, so a busy loop never closes a
        // connection whose bytes arrived in time but were not read yet.
        let polled = Instant::now();
        let registry = poll.registry();
        if shared.stopped.load(Ordering::Acquire) {
            for parked in conns.drain() {
                let _ = registry.deregister(&mut source(&parked.conn));
            }
            // Connections sent home after this are dropped by `Server::shutdown`.
            lock(&reactor.inbox).clear();
            return;
        }
        let closing = shared.closing.load(Ordering::Acquire);
        std::mem::swap(&mut arrivals, &mut *lock(&reactor.inbox));
        for (conn, next) in arrivals.drain(..) {
            if let Some(key) = admit(registry, &mut conns, conn) {
                apply(shared, registry, &mut conns, &mut runnable, key, next);
            }
        }
        if accepts && closing {
            // Closing the listening socket takes it out of every poll that watches it.
            shared.listener.close();
            accepts = false;
        } else if accepts && (accept_retry || events.iter().any(|e| e.token() == LISTENER)) {
            // Registering a connection whose ClientHello is there already reports it in
            // the next poll; reading at once would mostly find nothing yet.
            let take = |conn: Conn| {
                let deadline = conn.first_deadline();
                if let Some(key) = admit(registry, &mut conns, conn) {
                    apply(
                        shared,
                        registry,
                        &mut conns,
                        &mut runnable,
                        key,
                        Next::Park(deadline),
                    );
                }
            };
            let accepted = shared
                .listener
                .accept_all(shared, &mut last_refusal_log, take);
            accept_retry = accepted == Accepted::Retry;
        }
        for event in events.iter() {
            if event.is_read_closed() || event.is_error() {
                if let Some(parked) = conns.get_mut(event.token().0) {
                    parked.conn.note_peer_closed();
                }
            }
        }
        std::mem::swap(&mut running, &mut runnable);
        let ready = events
            .iter()
            .map(|e| e.token())
            .filter(|t| *t != WAKER && *t != LISTENER)
            .map(|t| t.0);
        for key in running.drain(..).chain(ready) {
            let Some(parked) = conns.get_mut(key) else {
                continue;
            };
            let next = advance(shared, &mut parked.conn, closing, role);
            apply(shared, registry, &mut conns, &mut runnable, key, next);
        }
        if closing || polled.duration_since(last_sweep) >= SWEEP_EVERY {
            last_sweep = polled;
            let expired: Vec<usize> = conns
                .iter()
                .filter(|(_, p)| p.deadline <= polled || closing && !p.conn.mid_request())
                .map(|(key, _)| key)
                .collect();
            for key in expired {
                let parked = conns.remove(key);
                if !closing {
                    log::debug!(
                        "closing connection: {} past its deadline",
                        parked.conn.waiting_for()
                    );
                }
                let _ = registry.deregister(&mut source(&parked.conn));
            }
        }
    }
}

fn source(conn: &Conn) -> SourceFd<'_> {
    SourceFd(&conn.fd)
}

/// Registers a connection with this loop (read interest until told otherwise).
fn admit(registry: &mio::Registry, conns: &mut Slab<Parked>, conn: Conn) -> Option<usize> {
    let entry = conns.vacant_entry();
    let key = entry.key();
    if key == WAKER.0
        || key == LISTENER.0
        || registry
            .register(&mut source(&conn), Token(key), Interest::READABLE)
            .is_err()
    {
        return None;
    }
    let deadline = conn.first_deadline();
    entry.insert(Parked {
        conn,
        deadline,
        writing: false,
    });
    Some(key)
}

/// Acts on what a connection of this loop needs next.
fn apply(
    shared: &Arc<Shared>,
    registry: &mio::Registry,
    conns: &mut Slab<Parked>,
    runnable: &mut Vec<usize>,
    key: usize,
    next: Next,
) {
    let (deadline, writing) = match next {
        Next::Park(deadline) => (deadline, false),
        Next::ParkWrite(deadline) => (deadline, true),
        Next::Yield => {
            if !runnable.contains(&key) {
                runnable.push(key);
            }
            // Its next turn, within this loop's next round, sets the real deadline.
            (Instant::now() + HEADER_TIMEOUT, false)
        }
        Next::Close => {
            // Closing the socket takes it out of the poll: no `epoll_ctl` needed.
            conns.remove(key);
            return;
        }
        Next::Stream(_) | Next::Offload | Next::Handoff(_) => {
            let Parked { conn, .. } = conns.remove(key);
            let _ = registry.deregister(&mut source(&conn));
            match next {
                Next::Stream(events) => stream(shared, conn, events),
                Next::Handoff(then) => shared.send_home(conn, *then),
                Next::Offload => {
                    let to_pool = lock(&shared.to_pool);
                    // Without a pool the server is stopping: the connection closes.
                    if let Some(to_pool) = to_pool.as_ref() {
                        let _ = to_pool.send(conn);
                    }
                }
                _ => drop(conn),
            }
            return;
        }
    };
    let parked = &mut conns[key];
    parked.deadline = deadline;
    if parked.writing != writing {
        let interest = if writing {
            Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registry
            .reregister(&mut source(&parked.conn), Token(key), interest)
            .is_err()
        {
            let parked = conns.remove(key);
            let _ = registry.deregister(&mut source(&parked.conn));
            return;
        }
        parked.writing = writing;
    }
}

/// Advances a connection; a bug (panic) while doing so closes that connection only,
/// instead of taking its event loop and every connection on it down.
fn advance(shared: &Shared, conn: &mut Conn, closing: bool, role: Role) -> Next {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn.advance(&shared.state, closing, role)
    }))
    .unwrap_or_else(|_| {
        log::error!("internal error on a connection: closing it");
        Next::Close
    })
}

/// Hands a connection to a thread of its own that sends it log events.
fn stream(shared: &Arc<Shared>, conn: Conn, events: Receiver<Arc<[u8]>>) {
    let shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("kes-log-stream".into())
        .spawn(move || conn.stream_events(events, &shared.closing));
    if let Err(e) = spawned {
        log::warn!("cannot start a log stream: {e}");
    }
}

/// A pool worker: runs requests whose handlers may wait, then sends their connections
/// back to their event loops.
fn worker(shared: &Arc<Shared>, pool_rx: &Mutex<Receiver<Conn>>) {
    loop {
        let job = {
            let rx = lock(pool_rx);
            rx.recv()
        };
        let Ok(mut conn) = job else { return };
        shared.gauges.busy_workers.fetch_add(1, Ordering::AcqRel);
        let closing = shared.closing.load(Ordering::Acquire);
        let next = advance(shared, &mut conn, closing, Role::Pool);
        shared.gauges.busy_workers.fetch_sub(1, Ordering::AcqRel);
        match next {
            Next::Close => drop(conn),
            Next::Stream(events) => stream(shared, conn, events),
            next => shared.send_home(conn, next),
        }
    }
}
