//! The API token: exchanged for the refresh token, renewed in the background at half its
//! lifetime, fetched again once when CipherTrust refuses it (see the module docs of
//! `ciphertrust`).

use std::borrow::Cow;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::stats::CmRoute;
use super::transport::{
    Answer, Bearer, CALL_BUDGET, Call, MAX_ERROR_TEXT, Method, TOKEN_ANSWER_LIMIT, Transport,
    json_body, truncate,
};
use crate::keystore::KeyStoreError;
use crate::sync::lock;

/// First-token back-off: from 1 s, doubling, up to 30 s.
pub(super) const FIRST_TOKEN_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const MAX_FIRST_TOKEN_BACKOFF: Duration = Duration::from_secs(30);

/// How often callers waiting for a first token may trigger a token request.
pub(super) const MIN_DEMANDED_ATTEMPT_SPACING: Duration = Duration::from_secs(1);

/// The refresh token and the API token made from it.
pub(super) struct Tokens {
    pub(super) refresh_token: Zeroizing<String>,
    pub(super) domain: String,
    /// Pause after a failed renewal.
    pub(super) retry: Duration,
    pub(super) state: Mutex<TokenState>,
    /// Signals changes of `state`: a token request ended, a caller wants a token, the store
    /// closed. The renewal thread and callers waiting for a token request wait on it.
    pub(super) event: Condvar,
}

pub(super) struct TokenState {
    pub(super) bearer: Option<Bearer>,
    /// Counts tokens obtained, so that a caller can tell whether the token it saw rejected
    /// has been replaced already.
    pub(super) generation: u64,
    /// Why the latest token request failed; cleared by the next success.
    pub(super) problem: Option<AuthFailure>,
    /// When the renewal thread should request a token next.
    pub(super) next_attempt: Instant,
    /// The next pause while no token was ever obtained.
    pub(super) backoff: Duration,
    pub(super) last_attempt: Option<Instant>,
    /// A token request is in flight.
    pub(super) requesting: bool,
    /// Token requests completed, to tell a waiter that the one it waited for is over.
    pub(super) attempts: u64,
    /// A caller found no token since the last attempt and wants one.
    pub(super) wanted: bool,
    pub(super) closed: bool,
}

/// Why no token could be obtained.
#[derive(Debug, Clone)]
pub(super) enum AuthFailure {
    /// CipherTrust could not be reached or answered 5xx: try again later.
    Unavailable(String),
    /// CipherTrust answered, but refused the refresh token or gave an unusable answer:
    /// waiting will not help, the configuration must change.
    Refused(String),
}

impl AuthFailure {
    pub(super) fn message(&self) -> &str {
        match self {
            Self::Unavailable(msg) | Self::Refused(msg) => msg,
        }
    }

    pub(super) fn to_keystore_error(&self) -> KeyStoreError {
        match self {
            Self::Unavailable(msg) => KeyStoreError::Unreachable(msg.clone()),
            Self::Refused(msg) => KeyStoreError::Other(msg.clone()),
        }
    }
}

impl Tokens {
    /// A store's tokens before the first token request.
    pub(super) fn new(refresh_token: Zeroizing<String>, domain: String, retry: Duration) -> Tokens {
        Tokens {
            refresh_token,
            domain,
            retry,
            state: Mutex::new(TokenState {
                bearer: None,
                generation: 0,
                problem: None,
                next_attempt: Instant::now(),
                backoff: FIRST_TOKEN_BACKOFF,
                last_attempt: None,
                requesting: false,
                attempts: 0,
                wanted: false,
                closed: false,
            }),
            event: Condvar::new(),
        }
    }

    /// The token to use now, if there is one; never waits (calls made on event loops).
    pub(super) fn peek(&self) -> Option<Bearer> {
        lock(&self.state).bearer.clone()
    }

    /// The token to use now, or why there is none.
    pub(super) fn current(&self, transport: &Transport) -> Result<(Bearer, u64), KeyStoreError> {
        let mut state = lock(&self.state);
        if let Some(bearer) = &state.bearer {
            return Ok((Arc::clone(bearer), state.generation));
        }
        state.wanted = true;
        self.event.notify_all();
        Err(match &state.problem {
            Some(AuthFailure::Refused(msg)) => KeyStoreError::Other(msg.clone()),
            Some(AuthFailure::Unavailable(msg)) => KeyStoreError::Unreachable(format!(
                "no API token from CipherTrust Manager yet ({msg})"
            )),
            None => KeyStoreError::Unreachable(format!(
                "no API token from CipherTrust Manager at {} yet; still trying",
                transport.endpoint
            )),
        })
    }

