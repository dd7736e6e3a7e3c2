//! Calls to CipherTrust Manager made by an event loop itself (issue 25; docs/ARCHITECTURE.md,
//! "Calls to CipherTrust"). Each loop keeps its own kept-alive TLS connections to
//! CipherTrust and drives them in the same poll as its client connections: a resident-key
//! request that waits for CipherTrust is a parked client connection and a call in flight,
//! not a blocked thread, and costs no hand-off between threads.
//!
//! Bounded everywhere: at most `calls` calls in flight and `connections` connections per
//! loop; past that, calls wait in a queue of at most `queue` for at most `queue_timeout`,
//! and are then refused (the client gets 503 with `Retry-After`). A call without an
//! answer by its deadline ends as a failure (its request is then made the blocking way
//! on a pool worker, with what is left of its time).
//!
//! The keystore prepares each call and judges its answer (`crate::keystore::remote`);
//! this file only moves bytes: TCP, TLS (rustls), and where an HTTP answer ends.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use zeroize::Zeroizing;

use super::short_read::ShortRead;
use crate::http::client::read_answer;
use crate::keystore::remote::{Call, Endpoint, Outcome};
use crate::memory::{drain_front_wiped, extend_wiped};
use crate::state::Gauges;

/// Tokens of upstream connections in a loop's poll: this plus the connection's index.
pub(super) const FIRST_TOKEN: usize = usize::MAX / 2;

/// The largest answer read (a crypto answer is well under a kilobyte).
const ANSWER_LIMIT: usize = 1 << 20;
/// An idle connection is closed after this long (CipherTrust's own idle limit is not
/// documented; the blocking client uses the same).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// The limits of one loop (each loop gets its share of the server's).
#[derive(Debug, Clone, Copy)]
pub(super) struct UpstreamLimits {
    pub calls: usize,
    pub connections: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
}

/// The client connection a call is for: its key in the loop's table, and the serial of
/// that connection, so that an answer never reaches a later connection at the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Waiter {
    pub key: usize,
    pub serial: u64,
}

/// A call that ended: its outcome and how long it took from being sent, or `None` when
/// it was refused (queue full, or waited past the queue's time limit).
pub(super) struct Finished {
    pub waiter: Waiter,
    pub result: Option<(Outcome, Duration)>,
}

struct InFlight {
    waiter: Waiter,
    sent: Instant,
    deadline: Instant,
}

struct Queued {
    waiter: Waiter,
    call: Call,
    /// Refused when still queued then.
    until: Instant,
}

/// One TLS connection to CipherTrust.
struct Link {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    /// Plaintext received, not yet taken as an answer (it may hold a data key).
    inbuf: Zeroizing<Vec<u8>>,
    call: Option<InFlight>,
    idle_since: Instant,
    /// The peer closed the connection (or it failed).
    eof: bool,
}

/// The upstream connections, calls and queue of one event loop.
pub(super) struct Upstream {
    links: Slab<Link>,
    idle: Vec<usize>,
    queue: VecDeque<Queued>,
    in_flight: usize,
    limits: UpstreamLimits,
    gauges: Arc<Gauges>,
    /// Where new connections go: the endpoint of the latest call.
    endpoint: Option<Endpoint>,
}

