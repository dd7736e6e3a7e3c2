//! A connection's requests: the head and body as they arrive, dispatch to the API, the
//! answer queued, and the audit record.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Awaiting, Conn, HEADER_TIMEOUT, IDLE_TIMEOUT, Next, Pending, Ready, Role, Step, Turn};
use crate::api::ctx::{Remote, Resumed};
use crate::api::{self, Routed};
use crate::http::{self, BodyFraming, ChunkError, HeadError, Request, Response};
use crate::identity::PeerIdentity;
use crate::keys::Warm;
use crate::keystore::remote::Outcome;
use crate::routes;
use crate::state::State;

impl Conn {
    pub(super) fn step(&mut self, state: &State, closing: bool, role: Role) -> io::Result<Step> {
        if let Some(ready) = self.ready.take() {
            return self.answer(state, ready, closing);
        }
        let Some(mut pending) = self.pending.take() else {
            return self.read_head(state);
        };
        let limit = pending.routed.route().max_body;
        match pending.framing {
            BodyFraming::Length(n) => {
                let n = n as usize;
                if self.inbuf.len() < n {
                    let deadline = pending.deadline;
                    self.pending = Some(pending);
                    return Ok(Step::Wait(deadline));
                }
                pending.req.body = self.inbuf[..n].to_vec();
                self.consume_input(n);
            }
            BodyFraming::Chunked => {
                let body = &mut pending.req.body;
                match http::decode_chunks(&self.inbuf, body, &mut pending.chunk_extra, limit) {
                    Ok((used, complete)) => {
                        self.consume_input(used);
                        if !complete {
                            let deadline = pending.deadline;
                            self.pending = Some(pending);
                            return Ok(Step::Wait(deadline));
                        }
                    }
                    Err(ChunkError::TooLarge) => {
                        let response = Response::error(413, "request body too large");
                        return self.refuse(&response, Some(&pending.req), pending.started);
                    }
                    Err(ChunkError::Malformed) => {
                        let response = Response::error(400, "malformed chunked request body");
                        return self.refuse(&response, Some(&pending.req), pending.started);
                    }
                    Err(ChunkError::TooMuchExtra) => {
                        let response = Response::error(
                            400,
                            &format!(
                                "chunk extensions and trailers of the request body exceed {} bytes",
                                http::MAX_CHUNK_EXTRA
                            ),
                        );
                        return self.refuse(&response, Some(&pending.req), pending.started);
                    }
                }
            }
        }
        let Pending {
            req,
            routed,
            started,
            deadline,
            ..
        } = pending;
        let mut ready = Ready {
            req,
            routed,
            started,
            deadline,
            key: None,
        };
        if role == Role::Loop && !answerable_without_waiting(state, &mut ready) {
            return self.remote_or_pool(state, ready, closing);
        }
        self.answer(state, ready, closing)
    }

