//! One client connection: TLS, request framing, dispatch, response.
//!
//! A connection never waits for its client. Its socket is non-blocking: its event loop
//! takes whatever bytes have arrived, serves every complete request among them, queues
//! the responses, and parks the connection with a deadline when it needs more bytes or
//! the socket cannot take the responses yet. So a client that sends nothing, or a byte
//! a second, or reads nothing, costs a parked entry, never a thread, and is closed when
//! its deadline passes.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rustls::ServerConnection;
use zeroize::Zeroizing;

use crate::api::Routed;
use crate::api::ctx::Finish;
use crate::http::{BodyFraming, Request, Response};
use crate::identity::PeerIdentity;
use crate::keys::Warm;
use crate::keystore::remote::Call;
use crate::state::{Gauges, State};

mod request;
mod stream;
mod wire;

/// Time a client has for each of its turns until its first request head is complete
/// (from accept to its first handshake flight, from each flight the server sent to the
/// client's next, from the end of the handshake to the end of the first head), and from
/// the first byte of any later request head to its end. Each turn starts when the
/// server has done its part, so a server slowed down by load does not spend the
/// client's time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Plaintext buffered per connection beyond the largest body: bounds memory per client.
const READ_SLACK: usize = 64 * 1024;
/// Output queued for a connection beyond which it is sent before more requests are
/// served: a client that sends requests but does not read the answers stops being served
/// (and read from) instead of making the server queue answers without bound.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// After the last answer of a connection (a refusal, or `Connection: close`): how long
/// to go on discarding what the client sends once it pauses, and at most. Closing a
/// socket with unread bytes in its receive buffer makes the kernel send a reset, which
/// can destroy the answer before the client has read it.
const LINGER_QUIET: Duration = Duration::from_secs(2);
const LINGER_MAX: Duration = Duration::from_secs(10);
/// Requests served per connection per turn: a client that pipelines without pause gets
/// its turn again after the other connections of its thread, not the thread to itself.
const ANSWERS_PER_TURN: u64 = 32;

/// The kind of thread that advances a connection, which decides how far it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The handshake stage: the TLS handshake only; a connection whose handshake is done
    /// is handed to its event loop.
    Handshake,
    /// An event loop: a request whose handler may wait is left for the pool.
    Loop,
    /// A pool worker, where handlers may wait for the keystore.
    Pool,
}

/// What happens to a connection after [`Conn::advance`].
#[derive(Debug)]
pub enum Next {
    /// Wait for more bytes until the deadline.
    Park(Instant),
    /// Wait until the socket takes the queued output, at most until the deadline.
    ParkWrite(Instant),
    Close,
    /// Send these events as a stream, on a thread of its own (log streams).
    Stream(Receiver<Arc<[u8]>>),
    /// A complete request needs a handler that may wait: run it on the pool.
    Offload,
    /// More may be ready to serve without new bytes arriving: advance it again soon,
    /// after the other connections of this loop have had their turn.
    Yield,
    /// The handshake is done: serve it on its event loop from now on, at once
    /// ([`Next::Yield`]) or when its next bytes arrive ([`Next::Park`]).
    Handoff(Box<Next>),
    /// A request waits for this call to CipherTrust, which its event loop makes
    /// (`super::upstream`); the connection waits, parked, until [`Conn::resume`], at most
    /// until the deadline.
    Remote(Call, Instant),
}

/// What a turn ended with, before the queued output is sent.
#[derive(Debug)]
enum Turn {
    Park(Instant),
    Close,
    Stream(Receiver<Arc<[u8]>>),
    Offload,
    Yield,
    Handoff,
    Remote(Call),
    /// The connection's last answer was queued: once it is out, stop sending and discard
    /// what the client still sends (see [`LINGER_QUIET`]).
    Drain,
}

/// A connection that sent its last answer and discards input until the client closes.
#[derive(Debug, Clone, Copy)]
struct Linger {
    /// Closed when nothing arrives until then.
    quiet_until: Instant,
    /// Closed then in any case.
    until: Instant,
}

