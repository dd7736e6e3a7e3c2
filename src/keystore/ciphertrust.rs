//! The Thales CipherTrust Manager keystore (formerly Gemalto KeySecure): config keys
//! `keystore.gemalto.keysecure` and `keystore.ciphertrust`.
//!
//! Every KES key is one CipherTrust *secret* of type `seed` whose `material` is the KES stored
//! value, so stores written by the Go KES stay readable and vice versa (ciphertrust.md).
//!
//! # Authentication
//!
//! The configured *refresh token* is exchanged for short-lived API tokens (JWTs, 5 minutes
//! by default) at `POST /api/v1/auth/tokens`; data calls carry `Authorization: Bearer <jwt>`.
//! A background thread renews the API token at half its lifetime and, after a failed
//! renewal, tries again after `retry`. A data call that CipherTrust answers with 401 (the
//! token expired or was revoked early) fetches a new token once and repeats the call, so
//! clock trouble or a missed renewal costs one round trip instead of a failed request.
//!
//! # Startup without the network
//!
//! Appliances can boot before their network is up. So [`CipherTrust::connect`] does not fail
//! when CipherTrust Manager is unreachable: it returns a store whose operations fail with
//! [`KeyStoreError::Unreachable`] until the background thread has obtained a first token
//! (trying after 1 s, then doubling up to 30 s; a caller waiting for a token brings the next
//! attempt forward to at most one per second). A status check that reaches CipherTrust
//! while there is no token requests one itself, so the store reports itself reachable
//! only once it can serve keys. A refresh token that CipherTrust *rejects*
//! (a 4xx answer) is a configuration error: `connect` returns it if CipherTrust answered at
//! start, and [`KeyStore::status`] reports it if it happens later.
//!
//! # Time limits and retries
//!
//! Every operation — including retries, a re-authentication and all pages of a listing —
//! has [`CALL_BUDGET`] in total, comfortably below the server's 15 s route timeout. Within
//! it, a call is repeated up to twice after a timeout, a dropped connection or a 5xx
//! answer, after a short random pause, as the original does (ciphertrust.md §2). A refused
//! connection is not repeated: the store reports `Unreachable` at once.
//!
//! # Secrets
//!
//! The refresh token, API tokens and key material live in zeroizing buffers, never appear
//! in `Debug` output or error messages (error texts from CipherTrust are scrubbed of both
//! tokens before they are used), and are never logged. Copies that the HTTP and TLS stacks
//! make internally (header values, socket buffers) are outside our control.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::sync::lock;
use std::thread;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use zeroize::{Zeroize, Zeroizing};

use super::{KeyStore, KeyStoreError, ListPage, StoredValue, page_of};

/// Pause between failed token renewals when the configuration does not say (as the original).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// Time limit of one keystore operation, all retries included. Well below the server's
/// 15 s route timeout, so that a request that waited for another's load of the same key
/// (see `crate::cache`) still ends in time, with a proper error.
pub const CALL_BUDGET: Duration = Duration::from_secs(10);

/// TCP connect timeout, as the original's dialer (never more than what is left of the
/// call's budget).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Repetitions of a call after a temporary failure (ciphertrust.md §2).
const MAX_RETRIES: u32 = 2;

/// Secrets per list request, as the original.
const LIST_PAGE_SIZE: usize = 200;

/// Answer size limits (ciphertrust.md §3, §5, §7, §8).
const TOKEN_ANSWER_LIMIT: u64 = 1 << 20;
const EXPORT_ANSWER_LIMIT: u64 = 2 << 20;
const LIST_ANSWER_LIMIT: u64 = 32 << 20;
const OTHER_ANSWER_LIMIT: u64 = 1 << 20;

/// First-token back-off: from 1 s, doubling, up to 30 s.
const FIRST_TOKEN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_FIRST_TOKEN_BACKOFF: Duration = Duration::from_secs(30);

/// How often callers waiting for a first token may trigger a token request.
const MIN_DEMANDED_ATTEMPT_SPACING: Duration = Duration::from_secs(1);

/// Longest error text taken from a CipherTrust answer.
const MAX_ERROR_TEXT: usize = 300;

/// Where CipherTrust Manager is and how to log in (config.md §5.2).
#[derive(Clone)]
pub struct CipherTrustConfig {
    /// Base URL, e.g. `https://ctm.example.com`; a trailing `/` is ignored.
    pub endpoint: String,
    /// The CipherTrust refresh token that API tokens are minted from.
    pub refresh_token: Zeroizing<String>,
    /// The CipherTrust domain; empty means the root domain.
    pub domain: String,
    /// Pause after a failed token renewal; zero means [`DEFAULT_RETRY`].
    pub retry: Duration,
    /// A PEM file, or a directory of PEM files, holding the CA certificates that issued
    /// CipherTrust's certificate. When set, only these are trusted (not the system roots).
    pub ca: Option<PathBuf>,
    /// Accept any server certificate. Only for tests and emergencies: anyone on the network
    /// path can then read the tokens and every key.
    pub insecure_skip_verify: bool,
}

