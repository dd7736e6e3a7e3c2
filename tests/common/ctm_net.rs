//! The stand-in's network side: one thread with a readiness loop (mio) serves every
//! connection, TLS and HTTP/1.1 keep-alive, and an answer waits out the injected latency
//! on a timer queue rather than in a sleeping thread.
//!
//! Why a loop: a real CipherTrust Manager answers from its own machine, but the stand-in
//! shares this one with kes and the load generator. With a thread per connection it
//! cost as much CPU per call as kes itself (three context switches and a timer per
//! answer), which the benchmarks of resident keys then measured instead of kes
//! (docs/BENCHMARKS.md). What a client sees is unchanged: one request at a time per
//! connection, answered after the latency, requests read but held while hanging,
//! connections cut when the stand-in goes down.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener as MioListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Inner, Reply, Route, handle, header, lock, reason, route_of};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const TIMER: Token = Token(2);
/// How often held requests look whether the hang is over (as the threads did).
const HANG_POLL: Duration = Duration::from_millis(20);

/// The running loop; [`NetLoop::stop`] ends it and closes every socket it had.
pub(super) struct NetLoop {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

impl NetLoop {
    pub(super) fn start(inner: Arc<Inner>, listener: TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("ctm-sim".into())
            .spawn(move || {
                let mut server = Server {
                    inner,
                    poll,
                    listener: MioListener::from_std(listener),
                    conns: HashMap::new(),
                    next_token: 3,
                    timers: BinaryHeap::new(),
                    timer: Timer::new(),
                    held: Vec::new(),
                    seed: 0x9E37_79B9_7F4A_7C15,
                };
                server.run(&flag);
                server.close_all();
            })
            .unwrap();
        Self {
            stop,
            waker,
            thread,
        }
    }

    /// Ends the loop; returns once the listener and every connection are closed.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        self.thread.join().unwrap();
    }
}

/// A request read in full.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Conn {
    sock: TcpStream,
    tls: rustls::ServerConnection,
    /// Plaintext received and not yet taken as a request.
    input: Vec<u8>,
    /// A request is being answered (waiting on the latency, or held by a hang): the next
    /// one is not read until its answer is written, as a server of one request at a time.
    busy: bool,
    /// The answer waiting for its time, and whether the connection closes after it.
    pending: Option<(Vec<u8>, bool)>,
    /// Close once the TLS output is written.
    closing: bool,
    writable_interest: bool,
}

struct Server {
    inner: Arc<Inner>,
    poll: Poll,
    listener: MioListener,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    /// When each pending answer is due.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Wakes the poll when the first of them is due.
    timer: Timer,
    /// Requests read while hanging, with their route.
    held: Vec<(Token, Route, Request)>,
    /// State of the latency jitter's random numbers.
    seed: u64,
}