impl Upstream {
    pub(super) fn new(limits: UpstreamLimits, gauges: Arc<Gauges>) -> Upstream {
        Upstream {
            links: Slab::new(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            limits,
            gauges,
            endpoint: None,
        }
    }

    /// Whether `token` is one of this loop's upstream connections.
    pub(super) fn owns(token: Token) -> bool {
        (FIRST_TOKEN..usize::MAX - 2).contains(&token.0)
    }

    /// Starts `call` for `waiter`, or queues it. A call refused at once (the queue is
    /// full) is in `done`.
    pub(super) fn submit(
        &mut self,
        registry: &Registry,
        endpoint: &Endpoint,
        call: Call,
        waiter: Waiter,
        done: &mut Vec<Finished>,
    ) {
        self.endpoint = Some(endpoint.clone());
        if self.in_flight < self.limits.calls {
            if let Some(key) = self.idle.pop() {
                return self.send(registry, key, call, waiter, done);
            }
            if self.links.len() < self.limits.connections {
                match self.open(registry, endpoint) {
                    Ok(key) => return self.send(registry, key, call, waiter, done),
                    Err(e) => {
                        return done.push(Finished {
                            waiter,
                            result: Some((
                                Outcome::Failed(format!("cannot connect: {e}")),
                                Duration::ZERO,
                            )),
                        });
                    }
                }
            }
        }
        if self.queue.len() >= self.limits.queue {
            self.gauges.cm_refused.fetch_add(1, Ordering::Relaxed);
            return done.push(Finished {
                waiter,
                result: None,
            });
        }
        let until = (Instant::now() + self.limits.queue_timeout).min(call.deadline);
        self.queue.push_back(Queued {
            waiter,
            call,
            until,
        });
        self.gauges.cm_queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens a connection (its TCP connect and TLS handshake proceed as events arrive).
    fn open(&mut self, registry: &Registry, endpoint: &Endpoint) -> io::Result<usize> {
        let mut sock = TcpStream::connect(endpoint.addr)?;
        sock.set_nodelay(true)?;
        let tls = rustls::ClientConnection::new(endpoint.tls.clone(), endpoint.server_name.clone())
            .map_err(io::Error::other)?;
        let entry = self.links.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut sock,
            Token(FIRST_TOKEN + key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Link {
            sock,
            tls,
            inbuf: Zeroizing::new(Vec::new()),
            call: None,
            idle_since: Instant::now(),
            eof: false,
        });
        self.gauges.cm_connections.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }

    /// Sends `call` on link `key` (the request waits in rustls while the handshake runs).
    fn send(
        &mut self,
        registry: &Registry,
        key: usize,
        call: Call,
        waiter: Waiter,
        done: &mut Vec<Finished>,
    ) {
        let link = &mut self.links[key];
        if let Err(e) = link.tls.writer().write_all(&call.request) {
            done.push(Finished {
                waiter,
                result: Some((Outcome::Failed(e.to_string()), Duration::ZERO)),
            });
            return self.close(registry, key, done);
        }
        link.call = Some(InFlight {
            waiter,
            sent: Instant::now(),
            deadline: call.deadline,
        });
        self.in_flight += 1;
        self.gauges.cm_in_flight.fetch_add(1, Ordering::Relaxed);
        // Only write: the answer is announced by the link's next event.
        if let Err(e) = link.write_out() {
            self.fail(registry, key, &e.to_string(), done);
        }
    }

    /// Something happened on the upstream connection of `token`.
    pub(super) fn ready(&mut self, registry: &Registry, token: Token, done: &mut Vec<Finished>) {
        let key = token.0 - FIRST_TOKEN;
        if self.links.contains(key) {
            self.pump(registry, key, done);
        }
    }

    /// Moves the bytes link `key` can move now, and ends its call when the answer is
    /// complete or the link failed.
    fn pump(&mut self, registry: &Registry, key: usize, done: &mut Vec<Finished>) {
        let link = &mut self.links[key];
        if let Err(e) = link.exchange() {
            return self.fail(registry, key, &e.to_string(), done);
        }
        let link = &mut self.links[key];
        if link.call.is_none() {
            if link.eof {
                // CipherTrust closed an idle connection.
                self.close(registry, key, done);
            }
            return;
        }
        let answer = match read_answer(&link.inbuf, link.eof, ANSWER_LIMIT) {
            Ok(Some((answer, used))) => {
                drain_front_wiped(&mut link.inbuf, used);
                answer
            }
            Ok(None) => return,
            Err(e) => return self.fail(registry, key, &e.0, done),
        };
        let call = link.call.take().expect("a call in flight");
        let close = answer.close || link.eof;
        self.call_ended();
        done.push(Finished {
            waiter: call.waiter,
            result: Some((Outcome::Answered(answer), call.sent.elapsed())),
        });
        if close {
            return self.close(registry, key, done);
        }
        self.links[key].idle_since = Instant::now();
        self.idle.push(key);
        self.next_queued(registry, done);
    }

    fn call_ended(&mut self) {
        self.in_flight -= 1;
        self.gauges.cm_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Ends link `key`'s call, if any, as failed, and closes the link.
    fn fail(&mut self, registry: &Registry, key: usize, why: &str, done: &mut Vec<Finished>) {
        if let Some(call) = self.links[key].call.take() {
            self.call_ended();
            done.push(Finished {
                waiter: call.waiter,
                result: Some((Outcome::Failed(why.to_string()), call.sent.elapsed())),
            });
        }
        self.close(registry, key, done);
    }

    fn close(&mut self, registry: &Registry, key: usize, done: &mut Vec<Finished>) {
        let mut link = self.links.remove(key);
        debug_assert!(link.call.is_none(), "a link closes after its call ended");
        self.idle.retain(|&k| k != key);
        let _ = registry.deregister(&mut link.sock);
        self.gauges.cm_connections.fetch_sub(1, Ordering::Relaxed);
        // The room it leaves may let a queued call start on a new connection.
        self.next_queued(registry, done);
    }

    /// Starts queued calls while there is room.
    fn next_queued(&mut self, registry: &Registry, done: &mut Vec<Finished>) {
        while self.in_flight < self.limits.calls
            && (!self.idle.is_empty() || self.links.len() < self.limits.connections)
        {
            let Some(queued) = self.queue.pop_front() else {
                return;
            };
            self.gauges.cm_queued.fetch_sub(1, Ordering::Relaxed);
            let key = match self.idle.pop() {
                Some(key) => key,
                None => {
                    let Some(endpoint) = self.endpoint.clone() else {
                        return;
                    };
                    match self.open(registry, &endpoint) {
                        Ok(key) => key,
                        Err(e) => {
                            done.push(Finished {
                                waiter: queued.waiter,
                                result: Some((
                                    Outcome::Failed(format!("cannot connect: {e}")),
                                    Duration::ZERO,
                                )),
                            });
                            continue;
                        }
                    }
                }
            };
            self.send(registry, key, queued.call, queued.waiter, done);
        }
    }

    /// Ends what waited too long: queued calls past the queue's limit (refused), calls
    /// without an answer by their deadline (failed), idle links past [`MAX_IDLE`].
    pub(super) fn sweep(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Finished>) {
        while let Some(front) = self.queue.front() {
            if front.until > now {
                break;
            }
            let queued = self.queue.pop_front().expect("the front");
            self.gauges.cm_queued.fetch_sub(1, Ordering::Relaxed);
            self.gauges.cm_refused.fetch_add(1, Ordering::Relaxed);
            done.push(Finished {
                waiter: queued.waiter,
                result: None,
            });
        }
        let late: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, link)| link.call.as_ref().is_some_and(|c| c.deadline <= now))
            .map(|(key, _)| key)
            .collect();
        for key in late {
            self.fail(registry, key, "no answer by the call's deadline", done);
        }
        let stale: Vec<usize> = self
            .idle
            .iter()
            .copied()
            .filter(|&key| now.duration_since(self.links[key].idle_since) >= MAX_IDLE)
            .collect();
        for key in stale {
            self.close(registry, key, done);
        }
    }
}

impl Link {
    /// Writes what TLS has to send and reads what arrived, until the socket is drained.
    fn exchange(&mut self) -> io::Result<()> {
        self.write_out()?;
        loop {
            let mut probe = ShortRead::new(&self.sock);
            match self.tls.read_tls(&mut probe) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {
                    let drained = probe.short;
                    self.tls.process_new_packets().map_err(io::Error::other)?;
                    self.take_plaintext()?;
                    if drained {
                        break;
                    }
                }
                // A connect still under way: its events come.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        // The handshake's answers, and a request that waited for the handshake.
        self.write_out()
    }

    fn write_out(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connect still under way says so here; its writable event comes.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn take_plaintext(&mut self) -> io::Result<()> {
        // Straight from rustls's buffer: a stack chunk in between would need wiping
        // (4 KiB of volatile writes per answer, 2 µs: more than the rest of this).
        let mut reader = self.tls.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(plain) => {
                    let n = plain.len();
                    extend_wiped(&mut self.inbuf, plain);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