impl CipherTrustConfig {
    /// A configuration for the root domain with the default retry pause, verifying the
    /// server against the system roots.
    pub fn new(endpoint: impl Into<String>, refresh_token: Zeroizing<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            refresh_token,
            domain: String::new(),
            retry: DEFAULT_RETRY,
            ca: None,
            insecure_skip_verify: false,
        }
    }
}

impl fmt::Debug for CipherTrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherTrustConfig")
            .field("endpoint", &self.endpoint)
            .field("refresh_token", &"<redacted>")
            .field("domain", &self.domain)
            .field("retry", &self.retry)
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// A keystore backed by Thales CipherTrust Manager.
pub struct CipherTrust {
    shared: Arc<Shared>,
}

impl fmt::Debug for CipherTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherTrust")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

/// What the store and its renewal thread share.
struct Shared {
    endpoint: String,
    agent: ureq::Agent,
    refresh_token: Zeroizing<String>,
    domain: String,
    retry: Duration,
    token: Mutex<TokenState>,
    /// Signals changes of `token`: a token request ended, a caller wants a token, the store
    /// closed. The renewal thread and callers waiting for a token request wait on it.
    token_event: Condvar,
}

/// The `Authorization` header value, `Bearer <jwt>`. Shared, not copied, between callers;
/// wiped when the last user drops it.
type Bearer = Arc<Zeroizing<String>>;

struct TokenState {
    bearer: Option<Bearer>,
    /// Counts tokens obtained, so that a caller can tell whether the token it saw rejected
    /// has been replaced already.
    generation: u64,
    /// Why the latest token request failed; cleared by the next success.
    problem: Option<AuthFailure>,
    /// When the renewal thread should request a token next.
    next_attempt: Instant,
    /// The next pause while no token was ever obtained.
    backoff: Duration,
    last_attempt: Option<Instant>,
    /// A token request is in flight.
    requesting: bool,
    /// Token requests completed, to tell a waiter that the one it waited for is over.
    attempts: u64,
    /// A caller found no token since the last attempt and wants one.
    wanted: bool,
    closed: bool,
}

/// Why no token could be obtained.
#[derive(Debug, Clone)]
enum AuthFailure {
    /// CipherTrust could not be reached or answered 5xx: try again later.
    Unavailable(String),
    /// CipherTrust answered, but refused the refresh token or gave an unusable answer:
    /// waiting will not help, the configuration must change.
    Refused(String),
}

impl AuthFailure {
    fn message(&self) -> &str {
        match self {
            Self::Unavailable(msg) | Self::Refused(msg) => msg,
        }
    }

    fn to_keystore_error(&self) -> KeyStoreError {
        match self {
            Self::Unavailable(msg) => KeyStoreError::Unreachable(msg.clone()),
            Self::Refused(msg) => KeyStoreError::Other(msg.clone()),
        }
    }
}

impl CipherTrust {
    /// Builds the store and requests a first API token.
    ///
    /// Fails on configuration errors (endpoint, CA certificates) and when CipherTrust
    /// answers but rejects the refresh token. Does **not** fail when CipherTrust cannot be
    /// reached: the store then keeps trying in the background (see the module docs).
    pub fn connect(cfg: CipherTrustConfig) -> Result<CipherTrust, KeyStoreError> {
        let endpoint = normalize_endpoint(&cfg.endpoint)?;
        if cfg.insecure_skip_verify {
            log::warn!(
                "CipherTrust Manager at {endpoint}: TLS certificate verification is DISABLED \
                 (insecure_skip_verify); anyone on the network path can read the API tokens \
                 and every key. Configure tls.ca instead."
            );
        }
        let agent = build_agent(&cfg)?;
        let now = Instant::now();
        let shared = Arc::new(Shared {
            endpoint,
            agent,
            refresh_token: cfg.refresh_token,
            domain: cfg.domain,
            retry: if cfg.retry.is_zero() {
                DEFAULT_RETRY
            } else {
                cfg.retry
            },
            token: Mutex::new(TokenState {
                bearer: None,
                generation: 0,
                problem: None,
                next_attempt: now,
                backoff: FIRST_TOKEN_BACKOFF,
                last_attempt: None,
                requesting: false,
                attempts: 0,
                wanted: false,
                closed: false,
            }),
            token_event: Condvar::new(),
        });

        match shared.renew(None, Instant::now() + CALL_BUDGET) {
            Ok(_) => log::info!("CipherTrust Manager at {}: authenticated", shared.endpoint),
            Err(AuthFailure::Refused(msg)) => return Err(KeyStoreError::Other(msg)),
            Err(AuthFailure::Unavailable(msg)) => log::warn!(
                "{msg}; starting anyway: key operations fail until a token is obtained, \
                 which is retried in the background"
            ),
        }

        let for_thread = Arc::clone(&shared);
        thread::Builder::new()
            .name("kes-ctm-token".into())
            .spawn(move || renewal_loop(&for_thread))
            .map_err(|err| {
                KeyStoreError::Other(format!(
                    "cannot start the CipherTrust token renewal thread: {err}"
                ))
            })?;
        Ok(CipherTrust { shared })
    }