impl Server {
    fn run(&mut self, stop: &AtomicBool) {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
            .unwrap();
        self.poll
            .registry()
            .register(&mut SourceFd(&self.timer.fd), TIMER, Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::SeqCst) {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("the stand-in's poll failed: {e}");
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    TIMER => self.timer.clear(),
                    token => self.ready(token),
                }
            }
            self.fire_timers();
            self.release_held();
            if let Some(Reverse((due, _))) = self.timers.peek() {
                self.timer.arm(*due);
            }
        }
    }

    /// The answers' times are kept by the timer (a poll's own timeout is in whole
    /// milliseconds, rounded up: answers would leave in bursts up to 1 ms late).
    fn timeout(&self) -> Option<Duration> {
        (!self.held.is_empty()).then_some(HANG_POLL)
    }

    fn accept(&mut self) {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            self.inner.next_connection.fetch_add(1, Ordering::SeqCst);
            let Ok(tls) = rustls::ServerConnection::new(Arc::clone(&self.inner.tls)) else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            let token = Token(self.next_token);
            self.next_token += 1;
            if self
                .poll
                .registry()
                .register(&mut sock, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    sock,
                    tls,
                    input: Vec::new(),
                    busy: false,
                    pending: None,
                    closing: false,
                    writable_interest: false,
                },
            );
        }
    }

    /// The socket of `token` can be read or written.
    fn ready(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.receive() {
            self.drop_conn(token);
            return;
        }
        self.next_request(token);
        self.flush(token);
    }

    /// Takes the next complete request of `token` if none is being answered.
    fn next_request(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.busy || conn.closing {
            return;
        }
        let request = match parse(&mut conn.input) {
            Parsed::Request(request) => request,
            Parsed::Partial => return,
            Parsed::Bad => {
                conn.closing = true;
                conn.tls.send_close_notify();
                return;
            }
        };
        conn.busy = true;
        if self.inner.hang.load(Ordering::SeqCst) {
            let path = request.target.split('?').next().unwrap_or_default();
            let route = route_of(&request.method, path);
            *lock(&self.inner.held).entry(route).or_insert(0) += 1;
            self.held.push((token, route, request));
            return;
        }
        self.answer(token, &request);
    }

    /// Handles `request` and sends or schedules its answer.
    fn answer(&mut self, token: Token, request: &Request) {
        let inner = &self.inner;
        let now_in_flight = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner
            .max_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let reply = handle(
            inner,
            &request.method,
            &request.target,
            &request.headers,
            &request.body,
        );
        let close =
            header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let bytes = encode(&reply);
        let latency = inner.latency_ms.load(Ordering::SeqCst);
        let Some(conn) = self.conns.get_mut(&token) else {
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        conn.pending = Some((bytes, close));
        if latency == 0 {
            self.send(token);
        } else {
            let mut wait = Duration::from_millis(latency);
            let jitter = inner.jitter_percent.load(Ordering::SeqCst);
            if jitter > 0 {
                // Uniform in ±jitter %: xorshift, seeded per loop.
                self.seed ^= self.seed << 13;
                self.seed ^= self.seed >> 7;
                self.seed ^= self.seed << 17;
                let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
                wait = wait.mul_f64(1.0 + jitter as f64 / 100.0 * (2.0 * unit - 1.0));
            }
            let due = Instant::now() + wait;
            self.timers.push(Reverse((due, token.0)));
            self.timer.arm(due);
        }
    }

    /// Writes the pending answer of `token`, then takes its next request.
    fn send(&mut self, token: Token) {
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let Some((bytes, close)) = conn.pending.take() else {
            return;
        };
        conn.busy = false;
        if conn.tls.writer().write_all(&bytes).is_err() {
            self.drop_conn(token);
            return;
        }
        if close {
            conn.closing = true;
            conn.tls.send_close_notify();
        }
        self.next_request(token);
        self.flush(token);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, token))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            self.send(Token(token));
        }
    }

    fn release_held(&mut self) {
        if self.held.is_empty() || self.inner.hang.load(Ordering::SeqCst) {
            return;
        }
        for (token, route, request) in std::mem::take(&mut self.held) {
            *lock(&self.inner.held).entry(route).or_insert(1) -= 1;
            self.answer(token, &request);
        }
    }

    /// Writes what TLS has to send; closes the connection when it is done and closing.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        while conn.tls.wants_write() {
            match conn.tls.write_tls(&mut conn.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.drop_conn(token);
                    return;
                }
            }
        }
        let blocked = conn.tls.wants_write();
        if !blocked && conn.closing {
            self.drop_conn(token);
            return;
        }
        if blocked != conn.writable_interest {
            conn.writable_interest = blocked;
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.sock, token, interest)
                .is_err()
            {
                self.drop_conn(token);
            }
        }
    }

    fn drop_conn(&mut self, token: Token) {
        // A pending answer's timer still fires, and counts the answer as done there.
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.sock);
            let _ = conn.sock.shutdown(Shutdown::Both);
        }
    }

    /// Going down: the listener closes (with the loop) and every connection is cut.
    fn close_all(&mut self) {
        for (_, route, _) in std::mem::take(&mut self.held) {
            *lock(&self.inner.held).entry(route).or_insert(1) -= 1;
        }
        // Answers that will never be written are no longer in flight.
        let pending = self.conns.values().filter(|c| c.pending.is_some()).count() as u64;
        self.inner.in_flight.fetch_sub(pending, Ordering::SeqCst);
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            if let Some(mut conn) = self.conns.remove(&token) {
                conn.pending = None;
                let _ = conn.sock.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Conn {
    /// Reads what the socket has, through TLS, into `input`; false when the connection
    /// is over (closed by the peer, or broken).
    fn receive(&mut self) -> bool {
        loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if self.tls.process_new_packets().is_err() {
                // Let the alert out, then close.
                let _ = self.tls.write_tls(&mut self.sock);
                return false;
            }
            let mut chunk = [0u8; 8192];
            loop {
                match self.tls.reader().read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
        }
    }
}

enum Parsed {
    Request(Request),
    Partial,
    Bad,
}

/// Takes one complete request (head and `Content-Length` body) off the front of `input`.
fn parse(input: &mut Vec<u8>) -> Parsed {
    if input.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Parsed::Bad;
    };
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let content_length = header(&headers, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if input.len() < head_len + content_length {
        return Parsed::Partial;
    }
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: input[head_len..head_len + content_length].to_vec(),
    };
    input.drain(..head_len + content_length);
    Parsed::Request(request)
}

/// The answer's bytes: status line, headers and body in one piece (one TLS record).
fn encode(reply: &Reply) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    if reply.status != 204 {
        out.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            reply.content_type,
            reply.body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if reply.status != 204 {
        bytes.extend_from_slice(&reply.body);
    }
    bytes
}

/// A timerfd: wakes the poll at a time to the microsecond.
struct Timer {
    fd: std::os::fd::RawFd,
    /// When it goes off next, if armed.
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        // SAFETY: a plain system call; the descriptor is checked and owned by `Timer`.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        assert!(fd >= 0, "timerfd_create: {}", io::Error::last_os_error());
        Self { fd, armed: None }
    }

    /// Makes it go off at `due` unless it goes off sooner already.
    fn arm(&mut self, due: Instant) {
        if self.armed.is_some_and(|armed| armed <= due) {
            return;
        }
        let wait = due
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec and `fd` our timerfd.
        let rc = unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) };
        assert!(rc == 0, "timerfd_settime: {}", io::Error::last_os_error());
        self.armed = Some(due);
    }

    /// It went off: reset it, so that it wakes the poll again when armed again.
    fn clear(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `expirations`.
        let _ = unsafe { libc::read(self.fd, expirations.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}
