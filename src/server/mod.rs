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
mod event_loop;
mod renew;
pub mod run;
mod shared;
mod short_read;
mod upstream;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use accept::{Accepted, Listener, never_logged};
use conn::{Conn, Next, Role};
pub use conn::{HEADER_TIMEOUT, IDLE_TIMEOUT};
use event_loop::{WAKER, event_loop};
use shared::{Reactor, Shared, advance, stream};
use upstream::UpstreamLimits;

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
    /// Calls to CipherTrust the event loops make themselves (resident keys), all loops
    /// together: at most this many in flight, over at most this many connections;
    /// more wait in a queue of this size for at most `cm_queue_timeout`, then get 503.
    pub cm_calls: usize,
    pub cm_connections: usize,
    pub cm_queue: usize,
    pub cm_queue_timeout: Duration,
}

impl Limits {
    /// One event loop's share of the CipherTrust call limits.
    fn upstream_share(&self) -> UpstreamLimits {
        let loops = self.loops.max(1);
        UpstreamLimits {
            calls: self.cm_calls.div_ceil(loops).max(1),
            connections: self.cm_connections.div_ceil(loops).max(1),
            queue: self.cm_queue.div_ceil(loops),
            queue_timeout: self.cm_queue_timeout,
        }
    }
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
            // Sized for a CipherTrust answering in 12 to 33 ms: 256 calls in flight
            // carry 7,700 to 21,000 calls a second.
            cm_calls: 256,
            cm_connections: 256,
            cm_queue: 1024,
            cm_queue_timeout: Duration::from_secs(2),
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
        let (loops, polls) = reactors(limits.loops.max(1))?;
        let listener = Listener::new(
            listener,
            limits.max_connections,
            loops.len(),
            gauges.clone(),
        )?;
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
            upstream: limits.upstream_share(),
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

/// The accepting thread of a server without a handshake stage: hands each new
/// connection to its event loop, which runs the handshake too.
fn accept_loop(shared: &Shared) {
    let listener = &shared.listener;
    let mut last_refusal_log = never_logged();
    while !shared.closing.load(Ordering::Acquire) {
        let mut fd = libc::pollfd {
            fd: listener.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `fd` is a valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut fd, 1, 200) } <= 0 {
            continue;
        }
        let accepted = listener.accept_all(&shared.state, &mut last_refusal_log, |conn| {
            let deadline = conn.first_deadline();
            shared.send_home(conn, Next::Park(deadline));
        });
        match accepted {
            Accepted::Drained => {}
            Accepted::Retry => thread::sleep(Duration::from_millis(50)),
            Accepted::Closed => return,
        }
    }
    listener.close();
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