/// A complete request, to be answered.
struct Ready {
    req: Request,
    routed: Routed,
    started: Instant,
    deadline: Instant,
    /// The master key of an `Exec::Key` route, taken on the loop (`api::warm_key`).
    key: Option<Warm>,
}

/// A request whose call to CipherTrust is under way on the event loop.
struct Awaiting {
    /// The request, as it goes to the pool should the call not settle it.
    ready: Ready,
    finish: Finish,
    /// The socket was read until drained before the call, and no event came since: the
    /// turn after the answer need not read it first.
    drained: bool,
}

/// A request whose head has arrived and whose body is still arriving.
struct Pending {
    req: Request,
    routed: Routed,
    framing: BodyFraming,
    /// Chunk extension and trailer bytes so far, which count toward the body limit.
    chunk_extra: usize,
    started: Instant,
    /// When the body must have arrived and the response been written: the route's
    /// timeout, fixed when the head arrived.
    deadline: Instant,
}

pub struct Conn {
    pub sock: TcpStream,
    /// The socket's descriptor, which the event loop lends to mio (`SourceFd` borrows it).
    pub fd: std::os::fd::RawFd,
    /// The event loop that owns this connection while it is not on the pool.
    pub home: usize,
    tls: ServerConnection,
    peer: SocketAddr,
    accepted: Instant,
    /// When the client's current turn before its first request began (see
    /// [`HEADER_TIMEOUT`]).
    client_turn: Instant,
    /// Decrypted bytes not yet consumed by a request: plaintexts and imported keys,
    /// wiped when dropped and when it grows ([`crate::memory::extend_wiped`]).
    inbuf: Zeroizing<Vec<u8>>,
    /// When the first byte of the current (incomplete) head arrived.
    head_started: Option<Instant>,
    pending: Option<Pending>,
    ready: Option<Ready>,
    awaiting: Option<Awaiting>,
    /// Output is queued that the socket has not taken yet: what to do once it has.
    then: Option<Turn>,
    /// Until when the client must have taken the queued output.
    write_deadline: Instant,
    /// Bytes queued since the output was last sent completely.
    queued: usize,
    /// The peer closed its side (or the socket failed): read to the end, a short read
    /// does not mean that nothing more is there.
    peer_closed: bool,
    who: Option<PeerIdentity>,
    /// The socket was read until drained by the thread that had the connection before:
    /// the next turn serves what is buffered before reading (see `settle`).
    drained: bool,
    served: u64,
    eof: bool,
    /// After the last answer (a refusal of a request whose body was not read, or a
    /// `Connection: close`): input is discarded, so that the client can read the answer
    /// instead of a reset.
    draining: Option<Linger>,
    gauges: Arc<Gauges>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.gauges.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// Sets up a freshly accepted connection; it counts as open until dropped.
    pub fn new(
        sock: TcpStream,
        peer: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        gauges: Arc<Gauges>,
    ) -> io::Result<Conn> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let mut tls = ServerConnection::new(tls).map_err(io::Error::other)?;
        // Responses are queued whole and sent as the socket takes them; what one
        // connection can queue is bounded by the requests it may have buffered.
        tls.set_buffer_limit(None);
        gauges.open_connections.fetch_add(1, Ordering::AcqRel);
        let accepted = Instant::now();
        Ok(Conn {
            gauges,
            fd: sock.as_raw_fd(),
            sock,
            home: 0,
            tls,
            peer,
            accepted,
            client_turn: accepted,
            inbuf: Zeroizing::new(Vec::new()),
            head_started: None,
            pending: None,
            ready: None,
            awaiting: None,
            then: None,
            write_deadline: accepted + HEADER_TIMEOUT,
            queued: 0,
            peer_closed: false,
            who: None,
            drained: false,
            served: 0,
            eof: false,
            draining: None,
        })
    }

    /// Whether a request has started arriving but is not answered yet.
    pub fn mid_request(&self) -> bool {
        self.pending.is_some()
            || self.ready.is_some()
            || self.awaiting.is_some()
            || self.then.is_some()
            || !self.inbuf.is_empty()
    }

    /// What the connection waits for, and for whom, for the log of a closed one.
    pub fn waiting_for(&self) -> String {
        let what = if self.tls.is_handshaking() {
            "the TLS handshake"
        } else if self.draining.is_some() {
            "the client to close after the last answer"
        } else if self.awaiting.is_some() {
            "CipherTrust Manager to answer its request"
        } else if self.then.is_some() {
            "the client to read its answers"
        } else if self.pending.is_some() {
            "the request body"
        } else if !self.inbuf.is_empty() {
            "the request head"
        } else if self.served == 0 {
            "the first request"
        } else {
            "the next request"
        };
        format!("{} waited for {what}", self.peer)
    }

    /// The event loop saw the peer close its side, or an error: the next reads go on to
    /// the end of the stream (edge-triggered, no other event will say so).
    pub fn note_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// The deadline while waiting for the handshake or the first request.
    pub fn first_deadline(&self) -> Instant {
        self.client_turn + HEADER_TIMEOUT
    }

    /// Makes all the progress the arrived bytes and the socket's room allow.
    pub fn advance(&mut self, state: &State, closing: bool, role: Role) -> Next {
        if let Some(awaiting) = &mut self.awaiting {
            // Bytes that arrive meanwhile wait in the socket: the turn after the answer
            // starts by reading it.
            awaiting.drained = false;
            return Next::Park(awaiting.ready.deadline + HEADER_TIMEOUT);
        }
        let turn = match self.then.take() {
            Some(turn) => turn,
            None => self.turn(state, closing, role),
        };
        self.settle(turn)
    }

    fn turn(&mut self, state: &State, closing: bool, role: Role) -> Turn {
        match self.try_advance(state, closing, role) {
            Ok(turn) => turn,
            Err(e) => {
                log::debug!("connection from {}: {e}", self.peer);
                // Whatever explains the failure (a TLS alert) goes out if it can.
                let _ = self.flush_tls();
                Turn::Close
            }
        }
    }

    /// Sends the queued output, then acts on `turn`; parks for writing while the socket
    /// is full.
    fn settle(&mut self, turn: Turn) -> Next {
        if let Turn::Handoff = turn {
            if !self.inbuf.is_empty() || self.eof {
                // The first request came along: what the handshake left queued (a TLS
                // 1.3 session ticket) goes out with its answer, in one write (and one
                // wake-up of the client) instead of two. The handshake thread read until
                // the socket was drained; the event loop's poll reports what arrives
                // after, so it serves what is buffered before reading again.
                self.drained = true;
                return Next::Handoff(Box::new(Next::Yield));
            }
            // Nothing to serve yet: the queued flight (TLS 1.2's Finished, which the
            // client waits for) goes out now, and the event loop waits for the request
            // without trying to read it first.
            return match self.flush_tls() {
                Ok(true) => Next::Handoff(Box::new(Next::Park(self.first_deadline()))),
                // The socket is full: the event loop goes on sending.
                Ok(false) => Next::Handoff(Box::new(Next::Yield)),
                Err(e) => {
                    log::debug!("connection from {}: {e}", self.peer);
                    Next::Close
                }
            };
        }
        match self.flush_tls() {
            Ok(true) => {}
            Ok(false) => {
                self.then = Some(turn);
                return Next::ParkWrite(self.write_deadline);
            }
            Err(e) => {
                log::debug!("connection from {}: {e}", self.peer);
                return Next::Close;
            }
        }
        match turn {
            Turn::Park(deadline) => Next::Park(deadline),
            Turn::Close => Next::Close,
            Turn::Stream(events) => Next::Stream(events),
            Turn::Offload => Next::Offload,
            Turn::Yield => Next::Yield,
            Turn::Remote(call) => {
                let deadline = self
                    .awaiting
                    .as_ref()
                    .map_or(call.deadline, |a| a.ready.deadline);
                Next::Remote(call, deadline + HEADER_TIMEOUT)
            }
            Turn::Handoff => unreachable!("settled above"),
            Turn::Drain => {
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
                let now = Instant::now();
                self.draining = Some(Linger {
                    quiet_until: now + LINGER_QUIET,
                    until: now + LINGER_MAX,
                });
                // Discarding queues nothing: this settles at once.
                let turn = self.discard_input();
                self.settle(turn)
            }
        }
    }

    fn try_advance(&mut self, state: &State, closing: bool, role: Role) -> io::Result<Turn> {
        if self.draining.is_some() {
            return Ok(self.discard_input());
        }
        let mut drained = if std::mem::take(&mut self.drained) {
            true
        } else {
            self.read_socket()?
        };
        if self.tls.is_handshaking() {
            if self.tls.wants_write() {
                // The server's flight goes out now: the client's turn begins.
                self.client_turn = Instant::now();
            }
            return Ok(if self.eof {
                Turn::Close
            } else {
                self.write_deadline = self.first_deadline();
                Turn::Park(self.first_deadline())
            });
        }
        if self.who.is_none() {
            self.who = Some(crate::tls::peer_identity(self.tls.peer_certificates()));
            // Handshake done: the first request's head is the client's turn.
            self.client_turn = Instant::now();
            if role == Role::Handshake {
                // Requests that came with the client's last flight (and an end of
                // stream after them) are served on the event loop.
                return Ok(Turn::Handoff);
            }
        }
        let served_before = self.served;
        loop {
            match self.step(state, closing, role)? {
                Step::Again if self.queued >= OUTPUT_HIGH_WATER && !self.flush_tls()? => {
                    // The client is not taking its answers: wait until it does.
                    return Ok(Turn::Yield);
                }
                Step::Again if self.served - served_before >= ANSWERS_PER_TURN => {
                    return Ok(Turn::Yield);
                }
                Step::Again => continue,
                Step::Stream(events) => return Ok(Turn::Stream(events)),
                Step::Offload => return Ok(Turn::Offload),
                Step::Remote(call) => {
                    if let Some(awaiting) = &mut self.awaiting {
                        awaiting.drained = drained;
                    }
                    return Ok(Turn::Remote(call));
                }
                Step::Drain => return Ok(Turn::Drain),
                Step::Wait(_) if !drained => {
                    let before = self.inbuf.len();
                    drained = self.read_socket()?;
                    if self.inbuf.len() == before && !drained && !self.eof {
                        // The buffer is full and still holds no complete request. The
                        // limits on heads, bodies and chunk lines leave room for any
                        // request they accept; should this be reached anyway, the
                        // client gets an answer, not a silent close.
                        let pending = self.pending.take();
                        let response = match pending {
                            Some(_) => Response::error(413, "request body too large"),
                            None => Response::error(431, "request header fields too large"),
                        };
                        let started = pending.as_ref().map_or(self.accepted, |p| p.started);
                        self.refuse(&response, pending.as_ref().map(|p| &p.req), started)?;
                        return Ok(Turn::Drain);
                    }
                }
                Step::Wait(deadline) => {
                    return Ok(
                        if self.eof || closing && self.pending.is_none() && self.inbuf.is_empty() {
                            Turn::Close
                        } else {
                            Turn::Park(deadline)
                        },
                    );
                }
            }
        }
    }

    fn body_limit(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.routed.route().max_body)
    }
}

enum Step {
    Again,
    /// A complete request waits in `ready` for a pool worker.
    Offload,
    /// A complete request waits in `awaiting` for this call to CipherTrust.
    Remote(Call),
    Stream(Receiver<Arc<[u8]>>),
    Wait(Instant),
    /// The connection's last answer was queued (a refusal sent before the request was
    /// read, or `Connection: close`): discard input, then close.
    Drain,
}