    /// Requests a new API token and records the outcome. With `seen`, the generation of a
    /// token found wanting: if it has been replaced meanwhile, the replacement is returned
    /// without another request.
    ///
    /// One token request at a time: a caller arriving while one is in flight waits for
    /// it (until its own deadline) and shares its outcome, so a burst of 401s makes one
    /// request.
    pub(super) fn renew(
        &self,
        transport: &Transport,
        seen: Option<u64>,
        deadline: Instant,
    ) -> Result<(Bearer, u64), AuthFailure> {
        let mut state = lock(&self.state);
        let mut waited_for = None;
        loop {
            if let (Some(seen), Some(bearer)) = (seen, &state.bearer) {
                if state.generation != seen {
                    return Ok((Arc::clone(bearer), state.generation));
                }
            }
            if waited_for.is_some_and(|attempts| attempts != state.attempts) {
                // The request we waited for failed; its failure is ours.
                if let Some(problem) = &state.problem {
                    return Err(problem.clone());
                }
            }
            if !state.requesting {
                break;
            }
            waited_for = Some(state.attempts);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AuthFailure::Unavailable(transport.unreachable(&format!(
                    "no API token within {} s",
                    CALL_BUDGET.as_secs()
                ))));
            }
            state = self
                .event
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.requesting = true;
        state.wanted = false;
        state.last_attempt = Some(Instant::now());
        drop(state);

        let outcome = self.request(transport, deadline);

        let now = Instant::now();
        let mut state = lock(&self.state);
        state.requesting = false;
        state.attempts += 1;
        let result = match outcome {
            Ok((bearer, lifetime)) => {
                state.bearer = Some(Arc::clone(&bearer));
                state.generation += 1;
                state.problem = None;
                state.backoff = FIRST_TOKEN_BACKOFF;
                state.next_attempt = now + lifetime / 2;
                Ok((bearer, state.generation))
            }
            Err(failure) => {
                crate::observe::ciphertrust_token_failed();
                state.problem = Some(failure.clone());
                state.next_attempt = if state.bearer.is_some() {
                    now + self.retry
                } else {
                    let pause = state.backoff;
                    state.backoff = (pause * 2).min(MAX_FIRST_TOKEN_BACKOFF);
                    now + pause
                };
                Err(failure)
            }
        };
        drop(state);
        self.event.notify_all();
        result
    }

    /// One token request (ciphertrust.md §3), with the usual retries.
    pub(super) fn request(
        &self,
        transport: &Transport,
        deadline: Instant,
    ) -> Result<(Bearer, Duration), AuthFailure> {
        let answer = self.call(transport, deadline)?;
        self.accept(transport, &answer)
    }

    /// Sends the token request; a transport failure is `Unavailable`, or `Refused` when
    /// CipherTrust's certificate is not trusted (no waiting fixes that).
    pub(super) fn call(
        &self,
        transport: &Transport,
        deadline: Instant,
    ) -> Result<Answer, AuthFailure> {
        let body = json_body(&TokenRequest {
            grant_type: "refresh_token",
            refresh_token: &self.refresh_token,
            domain: &self.domain,
        });
        let url = format!("{}/api/v1/auth/tokens", transport.endpoint);
        let call = Call {
            route: CmRoute::Token,
            method: Method::Post,
            url: &url,
            bearer: None,
            json: Some(&body),
            answer_limit: TOKEN_ANSWER_LIMIT,
            any_answer_will_do: false,
        };
        transport.send(&call, deadline).map_err(|failure| {
            let message = transport.unreachable(&failure.message);
            if failure.untrusted {
                AuthFailure::Refused(message)
            } else {
                AuthFailure::Unavailable(message)
            }
        })
    }

    /// The API token and its lifetime from a token answer: status 200, `jwt` not empty,
    /// `token_type` exactly `Bearer`, `duration` above zero (ciphertrust.md §3).
    pub(super) fn accept(
        &self,
        transport: &Transport,
        answer: &Answer,
    ) -> Result<(Bearer, Duration), AuthFailure> {
        let refused = |why: String| {
            AuthFailure::Refused(format!(
                "CipherTrust Manager at {}: {why}",
                transport.endpoint
            ))
        };
        match answer.status {
            200 => {}
            400..=499 => {
                return Err(refused(format!(
                    "the refresh token was rejected ({}); check credentials.token and credentials.domain",
                    self.explain(answer)
                )));
            }
            500.. => {
                return Err(AuthFailure::Unavailable(format!(
                    "CipherTrust Manager at {} could not issue an API token: {}",
                    transport.endpoint,
                    self.explain(answer)
                )));
            }
            _ => {
                return Err(refused(format!(
                    "unexpected answer to the token request: {}",
                    self.explain(answer)
                )));
            }
        }
        let mut token: TokenAnswer<'_> = serde_json::from_slice(&answer.body)
            .map_err(|err| refused(format!("the token answer is not the expected JSON: {err}")))?;
        let jwt = std::mem::take(&mut token.jwt);
        let bearer = Arc::new(Zeroizing::new(format!("Bearer {jwt}")));
        if let Cow::Owned(mut owned) = jwt {
            owned.zeroize();
        }
        if bearer.len() == "Bearer ".len() {
            return Err(refused(
                "the token answer does not contain an API token (jwt)".into(),
            ));
        }
        if token.token_type != "Bearer" {
            return Err(refused(format!(
                "unexpected API token type '{}' (expected 'Bearer')",
                truncate(&token.token_type, 40)
            )));
        }
        match token.duration {
            Some(seconds) if seconds > 0 => Ok((bearer, Duration::from_secs(seconds))),
            other => Err(refused(format!(
                "invalid API token lifetime {}",
                other.map_or_else(|| "(none)".to_string(), |s| s.to_string())
            ))),
        }
    }
}