    /// Reads secret `name` (ciphertrust.md §5) within `deadline`.
    fn export(&self, name: &str, deadline: Instant) -> Result<StoredValue, KeyStoreError> {
        let url = self.secret_url(name, "/export?type=name");
        let answer =
            self.shared
                .authorized(Method::Post, &url, None, EXPORT_ANSWER_LIMIT, deadline)?;
        match answer.status {
            200 => {
                let unusable = |why: String| {
                    KeyStoreError::Other(format!(
                        "CipherTrust Manager sent an unusable answer for key '{name}': {why}"
                    ))
                };
                let mut export: ExportedSecret<'_> = serde_json::from_slice(&answer.body)
                    .map_err(|err| unusable(err.to_string()))?;
                let material = export
                    .material
                    .take()
                    .ok_or_else(|| unusable("no material".into()))?;
                let value = Zeroizing::new(material.as_bytes().to_vec());
                if let Cow::Owned(mut owned) = material {
                    owned.zeroize();
                }
                Ok(value)
            }
            404 => Err(KeyStoreError::NotFound),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not export key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    fn secret_url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/api/v1/vault/secrets/{}{suffix}",
            self.shared.endpoint,
            encode_path_segment(name)
        )
    }
}

impl Drop for CipherTrust {
    fn drop(&mut self) {
        // The renewal thread sees this at its next wake-up (at once unless it is inside a
        // token request) and ends; it is not joined, so dropping never blocks.
        lock(&self.shared.token).closed = true;
        self.shared.token_event.notify_all();
    }
}

