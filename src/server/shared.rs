//! What a server's threads share: the state, the event loops' inboxes, the pool's queue,
//! and how a thread advances a connection or hands it on.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use mio::Waker;

use super::accept::Listener;
use super::conn::{Conn, Next, Role};
use super::upstream::UpstreamLimits;
use crate::state::{Gauges, State};
use crate::sync::lock;

pub(super) struct Shared {
    pub(super) state: Arc<State>,
    pub(super) listener: Listener,
    pub(super) loops: Vec<Reactor>,
    /// The handshake stage's loops (none: the event loops run the handshakes).
    pub(super) stage: Vec<Reactor>,
    /// Requests whose handlers may wait, for the pool; taken away at stop, which ends
    /// the pool workers.
    pub(super) to_pool: Mutex<Option<Sender<Conn>>>,
    /// No new connections; connections close once their request is answered.
    pub(super) closing: AtomicBool,
    /// Grace period over: the loops stop.
    pub(super) stopped: AtomicBool,
    pub(super) gauges: Arc<Gauges>,
    /// Each event loop's share of the CipherTrust call limits.
    pub(super) upstream: UpstreamLimits,
}

/// What other threads see of an event loop: its inbox and how to wake it.
pub(super) struct Reactor {
    pub(super) waker: Waker,
    /// Connections handed to this loop (new ones, and ones back from the pool) with what
    /// to wait for.
    pub(super) inbox: Mutex<Vec<(Conn, Next)>>,
}

impl Shared {
    /// Hands `conn` to its home loop, to act on `next` there.
    pub(super) fn send_home(&self, conn: Conn, next: Next) {
        let reactor = &self.loops[conn.home];
        lock(&reactor.inbox).push((conn, next));
        let _ = reactor.waker.wake();
    }

    pub(super) fn wake_all(&self) {
        for reactor in &self.loops {
            let _ = reactor.waker.wake();
        }
    }
}

/// Advances a connection; a bug (panic) while doing so closes that connection only,
/// instead of taking its event loop and every connection on it down.
pub(super) fn advance(shared: &Shared, conn: &mut Conn, closing: bool, role: Role) -> Next {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn.advance(&shared.state, closing, role)
    }))
    .unwrap_or_else(|_| {
        log::error!("internal error on a connection: closing it");
        Next::Close
    })
}

/// Hands a connection to a thread of its own that sends it log events.
pub(super) fn stream(shared: &Arc<Shared>, conn: Conn, events: Receiver<Arc<[u8]>>) {
    let shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("kes-log-stream".into())
        .spawn(move || conn.stream_events(events, &shared.closing));
    if let Err(e) = spawned {
        log::warn!("cannot start a log stream: {e}");
    }
}