    /// A request the loop cannot answer from what it holds: a call to CipherTrust the
    /// loop makes itself (generate, encrypt, decrypt with a resident key), or the pool.
    fn remote_or_pool(&mut self, state: &State, ready: Ready, closing: bool) -> io::Result<Step> {
        let live = state.live();
        let who = self.who.as_ref().unwrap_or(&PeerIdentity::Missing);
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            api::prepare_remote(
                state,
                &live,
                ready.routed,
                &ready.req,
                self.peer.ip(),
                who,
                ready.deadline,
            )
        }))
        .unwrap_or(Remote::Pool);
        match prepared {
            Remote::Pool => {
                self.ready = Some(ready);
                Ok(Step::Offload)
            }
            Remote::Answer(response) => self.respond(ready, response, closing),
            Remote::Call(job) => {
                crate::observe::metrics()
                    .active
                    .fetch_add(1, Ordering::Relaxed);
                self.awaiting = Some(Awaiting {
                    ready,
                    finish: job.finish,
                    drained: false,
                });
                Ok(Step::Remote(job.call))
            }
        }
    }

    /// The outcome of the call a request awaited (`None`: it was refused for want of
    /// room): its answer, or the request goes to the pool after all.
    pub fn resume(
        &mut self,
        state: &State,
        closing: bool,
        result: Option<(Outcome, Duration)>,
    ) -> Next {
        let Some(Awaiting {
            ready,
            finish,
            drained,
        }) = self.awaiting.take()
        else {
            return Next::Close;
        };
        crate::observe::metrics()
            .active
            .fetch_sub(1, Ordering::Relaxed);
        let resumed =
            catch_unwind(AssertUnwindSafe(|| finish(state, result))).unwrap_or_else(|_| {
                log::error!(
                    "internal error while serving {} {}",
                    ready.req.method,
                    ready.req.path
                );
                Resumed::Answer(Response::error(500, "internal server error"))
            });
        let response = match resumed {
            Resumed::Pool => {
                self.ready = Some(ready);
                return Next::Offload;
            }
            Resumed::Answer(response) => response,
        };
        let turn = match self.respond(ready, response, closing) {
            Ok(Step::Drain) => Turn::Drain,
            Ok(_) => {
                // Nothing arrived since the socket was drained: serve what is buffered
                // without the read that would only say so.
                self.drained = drained;
                return self.advance(state, closing, Role::Loop);
            }
            Err(e) => {
                log::debug!("connection from {}: {e}", self.peer);
                Turn::Close
            }
        };
        self.settle(turn)
    }

    /// Runs a complete request and queues its response.
    pub(super) fn answer(
        &mut self,
        state: &State,
        ready: Ready,
        closing: bool,
    ) -> io::Result<Step> {
        let Ready {
            req,
            routed,
            started,
            deadline,
            key,
        } = ready;
        let response = if Instant::now() >= deadline {
            // It waited for a pool worker past its deadline (the keystore hangs and every
            // worker waits for it): answer as the original's timeout does, and spare the
            // keystore a request nobody waits for any more.
            Response::error(503, "request timeout exceeded")
        } else {
            self.dispatch(state, routed, &req, key)
        };
        let ready = Ready {
            req,
            routed,
            started,
            deadline,
            key: None,
        };
        self.respond(ready, response, closing)
    }

    /// Queues the answer to a request and records it.
    fn respond(&mut self, ready: Ready, mut response: Response, closing: bool) -> io::Result<Step> {
        let Ready {
            req,
            started,
            deadline,
            ..
        } = ready;
        self.served += 1;
        if let Some(events) = response.stream.take() {
            self.queue(&response.stream_head(), Instant::now() + HEADER_TIMEOUT)?;
            self.record(Some(&req), &response, started);
            return Ok(Step::Stream(events));
        }
        let close = closing || !req.keep_alive();
        let sent = self.send(&response, close, deadline);
        self.record(Some(&req), &response, started);
        sent?;
        Ok(if close { Step::Drain } else { Step::Again })
    }

    pub(super) fn read_head(&mut self, state: &State) -> io::Result<Step> {
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
                    self.client_turn
                } else {
                    head_started
                };
                return Ok(Step::Wait(start + HEADER_TIMEOUT));
            }
            Err(e) => return self.refuse(&head_error(e), None, head_started),
        };
        self.consume_input(head_len);
        self.head_started = None;
        let framing = match req.framing() {
            Ok(framing) => framing,
            Err(e) => return self.refuse(&head_error(e), Some(&req), head_started),
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
                self.record(Some(&req), &response, head_started);
                sent?;
                return Ok(if close { Step::Drain } else { Step::Again });
            }
        };
        if framing != BodyFraming::Length(0)
            && req
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.queue(
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
            chunk_extra: 0,
            started,
        });
        Ok(Step::Again)
    }

    /// Answers a request that will not be read to its end; reading stops once the
    /// answer is out.
    pub(super) fn refuse(
        &mut self,
        response: &Response,
        req: Option<&Request>,
        started: Instant,
    ) -> io::Result<Step> {
        let deadline = Instant::now() + HEADER_TIMEOUT;
        let sent = self.send(response, true, deadline);
        self.record(req, response, started);
        sent?;
        Ok(Step::Drain)
    }

    /// Audits and counts an answered request.
    pub(super) fn record(&self, req: Option<&Request>, response: &Response, started: Instant) {
        let identity = match &self.who {
            Some(PeerIdentity::One(id)) => id.as_str(),
            _ => "",
        };
        crate::observe::record(&crate::observe::RequestRecord {
            identity,
            ip: self.peer.ip(),
            method: req.map_or("", |r| r.method.as_str()),
            path: req.map_or("", |r| r.path.as_str()),
            status: response.status,
            elapsed: started.elapsed(),
            extra: response.audit_extra,
        });
    }

    pub(super) fn dispatch(
        &self,
        state: &State,
        routed: Routed,
        req: &Request,
        key: Option<Warm>,
    ) -> Response {
        crate::observe::metrics()
            .active
            .fetch_add(1, Ordering::Relaxed);
        let _active = ActiveRequest;
        let live = state.live();
        let who = self.who.as_ref().unwrap_or(&PeerIdentity::Missing);
        let peer = self.peer.ip();
        catch_unwind(AssertUnwindSafe(|| {
            api::serve(state, &live, routed, req, peer, who, key)
        }))
        .unwrap_or_else(|_| {
            log::error!("internal error while serving {} {}", req.method, req.path);
            Response::error(500, "internal server error")
        })
    }

    /// Queues a response; `close` ends the TLS session after it.
    pub(super) fn send(
        &mut self,
        response: &Response,
        close: bool,
        deadline: Instant,
    ) -> io::Result<()> {
        // Answers carry data keys and plaintexts.
        self.queue(&Zeroizing::new(response.to_bytes(close)), deadline)?;
        if close {
            self.tls.send_close_notify();
        }
        Ok(())
    }
}

/// Whether a complete request can be answered without waiting (on an event loop). For
/// a route that needs a master key, takes the key from the cache into `ready`, so that
/// the handler cannot find it gone (expired, deleted) and load it on the loop: a key kes
/// holds, or a resident key whose intermediate key for this request is kept
/// (`api::warm_key`; one use of it taken). Anything else goes to the pool.
fn answerable_without_waiting(state: &State, ready: &mut Ready) -> bool {
    match ready.routed.route().exec {
        routes::Exec::Inline => true,
        routes::Exec::Pool => false,
        routes::Exec::Key => {
            let (route, name) = (ready.routed.route(), ready.routed.resource(&ready.req));
            ready.key = api::warm_key(state, route, name, &ready.req.body);
            ready.key.is_some()
        }
    }
}

/// The answer to a refused head.
fn head_error(e: HeadError) -> Response {
    match e {
        HeadError::Malformed(msg) => Response::error(400, &msg),
        HeadError::TooLarge => Response::error(431, "request header fields too large"),
        HeadError::NotImplemented(msg) => Response::error(501, &msg),
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

fn timeout_of(state: &State, routed: &Routed) -> Duration {
    state.live().route_settings[routed.route]
        .timeout
        .unwrap_or(Duration::from_secs(3600))
}