impl KeyStore for CipherTrust {
    fn describe(&self) -> String {
        format!("ciphertrust:{}", self.shared.endpoint)
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let material = std::str::from_utf8(value).map_err(|_| {
            KeyStoreError::Other(format!(
                "cannot store key '{name}' in CipherTrust Manager: secrets hold text, but the key value is not UTF-8"
            ))
        })?;
        let body = json_body(&CreateSecret {
            data_type: "seed",
            material,
            name,
        });
        let deadline = Instant::now() + CALL_BUDGET;
        let url = format!("{}/api/v1/vault/secrets", self.shared.endpoint);
        let answer = self.shared.authorized(
            Method::Post,
            &url,
            Some(&body),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => Ok(()),
            409 if answer.may_have_been_applied => {
                // An earlier attempt timed out or failed with 5xx, and may have created the
                // secret before it did. If the stored value is ours, the create succeeded.
                match self.export(name, deadline) {
                    Ok(stored) if stored.as_slice() == value => Ok(()),
                    _ => Err(KeyStoreError::Exists),
                }
            }
            409 => Err(KeyStoreError::Exists),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not create key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError> {
        self.export(name, Instant::now() + CALL_BUDGET)
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let url = self.secret_url(name, "?type=name");
        let answer =
            self.shared
                .authorized(Method::Delete, &url, None, OTHER_ANSWER_LIMIT, deadline)?;
        match answer.status {
            // CipherTrust also answers 404 when the caller may not see the secret, so a 404
            // cannot be told from "already gone"; like the original, count it as deleted.
            200 | 204 | 404 => Ok(()),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not delete key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let mut names = Vec::new();
        let mut skip: u64 = 0;
        loop {
            let url = format!(
                "{}/api/v1/vault/secrets?limit={LIST_PAGE_SIZE}&skip={skip}",
                self.shared.endpoint
            );
            let answer =
                self.shared
                    .authorized(Method::Get, &url, None, LIST_ANSWER_LIMIT, deadline)?;
            if answer.status != 200 {
                return Err(KeyStoreError::Other(format!(
                    "CipherTrust Manager could not list keys: {}",
                    self.shared.explain(&answer)
                )));
            }
            let page: SecretPage = serde_json::from_slice(&answer.body).map_err(|err| {
                KeyStoreError::Other(format!(
                    "CipherTrust Manager sent an unusable list of secrets: {err}"
                ))
            })?;
            if page.skip != skip {
                return Err(KeyStoreError::Other(format!(
                    "CipherTrust Manager's listing is out of step: asked to skip {skip} secrets, it skipped {}; try again",
                    page.skip
                )));
            }
            let received = page.resources.len() as u64;
            names.extend(
                page.resources
                    .into_iter()
                    .map(|r| r.name)
                    .filter(|name| !name.is_empty()),
            );
            skip += received;
            if skip >= page.total {
                break;
            }
            if received == 0 {
                // Asking again would get the same empty page forever.
                return Err(KeyStoreError::Other(format!(
                    "CipherTrust Manager returned an empty page after {skip} of {} secrets; the listing cannot advance, try again",
                    page.total
                )));
            }
        }
        // Secrets created or deleted while we paged can shift a name onto two pages.
        names.sort_unstable();
        names.dedup();
        Ok(page_of(&names, prefix, start, limit))
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let tokenless = {
            let state = lock(&self.shared.token);
            if let Some(AuthFailure::Refused(msg)) = &state.problem {
                return Err(KeyStoreError::Other(msg.clone()));
            }
            state.bearer.is_none().then_some(state.generation)
        };
        let started = Instant::now();
        let probe = Call {
            method: Method::Get,
            url: &self.shared.endpoint,
            bearer: None,
            json: None,
            answer_limit: OTHER_ANSWER_LIMIT,
            any_answer_will_do: true,
        };
        if let Err(failure) = self.shared.send(&probe, started + CALL_BUDGET) {
            return Err(KeyStoreError::Unreachable(
                self.shared.unreachable(&failure.message),
            ));
        }
        if let Some(generation) = tokenless {
            // CipherTrust answers, but no API token was obtained yet (it was down when kes
            // started): get one now, so that "ready" means key operations work, and a
            // refused refresh token shows here rather than at the next key request.
            self.shared
                .renew(Some(generation), started + CALL_BUDGET)
                .map_err(|failure| failure.to_keystore_error())?;
        }
        Ok(started.elapsed())
    }
}

impl Shared {
    /// Makes a data call with the current API token; if CipherTrust answers 401, gets a
    /// new token once and repeats the call.
    fn authorized(
        &self,
        method: Method,
        url: &str,
        json: Option<&[u8]>,
        answer_limit: u64,
        deadline: Instant,
    ) -> Result<Answer, KeyStoreError> {
        let (bearer, generation) = self.current_token()?;
        let mut call = Call {
            method,
            url,
            bearer: Some(&bearer),
            json,
            answer_limit,
            any_answer_will_do: false,
        };
        let answer = self
            .send(&call, deadline)
            .map_err(|failure| self.transport_error(&failure))?;
        if answer.status != 401 {
            return Ok(answer);
        }
        log::debug!(
            "CipherTrust Manager at {}: API token refused (401), getting a new one",
            self.endpoint
        );
        let (bearer, _) = self
            .renew(Some(generation), deadline)
            .map_err(|failure| failure.to_keystore_error())?;
        call.bearer = Some(&bearer);
        self.send(&call, deadline)
            .map_err(|failure| self.transport_error(&failure))
    }

    /// A failed exchange as a keystore error: `Unreachable`, unless the server's
    /// certificate is not trusted, which no waiting will fix.
    fn transport_error(&self, failure: &TransportFailure) -> KeyStoreError {
        let message = self.unreachable(&failure.message);
        if failure.untrusted {
            KeyStoreError::Other(message)
        } else {
            KeyStoreError::Unreachable(message)
        }
    }

    /// The token to use now, or why there is none.
    fn current_token(&self) -> Result<(Bearer, u64), KeyStoreError> {
        let mut state = lock(&self.token);
        if let Some(bearer) = &state.bearer {
            return Ok((Arc::clone(bearer), state.generation));
        }
        state.wanted = true;
        self.token_event.notify_all();
        Err(match &state.problem {
            Some(AuthFailure::Refused(msg)) => KeyStoreError::Other(msg.clone()),
            Some(AuthFailure::Unavailable(msg)) => KeyStoreError::Unreachable(format!(
                "no API token from CipherTrust Manager yet ({msg})"
            )),
            None => KeyStoreError::Unreachable(format!(
                "no API token from CipherTrust Manager at {} yet; still trying",
                self.endpoint
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
    fn renew(&self, seen: Option<u64>, deadline: Instant) -> Result<(Bearer, u64), AuthFailure> {
        let mut state = lock(&self.token);
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
                return Err(AuthFailure::Unavailable(self.unreachable(&format!(
                    "no API token within {} s",
                    CALL_BUDGET.as_secs()
                ))));
            }
            state = self
                .token_event
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.requesting = true;
        state.wanted = false;
        state.last_attempt = Some(Instant::now());
        drop(state);

        let outcome = self.request_token(deadline);

        let now = Instant::now();
        let mut state = lock(&self.token);
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
        self.token_event.notify_all();
        result
    }

    /// One token request (ciphertrust.md §3), with the usual retries.
    fn request_token(&self, deadline: Instant) -> Result<(Bearer, Duration), AuthFailure> {
        let body = json_body(&TokenRequest {
            grant_type: "refresh_token",
            refresh_token: &self.refresh_token,
            domain: &self.domain,
        });
        let url = format!("{}/api/v1/auth/tokens", self.endpoint);
        let call = Call {
            method: Method::Post,
            url: &url,
            bearer: None,
            json: Some(&body),
            answer_limit: TOKEN_ANSWER_LIMIT,
            any_answer_will_do: false,
        };
        let answer = self.send(&call, deadline).map_err(|failure| {
            let message = self.unreachable(&failure.message);
            if failure.untrusted {
                AuthFailure::Refused(message)
            } else {
                AuthFailure::Unavailable(message)
            }
        })?;
        let refused = |why: String| {
            AuthFailure::Refused(format!("CipherTrust Manager at {}: {why}", self.endpoint))
        };
        match answer.status {
            200 => {}
            400..=499 => {
                return Err(refused(format!(
                    "the refresh token was rejected ({}); check credentials.token and credentials.domain",
                    self.explain(&answer)
                )));
            }
            500.. => {
                return Err(AuthFailure::Unavailable(format!(
                    "CipherTrust Manager at {} could not issue an API token: {}",
                    self.endpoint,
                    self.explain(&answer)
                )));
            }
            _ => {
                return Err(refused(format!(
                    "unexpected answer to the token request: {}",
                    self.explain(&answer)
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

    /// Sends `call`, repeating it after temporary failures (ciphertrust.md §2) while the
    /// deadline allows.
    fn send(&self, call: &Call<'_>, deadline: Instant) -> Result<Answer, TransportFailure> {
        let mut may_have_been_applied = false;
        let mut attempt = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TransportFailure::new(
                    format!("no answer within {} s", CALL_BUDGET.as_secs()),
                    true,
                ));
            }
            let last_chance = attempt == MAX_RETRIES;
            let failure = match self.attempt(call, remaining) {
                Ok(mut answer) if answer.status < 500 || last_chance => {
                    answer.may_have_been_applied = may_have_been_applied;
                    return Ok(answer);
                }
                Ok(answer) => Ok(answer),
                Err(failure) if failure.temporary && !last_chance => Err(failure),
                Err(failure) if attempt == 0 => return Err(failure),
                Err(failure) => return Err(failure.after_retries()),
            };
            // A 5xx, a timeout or a dropped connection: CipherTrust may have acted on the
            // request anyway.
            may_have_been_applied = true;
            let pause = retry_pause();
            if Instant::now() + pause >= deadline {
                return match failure {
                    Ok(mut answer) => {
                        answer.may_have_been_applied = true;
                        Ok(answer)
                    }
                    Err(failure) => Err(failure.after_retries()),
                };
            }
            thread::sleep(pause);
            attempt += 1;
        }
    }

    /// One HTTP exchange, its answer read completely.
    fn attempt(&self, call: &Call<'_>, remaining: Duration) -> Result<Answer, TransportFailure> {
        fn authorize<B>(
            request: ureq::RequestBuilder<B>,
            bearer: Option<&Bearer>,
        ) -> ureq::RequestBuilder<B> {
            match bearer {
                Some(bearer) => request.header("Authorization", bearer.as_str()),
                None => request,
            }
        }
        let connect = remaining.min(CONNECT_TIMEOUT);
        let sent = match call.method {
            Method::Get => authorize(self.agent.get(call.url), call.bearer)
                .config()
                .timeout_global(Some(remaining))
                .timeout_connect(Some(connect))
                .build()
                .call(),
            Method::Delete => authorize(self.agent.delete(call.url), call.bearer)
                .config()
                .timeout_global(Some(remaining))
                .timeout_connect(Some(connect))
                .build()
                .call(),
            Method::Post => {
                let request = authorize(self.agent.post(call.url), call.bearer)
                    .config()
                    .timeout_global(Some(remaining))
                    .timeout_connect(Some(connect))
                    .build();
                match call.json {
                    Some(json) => request
                        .header("Content-Type", "application/json")
                        .send(json),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = sent.map_err(TransportFailure::from_ureq)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match read_answer(response.body_mut(), call.answer_limit) {
            Ok(body) => body,
            Err(_) if call.any_answer_will_do => Zeroizing::new(Vec::new()),
            Err(err) => return Err(TransportFailure::from_io(&err)),
        };
        Ok(Answer {
            status,
            content_type,
            body,
            may_have_been_applied: false,
        })
    }

    /// Describes an error answer (ciphertrust.md §8), without any token in it.
    fn explain(&self, answer: &Answer) -> String {
        let status = ureq::http::StatusCode::from_u16(answer.status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .map_or_else(
                || answer.status.to_string(),
                |reason| format!("{} {reason}", answer.status),
            );
        let text = if answer
            .content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            match serde_json::from_slice::<ErrorAnswer>(&answer.body) {
                Ok(ErrorAnswer { code, code_desc }) => {
                    let desc = code_desc.unwrap_or_default();
                    match code {
                        Some(code) => format!("{status}: {} ({code})", desc.trim()),
                        None => format!("{status}: {}", desc.trim()),
                    }
                }
                Err(err) => format!("{status}: failed to parse server response: {err}"),
            }
        } else {
            let body = String::from_utf8_lossy(&answer.body);
            match body.trim() {
                "" => status,
                text => format!("{status}: {text}"),
            }
        };
        truncate(&self.scrub(text), MAX_ERROR_TEXT).into_owned()
    }

    /// Replaces any token in `text` (should CipherTrust ever echo one) by a placeholder.
    fn scrub(&self, mut text: String) -> String {
        let bearer = lock(&self.token).bearer.clone();
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

    fn unreachable(&self, msg: &str) -> String {
        format!("CipherTrust Manager at {}: {msg}", self.endpoint)
    }
}

/// The renewal thread: renews at half the token lifetime, after failures at the retry
/// pause (or the first-token back-off), until the store is dropped.
fn renewal_loop(shared: &Shared) {
    loop {
        let generation = {
            let mut state = lock(&shared.token);
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
                state = shared
                    .token_event
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        match shared.renew(Some(generation), Instant::now() + CALL_BUDGET) {
            Ok(_) => log::debug!(
                "CipherTrust Manager at {}: API token renewed",
                shared.endpoint
            ),
            Err(failure) => {
                let next = lock(&shared.token)
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

#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Post,
    Delete,
}

/// One request to CipherTrust.
struct Call<'a> {
    method: Method,
    url: &'a str,
    bearer: Option<&'a Bearer>,
    json: Option<&'a [u8]>,
    answer_limit: u64,
    /// The status probe: any answer counts, even one whose body cannot be read.
    any_answer_will_do: bool,
}

/// CipherTrust's answer, body read (it may hold key material, so it is wiped on drop).
struct Answer {
    status: u16,
    content_type: String,
    body: Zeroizing<Vec<u8>>,
    /// An earlier attempt of the same call failed in a way that does not rule out that
    /// CipherTrust carried it out.
    may_have_been_applied: bool,
}

struct TransportFailure {
    message: String,
    /// Worth repeating: a timeout or a connection dropped mid-way (ciphertrust.md §2).
    temporary: bool,
    /// The server's certificate is not trusted: a configuration problem, not an outage.
    untrusted: bool,
}

impl TransportFailure {
    fn new(message: String, temporary: bool) -> Self {
        Self {
            message,
            temporary,
            untrusted: false,
        }
    }

    fn after_retries(mut self) -> Self {
        self.message = format!("temporary network error: {}", self.message);
        self
    }

    fn from_ureq(err: ureq::Error) -> Self {
        match err {
            ureq::Error::Io(io) => Self::from_io(&io),
            ureq::Error::Timeout(which) => Self::new(format!("timed out ({which})"), true),
            ureq::Error::HostNotFound => Self::new("host name not found".into(), false),
            ureq::Error::ConnectionFailed => Self::new("connection failed".into(), false),
            ureq::Error::Rustls(tls) => {
                use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
                let hint = match &tls {
                    rustls::Error::InvalidCertificate(
                        NotValidForName | NotValidForNameContext { .. },
                    ) => {
                        "the certificate must name the endpoint's host in its Subject Alternative \
                         Names (a Common Name alone is not accepted); issue CipherTrust Manager a \
                         certificate with that name or address, or use an endpoint it names"
                    }
                    _ => "check tls.ca (the CA that issued CipherTrust Manager's certificate)",
                };
                Self {
                    untrusted: matches!(tls, rustls::Error::InvalidCertificate(_)),
                    ..Self::new(format!("TLS failed: {tls}; {hint}"), false)
                }
            }
            ureq::Error::Tls(tls) => Self::new(format!("TLS failed: {tls}"), false),
            other => Self::new(other.to_string(), false),
        }
    }

    fn from_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        // rustls reports handshake failures as I/O errors wrapping its own error.
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Self::from_ureq(ureq::Error::Rustls(tls.clone()));
        }
        let temporary = matches!(
            err.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
        );
        Self::new(err.to_string(), temporary)
    }
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    grant_type: &'a str,
    refresh_token: &'a str,
    domain: &'a str,
}

#[derive(Deserialize)]
struct TokenAnswer<'a> {
    #[serde(borrow, default)]
    jwt: Cow<'a, str>,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    duration: Option<u64>,
}

#[derive(Serialize)]
struct CreateSecret<'a> {
    #[serde(rename = "dataType")]
    data_type: &'a str,
    material: &'a str,
    name: &'a str,
}

#[derive(Deserialize)]
struct ExportedSecret<'a> {
    #[serde(borrow, default)]
    material: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SecretPage {
    #[serde(default)]
    skip: u64,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    resources: Vec<SecretName>,
}

#[derive(Deserialize)]
struct SecretName {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "codeDesc")]
    code_desc: Option<String>,
}

/// Serializes a request body into a wiped buffer, sized up front so that growing it
/// never leaves copies of the secrets inside behind.
fn json_body<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut probe = Zeroizing::new(Vec::new());
    let mut counter = CountingWriter(0);
    // Serializing these plain structs cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    probe.reserve_exact(counter.0);
    let _ = serde_json::to_writer(&mut *probe, value);
    probe
}

struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads an answer body of at most `limit` bytes into a wiped buffer; the buffer is grown
/// by hand so that no unwiped copy of key material is left behind by a reallocation.
fn read_answer(body: &mut ureq::Body, limit: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let expected = body.content_length().unwrap_or(0).min(limit) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(expected.max(512)));
    let mut reader = body.with_config().limit(limit).reader();
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = match reader.read(&mut chunk[..]) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if out.len() + n > out.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((out.capacity() * 2).max(out.len() + n)));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Checks the endpoint and removes one trailing `/` (the original appends `/api/v1/…`
/// verbatim and breaks on `https://host/`).
fn normalize_endpoint(endpoint: &str) -> Result<String, KeyStoreError> {
    let trimmed = endpoint.trim();
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let lower = trimmed.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            if lower.starts_with("http://") {
                log::warn!(
                    "CipherTrust Manager endpoint {trimmed} is plain HTTP: tokens and keys cross the network unencrypted"
                );
            }
            Ok(trimmed.to_owned())
        }
        _ => Err(KeyStoreError::Other(format!(
            "invalid CipherTrust Manager endpoint '{endpoint}': expected a URL such as https://ctm.example.com"
        ))),
    }
}

/// The HTTP client: TLS with the configured trust, no redirects (an unexpected redirect
/// must not carry the token elsewhere), statuses handled by us.
fn build_agent(cfg: &CipherTrustConfig) -> Result<ureq::Agent, KeyStoreError> {
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if cfg.insecure_skip_verify {
        tls = tls.disable_verification(true);
    } else {
        let roots = match &cfg.ca {
            Some(path) => load_ca(path)?,
            None => load_system_roots()?,
        };
        let roots: Vec<Certificate<'static>> = roots
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .max_idle_connections(100)
        .max_idle_connections_per_host(32)
        .max_idle_age(Duration::from_secs(30))
        .user_agent(format!("kes/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

/// The certificates of `tls.ca`: one PEM file, or every regular file of a directory, each
/// of which must hold at least one valid certificate.
fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let meta = fs::metadata(path).map_err(|err| {
        KeyStoreError::Other(format!("cannot read tls.ca '{}': {err}", path.display()))
    })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        let entries = fs::read_dir(path).map_err(|err| {
            KeyStoreError::Other(format!(
                "cannot read tls.ca directory '{}': {err}",
                path.display()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|err| {
                KeyStoreError::Other(format!(
                    "cannot read tls.ca directory '{}': {err}",
                    path.display()
                ))
            })?;
            if fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                files.push(entry.path());
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut all = Vec::new();
    for file in &files {
        let certs = read_pem_certs(file)?;
        if certs.is_empty() {
            return Err(KeyStoreError::Other(format!(
                "tls.ca: '{}' holds no PEM certificate; remove it or give the CA certificate file",
                file.display()
            )));
        }
        for cert in certs {
            roots.add(cert.clone()).map_err(|err| {
                KeyStoreError::Other(format!(
                    "tls.ca: '{}' holds an unusable certificate: {err}",
                    file.display()
                ))
            })?;
            all.push(cert);
        }
    }
    if all.is_empty() {
        return Err(KeyStoreError::Other(format!(
            "tls.ca: no certificate found in '{}'",
            path.display()
        )));
    }
    Ok(all)
}

/// Well-known CA bundle locations of Linux distributions and BSDs.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The system's trusted roots: `SSL_CERT_FILE` / `SSL_CERT_DIR` if set (as OpenSSL does),
/// else the first well-known bundle that exists. Read directly rather than through a
/// crate: it is a PEM file, and rustls-pemfile is already a dependency.
fn load_system_roots() -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        candidates.push(file.into());
    }
    if let Some(dir) = std::env::var_os("SSL_CERT_DIR") {
        candidates.push(dir.into());
    }
    candidates.extend(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for candidate in &candidates {
        let files: Vec<PathBuf> = match fs::metadata(candidate) {
            Ok(meta) if meta.is_dir() => fs::read_dir(candidate)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default(),
            Ok(_) => vec![candidate.clone()],
            Err(_) => continue,
        };
        let mut roots = rustls::RootCertStore::empty();
        let mut all = Vec::new();
        for file in files {
            for cert in read_pem_certs(&file).unwrap_or_default() {
                // Bundles carry the odd certificate rustls cannot use; skip those.
                if roots.add(cert.clone()).is_ok() {
                    all.push(cert);
                }
            }
        }
        if !all.is_empty() {
            return Ok(all);
        }
    }
    Err(KeyStoreError::Other(format!(
        "no system CA certificates found (looked at SSL_CERT_FILE, SSL_CERT_DIR, {}); set tls.ca to the CA \
         that issued CipherTrust Manager's certificate",
        SYSTEM_BUNDLES.join(", ")
    )))
}

fn read_pem_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, KeyStoreError> {
    let data = fs::read(file)
        .map_err(|err| KeyStoreError::Other(format!("cannot read '{}': {err}", file.display())))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            KeyStoreError::Other(format!("'{}' is not valid PEM: {err}", file.display()))
        })
}

/// Percent-encodes everything but RFC 3986 unreserved characters. Valid KES key names pass
/// unchanged; anything else cannot escape the path segment.
fn encode_path_segment(name: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if name.bytes().all(plain) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// 200 ms plus up to 800 ms at random, so that many clients retrying do not stay in step.
fn retry_pause() -> Duration {
    let mut bytes = [0u8; 4];
    let jitter = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes) % 800,
        Err(_) => 400,
    };
    Duration::from_millis(200 + u64::from(jitter))
}

fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_refresh_token() {
        let cfg =
            CipherTrustConfig::new("https://ctm", Zeroizing::new("very-secret-refresh".into()));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret-refresh"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn endpoint_loses_one_trailing_slash() {
        assert_eq!(
            normalize_endpoint("https://ctm.example.com/").unwrap(),
            "https://ctm.example.com"
        );
        assert_eq!(
            normalize_endpoint(" https://ctm:8443 ").unwrap(),
            "https://ctm:8443"
        );
        assert_eq!(
            normalize_endpoint("https://ctm/base/").unwrap(),
            "https://ctm/base"
        );
        for bad in ["", "ctm.example.com", "https://", "https:///x", "ftp://ctm"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_path_safe() {
        assert_eq!(encode_path_segment("my-key_1.v2"), "my-key_1.v2");
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn json_bodies_have_the_original_field_order() {
        let body = json_body(&TokenRequest {
            grant_type: "refresh_token",
            refresh_token: "t",
            domain: "",
        });
        assert_eq!(
            &body[..],
            br#"{"grant_type":"refresh_token","refresh_token":"t","domain":""}"#
        );
        let body = json_body(&CreateSecret {
            data_type: "seed",
            material: "m\"x",
            name: "k",
        });
        assert_eq!(
            &body[..],
            br#"{"dataType":"seed","material":"m\"x","name":"k"}"#
        );
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn retry_pause_is_in_range() {
        for _ in 0..100 {
            let pause = retry_pause();
            assert!(pause >= Duration::from_millis(200) && pause < Duration::from_millis(1000));
        }
    }

    #[test]
    fn ca_directory_must_hold_only_certificates() {
        let dir = std::env::temp_dir().join(format!("kes-ctm-ca-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ctm".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        assert_eq!(load_ca(&dir).unwrap().len(), 1);
        assert_eq!(load_ca(&dir.join("ca.pem")).unwrap().len(), 1);
        fs::write(dir.join("notes.txt"), "not a certificate").unwrap();
        let err = load_ca(&dir).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(load_ca(&dir.join("missing.pem")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_roots_are_found() {
        // The build machines and appliances have a CA bundle; a clear error otherwise.
        match load_system_roots() {
            Ok(roots) => assert!(!roots.is_empty()),
            Err(err) => assert!(err.to_string().contains("tls.ca")),
        }
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
