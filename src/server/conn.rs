//! One client connection: TLS, request framing, dispatch, response.
//!
//! A connection never waits for its client on a worker thread. Its socket is
//! non-blocking: a worker takes whatever bytes have arrived, serves every complete
//! request among them, and hands the connection back to the poller with a deadline
//! when it needs more. So a client that sends nothing, or a byte a second, costs a
//! parked entry, never a worker, and is closed when its deadline passes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::Gauges;
use crate::api::{self, PeerIdentity, Routed};
use crate::http::{self, BodyFraming, ChunkError, HeadError, Request, Response};
use crate::state::State;

/// Time from accept to a complete first request head (TLS handshake included), and
/// from the first byte of any later request head to its end.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Plaintext buffered per connection beyond the largest body: bounds memory per client.
const READ_SLACK: usize = 64 * 1024;

/// What the worker does with a connection after [`Conn::advance`].
#[derive(Debug)]
pub enum Next {
    /// Wait for more bytes until the deadline.
    Park(Instant),
    Close,
    /// Send these events as a stream, on a thread of its own (log streams).
    Stream(Receiver<Arc<[u8]>>),
}

/// A request whose head has arrived and whose body is still arriving.
struct Pending {
    req: Request,
    routed: Routed,
    framing: BodyFraming,
    started: Instant,
    /// When the body must have arrived and the response been written: the route's
    /// timeout, fixed when the head arrived.
    deadline: Instant,
}

