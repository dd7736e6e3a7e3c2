//! `--event-loop`: the keep-alive load driven from one thread's readiness loop (mio)
//! instead of a thread per connection.
//!
//! Why: with hundreds of connections the threads cost the machine a context switch and
//! a wake-up per answer, and on a 2-core machine that shares the server, the load
//! generator and the CipherTrust stand-in (the resident-key benchmark), those
//! microseconds are taken from the server being measured. The loop opens every
//! connection (TCP and TLS handshake) before the clock starts, so the measured latencies
//! are those of requests on open connections, as in the thread mode after its first
//! request; then each connection sends its next request as soon as the previous answer
//! is read, until the deadline or the request budget, and finishes the one it has out.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;

use crate::conn::{Conn as BlockingConn, Target, parse_head};
use crate::load::{Report, Work, io_kind};

struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    input: Vec<u8>,
    /// The request out, and when it was sent; `None` once the connection is done.
    sent: Option<Instant>,
    seq: usize,
}

/// Runs the load: `connections` keep-alive connections for `duration` or until
/// `requests` requests in total, their first requests spread over `stagger`.
pub(crate) fn run(
    t: &Target,
    work: &Work,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    stagger: Duration,
) -> Result<Report, String> {
    let requests_of = work.requests(t, false);
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut conn = open(t).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
        poll.registry()
            .register(&mut conn.sock, Token(i), Interest::READABLE)
            .map_err(|e| format!("poll: {e}"))?;
        conns.push(conn);
    }

    let start = Instant::now();
    let deadline = requests.is_none().then(|| start + duration);
    let mut budget = requests.unwrap_or(u64::MAX);
    let mut samples = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ok = 0;
    let mut out = 0;
    // The first requests leave spread evenly over `stagger`, as independent clients'
    // would: sent at once against a server whose latency never varies (the CipherTrust
    // stand-in), they would move as one convoy for the whole run, the CPU idle while it
    // waits and overrun when it returns.
    let count = conns.len().max(1) as f64;
    let mut unstarted = 0..conns.len();
    let start_of = |i: usize| start + stagger.mul_f64(i as f64 / count);
    let mut events = Events::with_capacity(1024);
    while out > 0 || !unstarted.is_empty() {
        let now = Instant::now();
        while let Some(i) = unstarted.clone().next().filter(|&i| start_of(i) <= now) {
            unstarted.next();
            if budget == 0 || deadline.is_some_and(|d| now >= d) {
                unstarted = 0..0;
                break;
            }
            budget -= 1;
            let conn = &mut conns[i];
            match conn.send(&requests_of[(conn.seq + i) % requests_of.len()]) {
                Ok(()) => out += 1,
                Err(e) => *errors.entry(io_kind(&e)).or_insert(0) += 1,
            }
        }
        let timeout = match unstarted.clone().next() {
            Some(i) => start_of(i).saturating_duration_since(now),
            None if out == 0 => break,
            None => Duration::from_secs(30),
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if events.is_empty() && unstarted.is_empty() {
            *errors.entry("no answer within 30 s".into()).or_insert(0) += out;
            break;
        }
        for event in events.iter() {
            let i = event.token().0;
            let conn = &mut conns[i];
            let Some(sent) = conn.sent else { continue };
            let status = match conn.receive() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    samples.push(sent.elapsed().as_nanos() as u64);
                    *errors.entry(io_kind(&e)).or_insert(0) += 1;
                    conn.sent = None;
                    out -= 1;
                    continue;
                }
            };
            samples.push(sent.elapsed().as_nanos() as u64);
            if status == 200 {
                ok += 1;
            } else {
                *errors.entry(format!("HTTP {status}")).or_insert(0) += 1;
            }
            conn.sent = None;
            conn.seq += 1;
            let more = budget > 0 && deadline.is_none_or(|d| Instant::now() < d);
            if !more {
                out -= 1;
                continue;
            }
            budget -= 1;
            if let Err(e) = conn.send(&requests_of[(conn.seq + i) % requests_of.len()]) {
                *errors.entry(io_kind(&e)).or_insert(0) += 1;
                out -= 1;
            }
        }
    }
    let elapsed = start.elapsed();
    samples.sort_unstable();
    Ok(Report {
        elapsed,
        ok,
        total: samples.len() as u64,
        errors,
        samples,
    })
}

/// A connection with its TLS handshake done, then made non-blocking.
fn open(t: &Target) -> io::Result<Conn> {
    let (tls, tcp) = BlockingConn::open(t)?.into_parts();
    tcp.set_nonblocking(true)?;
    Ok(Conn {
        sock: TcpStream::from_std(tcp),
        tls,
        input: Vec::with_capacity(16 * 1024),
        sent: None,
        seq: 0,
    })
}

impl Conn {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.tls.writer().write_all(request)?;
        self.sent = Some(Instant::now());
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                // A request is far smaller than the socket's buffer: it does not block
                // on a connection with nothing else out.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::other("the request did not fit the socket"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what has arrived; the answer's status once it is complete.
    fn receive(&mut self) -> io::Result<Option<u16>> {
        loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return Err(io::Error::other("the server closed the connection")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.tls.process_new_packets().map_err(io::Error::other)?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut chunk) {
                    Ok(0) => return Err(io::Error::other("the server closed the connection")),
                    Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let Some(head) = parse_head(&self.input)? else {
            return Ok(None);
        };
        if head.chunked {
            return Err(io::Error::other(
                "--event-loop reads Content-Length answers only",
            ));
        }
        let end = head.len + head.content_length.unwrap_or(0);
        if self.input.len() < end {
            return Ok(None);
        }
        self.input.drain(..end);
        Ok(Some(head.status))
    }
}