impl Tokens {
    /// Replaces any token in `text` (should CipherTrust ever echo one) by a placeholder.
    pub(super) fn scrub(&self, mut text: String) -> String {
        let bearer = lock(&self.state).bearer.clone();
        let jwt = bearer
            .as_deref()
            .map(|b| b.trim_start_matches("Bearer ").to_owned())
            .map(Zeroizing::new);
        for secret in [
            Some(self.refresh_token.as_str()),
            jwt.as_deref().map(String::as_str),
        ]
        .into_iter()
        .flatten()
        {
            if secret.len() >= 8 && text.contains(secret) {
                text = text.replace(secret, "<redacted>");
            }
        }
        text
    }

    /// An error answer described without any token in it.
    pub(super) fn explain(&self, answer: &super::transport::Answer) -> String {
        truncate(&self.scrub(answer.describe()), MAX_ERROR_TEXT).into_owned()
    }
}

/// The renewal thread: renews at half the token lifetime, after failures at the retry
/// pause (or the first-token back-off), until the store is dropped.
pub(super) fn renewal_loop(transport: &Transport, tokens: &Tokens) {
    loop {
        let generation = {
            let mut state = lock(&tokens.state);
            loop {
                if state.closed {
                    return;
                }
                let now = Instant::now();
                let mut due = state.next_attempt;
                if state.wanted && state.bearer.is_none() {
                    let earliest = state
                        .last_attempt
                        .map_or(now, |at| at + MIN_DEMANDED_ATTEMPT_SPACING);
                    due = due.min(earliest);
                }
                if now >= due {
                    break state.generation;
                }
                state = tokens
                    .event
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        match tokens.renew(transport, Some(generation), Instant::now() + CALL_BUDGET) {
            Ok(_) => log::debug!(
                "CipherTrust Manager at {}: API token renewed",
                transport.endpoint
            ),
            Err(failure) => {
                let next = lock(&tokens.state)
                    .next_attempt
                    .saturating_duration_since(Instant::now());
                log::warn!(
                    "{}; trying again in {} s",
                    failure.message(),
                    next.as_secs_f32().round()
                );
            }
        }
    }
}

#[derive(Serialize)]
pub(super) struct TokenRequest<'a> {
    pub(super) grant_type: &'a str,
    pub(super) refresh_token: &'a str,
    pub(super) domain: &'a str,
}

#[derive(Deserialize)]
pub(super) struct TokenAnswer<'a> {
    #[serde(borrow, default)]
    pub(super) jwt: Cow<'a, str>,
    #[serde(default)]
    pub(super) token_type: String,
    #[serde(default)]
    pub(super) duration: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_request_body_has_the_original_field_order() {
        let body = json_body(&TokenRequest {
            grant_type: "refresh_token",
            refresh_token: "t",
            domain: "",
        });
        assert_eq!(
            &body[..],
            br#"{"grant_type":"refresh_token","refresh_token":"t","domain":""}"#
        );
    }
}