pub struct Conn {
    pub sock: TcpStream,
    /// The socket is in the poller's set (armed while parked, disarmed by its oneshot
    /// event while a worker has it); it must be deleted from the set before closing.
    pub registered: bool,
    tls: ServerConnection,
    peer: SocketAddr,
    accepted: Instant,
    /// Decrypted bytes not yet consumed by a request.
    inbuf: Vec<u8>,
    /// When the first byte of the current (incomplete) head arrived.
    head_started: Option<Instant>,
    pending: Option<Pending>,
    who: Option<PeerIdentity>,
    served: u64,
    eof: bool,
    /// After refusing a request whose body was not read: until when to discard what the
    /// client still sends, so that it can read the refusal instead of a reset.
    draining: Option<Instant>,
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
        let tls = ServerConnection::new(tls).map_err(io::Error::other)?;
        gauges.open_connections.fetch_add(1, Ordering::AcqRel);
        Ok(Conn {
            gauges,
            sock,
            registered: false,
            tls,
            peer,
            accepted: Instant::now(),
            inbuf: Vec::new(),
            head_started: None,
            pending: None,
            who: None,
            served: 0,
            eof: false,
            draining: None,
        })
    }

    /// Whether a request has started arriving but is not answered yet.
    pub fn mid_request(&self) -> bool {
        self.pending.is_some() || !self.inbuf.is_empty()
    }

    /// The deadline while waiting for the handshake or the first request.
    pub fn first_deadline(&self) -> Instant {
        self.accepted + HEADER_TIMEOUT
    }

    /// Makes all the progress the arrived bytes allow.
    pub fn advance(&mut self, state: &State, closing: bool) -> Next {
        match self.try_advance(state, closing) {
            Ok(next) => next,
            Err(e) => {
                log::debug!("connection from {}: {e}", self.peer);
                Next::Close
            }
        }
    }

    fn try_advance(&mut self, state: &State, closing: bool) -> io::Result<Next> {
        if let Some(until) = self.draining {
            return Ok(self.discard_input(until));
        }
        let mut drained = self.read_socket()?;
        self.flush_tls(Instant::now() + HEADER_TIMEOUT)?;
        if self.tls.is_handshaking() {
            return Ok(if self.eof {
                Next::Close
            } else {
                Next::Park(self.first_deadline())
            });
        }
        if self.who.is_none() {
            self.who = Some(crate::tls::peer_identity(self.tls.peer_certificates()));
        }
        loop {
            match self.step(state, closing)? {
                Step::Again => continue,
                Step::Close => return Ok(Next::Close),
                Step::Stream(events) => return Ok(Next::Stream(events)),
                Step::Drain => {
                    return Ok(self.discard_input(self.draining.unwrap_or_else(Instant::now)));
                }
                Step::Wait(_) if !drained => {
                    let before = self.inbuf.len();
                    drained = self.read_socket()?;
                    if self.inbuf.len() == before && !self.eof {
                        // The buffer is full and still holds no complete request.
                        return Ok(Next::Close);
                    }
                }
                Step::Wait(deadline) => {
                    return Ok(
                        if self.eof || closing && self.pending.is_none() && self.inbuf.is_empty() {
                            Next::Close
                        } else {
                            Next::Park(deadline)
                        },
                    );
                }
            }
        }
    }

    /// Reads what the socket has into rustls and the decrypted bytes into `inbuf`, up to
    /// what the current request may need. Returns whether the socket was drained.
    fn read_socket(&mut self) -> io::Result<bool> {
        let limit = http::MAX_HEAD + self.body_limit() + READ_SLACK;
        while self.inbuf.len() < limit && !self.eof {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Send the alert that explains the failure, then give up.
                let _ = self.flush_tls(Instant::now() + Duration::from_secs(1));
                return Err(io::Error::other(format!("TLS: {e}")));
            }
            self.drain_plaintext()?;
        }
        Ok(self.eof)
    }

    fn drain_plaintext(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn body_limit(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.routed.route().max_body)
    }

    fn step(&mut self, state: &State, closing: bool) -> io::Result<Step> {
        let Some(pending) = self.pending.take() else {
            return self.read_head(state);
        };
        let limit = pending.routed.route().max_body;
        let body = match pending.framing {
            BodyFraming::Length(n) => {
                let n = n as usize;
                if self.inbuf.len() < n {
                    let deadline = pending.deadline;
                    self.pending = Some(pending);
                    return Ok(Step::Wait(deadline));
                }
                self.inbuf.drain(..n).collect()
            }
            BodyFraming::Chunked => match http::decode_chunked(&self.inbuf, limit) {
                Ok(Some((body, used))) => {
                    self.inbuf.drain(..used);
                    body
                }
                Ok(None) => {
                    let deadline = pending.deadline;
                    self.pending = Some(pending);
                    return Ok(Step::Wait(deadline));
                }
                Err(ChunkError::TooLarge) => {
                    let response = Response::error(413, "request body too large");
                    return self.refuse(&response, Some(&pending.req), pending.started);
                }
                Err(ChunkError::Malformed) => {
                    let response = Response::error(400, "malformed chunked request body");
                    return self.refuse(&response, Some(&pending.req), pending.started);
                }
            },
        };
        let Pending {
            mut req,
            routed,
            started,
            deadline,
            ..
        } = pending;
        req.body = body;
        let mut response = self.dispatch(state, routed, &req);
        self.served += 1;
        if let Some(events) = response.stream.take() {
            self.write_plain(&response.stream_head(), Instant::now() + HEADER_TIMEOUT)?;
            self.record(Some(&req), response.status, started);
            return Ok(Step::Stream(events));
        }
        let close = closing || !req.keep_alive();
        let sent = self.send(&response, close, deadline);
        self.record(Some(&req), response.status, started);
        sent?;
        Ok(if close { Step::Close } else { Step::Again })
    }

    fn read_head(&mut self, state: &State) -> io::Result<Step> {
        if self.inbuf.is_empty() {
            self.head_started = None;
            let deadline = if self.served == 0 {
                self.first_deadline()
            } else {
                Instant::now() + IDLE_TIMEOUT
            };
            return Ok(Step::Wait(deadline));
        }
        let head_started = *self.head_started.get_or_insert_with(Instant::now);
        let (req, head_len) = match http::parse_head(&self.inbuf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                let start = if self.served == 0 {
                    self.accepted
                } else {
                    head_started
                };
                return Ok(Step::Wait(start + HEADER_TIMEOUT));
            }
            Err(HeadError::TooLarge) => {
                let response = Response::error(431, "request header fields too large");
                return self.refuse(&response, None, head_started);
            }
            Err(HeadError::Malformed(msg)) => {
                return self.refuse(&Response::error(400, &msg), None, head_started);
            }
        };
        self.inbuf.drain(..head_len);
        self.head_started = None;
        let framing = match req.framing() {
            Ok(framing) => framing,
            Err(HeadError::Malformed(msg)) => {
                return self.refuse(&Response::error(400, &msg), Some(&req), head_started);
            }
            Err(HeadError::TooLarge) => {
                let response = Response::error(431, "request header fields too large");
                return self.refuse(&response, Some(&req), head_started);
            }
        };
        let announced = match framing {
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        };
        let routed = match api::preflight(&req, announced) {
            Ok(routed) => routed,
            Err(response) => {
                self.served += 1;
                if framing != BodyFraming::Length(0) {
                    return self.refuse(&response, Some(&req), head_started);
                }
                // Without a body to skip, the connection can serve the next request.
                let close = !req.keep_alive();
                let sent = self.send(&response, close, Instant::now() + HEADER_TIMEOUT);
                self.record(Some(&req), response.status, head_started);
                sent?;
                return Ok(if close { Step::Close } else { Step::Again });
            }
        };
        if framing != BodyFraming::Length(0)
            && req
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.write_plain(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Instant::now() + HEADER_TIMEOUT,
            )?;
        }
        let started = Instant::now();
        self.pending = Some(Pending {
            deadline: started + timeout_of(state, &routed),
            req,
            routed,
            framing,
            started,
        });
        Ok(Step::Again)
    }

    /// Answers a request that will not be read to its end, then stops reading.
    fn refuse(
        &mut self,
        response: &Response,
        req: Option<&Request>,
        started: Instant,
    ) -> io::Result<Step> {
        let deadline = Instant::now() + HEADER_TIMEOUT;
        let sent = self.send(response, true, deadline);
        self.record(req, response.status, started);
        sent?;
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        self.draining = Some(Instant::now() + Duration::from_secs(2));
        Ok(Step::Drain)
    }

    /// Reads and drops whatever the client sends until it closes or `until` passes.
    fn discard_input(&mut self, until: Instant) -> Next {
        let mut sink = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut sink) {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        if Instant::now() >= until {
            Next::Close
        } else {
            Next::Park(until)
        }
    }

    /// Audits and counts an answered request.
    fn record(&self, req: Option<&Request>, status: u16, started: Instant) {
        let identity = match &self.who {
            Some(PeerIdentity::One(id)) => id.as_str(),
            _ => "",
        };
        crate::observe::record(&crate::observe::RequestRecord {
            identity,
            ip: self.peer.ip(),
            method: req.map_or("", |r| r.method.as_str()),
            path: req.map_or("", |r| r.path.as_str()),
            status,
            elapsed: started.elapsed(),
        });
    }

    /// Sends `events` as chunks until the client leaves, the events end, or `closing`
    /// is set. Runs on a thread of its own: a stream never occupies a worker.
    pub fn stream_events(mut self, events: Receiver<Arc<[u8]>>, closing: &AtomicBool) {
        const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
        // Bound what a slow subscriber can have queued in the kernel too; past that it
        // loses events (counted) instead of holding memory.
        set_send_buffer(&self.sock, 64 * 1024);
        loop {
            if closing.load(Ordering::Acquire) {
                break;
            }
            match events.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => {
                    let chunk = http::ndjson_chunk(&line);
                    if self
                        .write_plain(&chunk, Instant::now() + WRITE_TIMEOUT)
                        .is_err()
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
        let _ = self.write_plain(b"0\r\n\r\n", Instant::now() + WRITE_TIMEOUT);
        self.tls.send_close_notify();
        let _ = self.flush_tls(Instant::now() + Duration::from_secs(1));
    }

    fn dispatch(&self, state: &State, routed: Routed, req: &Request) -> Response {
        crate::observe::metrics()
            .active
            .fetch_add(1, Ordering::Relaxed);
        let _active = ActiveRequest;
        let live = state.live();
        let who = self.who.clone().unwrap_or(PeerIdentity::Missing);
        let peer = self.peer.ip();
        catch_unwind(AssertUnwindSafe(|| {
            api::serve(state, &live, routed, req, peer, &who)
        }))
        .unwrap_or_else(|_| {
            log::error!("internal error while serving {} {}", req.method, req.path);
            Response::error(500, "internal server error")
        })
    }

    fn send(&mut self, response: &Response, close: bool, deadline: Instant) -> io::Result<()> {
        self.write_plain(&response.to_bytes(close), deadline)?;
        if close {
            self.tls.send_close_notify();
            self.flush_tls(deadline)?;
        }
        Ok(())
    }

    /// Encrypts and sends `bytes`, waiting for the socket at most until `deadline`.
    fn write_plain(&mut self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.tls.writer().write(bytes)?;
            bytes = &bytes[n..];
            self.flush_tls(deadline)?;
        }
        Ok(())
    }

    /// Sends buffered TLS records.
    fn flush_tls(&mut self, deadline: Instant) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(&self.sock, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Counts a request as active until dropped (also when a handler panics).
struct ActiveRequest;

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        crate::observe::metrics()
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

enum Step {
    Again,
    Stream(Receiver<Arc<[u8]>>),
    Wait(Instant),
    Close,
    /// A refusal was sent before the request was read: discard input, then close.
    Drain,
}

fn timeout_of(state: &State, routed: &Routed) -> Duration {
    state.live().route_settings[routed.route]
        .timeout
        .unwrap_or(Duration::from_secs(3600))
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
