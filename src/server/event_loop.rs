//! One event loop: its connections, their deadlines, and its calls to CipherTrust.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::accept::{Accepted, never_logged};
use super::conn::{Conn, HEADER_TIMEOUT, Next, Role};
use super::shared::{Shared, advance, stream};
use super::upstream::{Finished, Upstream, Waiter};
use crate::keystore::remote::Outcome;
use crate::sync::lock;

/// A connection an event loop holds, and what it waits for.
struct Parked {
    conn: Conn,
    deadline: Instant,
    /// Waiting to write (the socket was full) rather than to read.
    writing: bool,
    /// Tells this connection from a later one at the same key (upstream answers name
    /// the connection they are for).
    serial: u64,
}

/// What an event loop keeps besides its connections.
struct LoopState {
    /// Its calls to CipherTrust.
    upstream: Upstream,
    /// Calls that ended, to be handed to their connections.
    finished: Vec<Finished>,
    next_serial: u64,
}

/// The token of a loop's waker; connections are keyed by their slab index.
pub(super) const WAKER: Token = Token(usize::MAX);
/// The token of the listening socket, which the handshake stage's loops watch.
const LISTENER: Token = Token(usize::MAX - 1);

/// One event loop: serves its connections as their bytes arrive, until the server stops.
/// A loop of the handshake stage (`role` [`Role::Handshake`]) accepts new connections,
/// runs their handshakes only, and hands each finished one to its event loop.
///
/// Readiness is edge-triggered: a connection is parked only after its socket said it has
/// nothing more (a short read or `WouldBlock`), so the next event means new bytes.
pub(super) fn event_loop(shared: &Arc<Shared>, role: Role, me: usize, mut poll: Poll) {
    const SWEEP_EVERY: Duration = Duration::from_millis(250);
    let reactor = match role {
        Role::Handshake => &shared.stage[me],
        _ => &shared.loops[me],
    };
    let mut conns: Slab<Parked> = Slab::new();
    let mut own = LoopState {
        upstream: Upstream::new(shared.upstream, shared.gauges.clone()),
        finished: Vec::new(),
        next_serial: 0,
    };
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
            if let Some(key) = admit(registry, &mut conns, &mut own, conn) {
                apply(
                    shared,
                    registry,
                    &mut conns,
                    &mut own,
                    &mut runnable,
                    key,
                    next,
                );
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
                if let Some(key) = admit(registry, &mut conns, &mut own, conn) {
                    apply(
                        shared,
                        registry,
                        &mut conns,
                        &mut own,
                        &mut runnable,
                        key,
                        Next::Park(deadline),
                    );
                }
            };
            let accepted = shared
                .listener
                .accept_all(&shared.state, &mut last_refusal_log, take);
            accept_retry = accepted == Accepted::Retry;
        }
        for event in events.iter() {
            if event.is_read_closed() || event.is_error() {
                if let Some(parked) = conns.get_mut(event.token().0) {
                    parked.conn.note_peer_closed();
                }
            }
        }
        for event in events.iter() {
            if Upstream::owns(event.token()) {
                own.upstream
                    .ready(registry, event.token(), &mut own.finished);
            }
        }
        std::mem::swap(&mut running, &mut runnable);
        let ready = events
            .iter()
            .map(|e| e.token())
            .filter(|t| *t != WAKER && *t != LISTENER && !Upstream::owns(*t))
            .map(|t| t.0);
        for key in running.drain(..).chain(ready) {
            let Some(parked) = conns.get_mut(key) else {
                continue;
            };
            let next = advance(shared, &mut parked.conn, closing, role);
            apply(
                shared,
                registry,
                &mut conns,
                &mut own,
                &mut runnable,
                key,
                next,
            );
        }
        resume_finished(
            shared,
            registry,
            &mut conns,
            &mut own,
            &mut runnable,
            closing,
        );
        if closing || polled.duration_since(last_sweep) >= SWEEP_EVERY {
            last_sweep = polled;
            // Calls past their time end first, so that their connections get an answer
            // before the connections' own deadlines close them.
            own.upstream.sweep(registry, polled, &mut own.finished);
            resume_finished(
                shared,
                registry,
                &mut conns,
                &mut own,
                &mut runnable,
                closing,
            );
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

/// Hands the calls that ended to their connections, and acts on what each needs next
/// (which may start more calls).
fn resume_finished(
    shared: &Arc<Shared>,
    registry: &mio::Registry,
    conns: &mut Slab<Parked>,
    own: &mut LoopState,
    runnable: &mut Vec<usize>,
    closing: bool,
) {
    while !own.finished.is_empty() {
        let finished = std::mem::take(&mut own.finished);
        for Finished { waiter, result } in finished {
            let Some(parked) = conns.get_mut(waiter.key) else {
                continue;
            };
            if parked.serial != waiter.serial {
                // Its connection was closed (its deadline passed) and the key reused.
                continue;
            }
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                parked.conn.resume(&shared.state, closing, result)
            }))
            .unwrap_or_else(|_| {
                log::error!("internal error on a connection: closing it");
                Next::Close
            });
            apply(shared, registry, conns, own, runnable, waiter.key, next);
        }
    }
}

/// Registers a connection with this loop (read interest until told otherwise).
fn admit(
    registry: &mio::Registry,
    conns: &mut Slab<Parked>,
    own: &mut LoopState,
    conn: Conn,
) -> Option<usize> {
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
    own.next_serial += 1;
    entry.insert(Parked {
        conn,
        deadline,
        writing: false,
        serial: own.next_serial,
    });
    Some(key)
}

/// Acts on what a connection of this loop needs next.
fn apply(
    shared: &Arc<Shared>,
    registry: &mio::Registry,
    conns: &mut Slab<Parked>,
    own: &mut LoopState,
    runnable: &mut Vec<usize>,
    key: usize,
    next: Next,
) {
    let (deadline, writing) = match next {
        Next::Park(deadline) => (deadline, false),
        Next::Remote(call, deadline) => {
            let waiter = Waiter {
                key,
                serial: conns[key].serial,
            };
            let endpoint = shared
                .state
                .keys
                .store()
                .remote()
                .and_then(|remote| remote.endpoint());
            match endpoint {
                Some(endpoint) => {
                    own.upstream
                        .submit(registry, &endpoint, call, waiter, &mut own.finished)
                }
                None => own.finished.push(Finished {
                    waiter,
                    result: Some((
                        Outcome::Failed("CipherTrust Manager's address is not known yet".into()),
                        Duration::ZERO,
                    )),
                }),
            }
            (deadline, false)
        }
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
