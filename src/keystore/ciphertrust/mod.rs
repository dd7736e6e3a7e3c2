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

pub(super) mod check;
mod client;
mod config;
mod crypto;
mod keys2;
mod paging;
mod remote;
mod secrets;
mod stats;
mod token;
mod transport;
mod trust;
mod versions;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use self::client::Shared;
pub use self::config::{CipherTrustConfig, DEFAULT_RETRY};
use self::stats::{CallStats, CmRoute};
use self::token::{AuthFailure, Tokens, renewal_loop};
pub use self::transport::CALL_BUDGET;
use self::transport::{Call, Method, OTHER_ANSWER_LIMIT, Transport};
use self::trust::{CachedResolver, Direct, build_agent, normalize_endpoint};
use self::versions::VersionIds;
use super::remote::RemoteCrypto;
use super::{KeyStore, KeyStoreError, ListPage, Sealed, StoredValue, page_of};
use crate::observe::CallStatsSnapshot;
use crate::sync::lock;

/// A keystore backed by Thales CipherTrust Manager.
pub struct CipherTrust {
    shared: Arc<Shared>,
    resident: bool,
    /// The id of each resident key version seen (decrypts address versions by id).
    versions: VersionIds,
    /// CipherTrust refused the GCM tag length field once: encrypts go without it.
    omit_tag_len: AtomicBool,
    /// The address the blocking calls last resolved (event loops connect to it).
    resolver: Arc<CachedResolver>,
    /// What event loops need to call CipherTrust themselves (`remote`), if they may.
    direct: Option<Direct>,
}

impl fmt::Debug for CipherTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherTrust")
            .field("endpoint", &self.shared.endpoint())
            .finish_non_exhaustive()
    }
}

impl CipherTrust {
    /// Builds the store and requests a first API token.
    ///
    /// Fails on configuration errors (endpoint, CA certificates) and when CipherTrust
    /// answers but rejects the refresh token. Does **not** fail when CipherTrust cannot be
    /// reached: the store then keeps trying in the background (see the module docs).
    pub fn connect(cfg: CipherTrustConfig) -> Result<CipherTrust, KeyStoreError> {
        let store = CipherTrust::without_token(cfg)?;
        let shared = &store.shared;
        match shared
            .tokens
            .renew(&shared.transport, None, Instant::now() + CALL_BUDGET)
        {
            Ok(_) => log::info!(
                "CipherTrust Manager at {}: authenticated",
                shared.endpoint()
            ),
            Err(AuthFailure::Refused(msg)) => return Err(KeyStoreError::Other(msg)),
            Err(AuthFailure::Unavailable(msg)) => log::warn!(
                "{msg}; starting anyway: key operations fail until a token is obtained, \
                 which is retried in the background"
            ),
        }

        let for_thread = Arc::clone(shared);
        thread::Builder::new()
            .name("kes-ctm-token".into())
            .spawn(move || renewal_loop(&for_thread.transport, &for_thread.tokens))
            .map_err(|err| {
                KeyStoreError::Other(format!(
                    "cannot start the CipherTrust token renewal thread: {err}"
                ))
            })?;
        Ok(store)
    }

    /// The store before its first token and without the renewal thread (the site check
    /// makes its token requests itself).
    fn without_token(cfg: CipherTrustConfig) -> Result<CipherTrust, KeyStoreError> {
        let endpoint = normalize_endpoint(&cfg.endpoint)?;
        if cfg.insecure_skip_verify {
            log::warn!(
                "CipherTrust Manager at {endpoint}: TLS certificate verification is DISABLED \
                 (insecure_skip_verify); anyone on the network path can read the API tokens \
                 and every key. Configure tls.ca instead."
            );
        }
        let reach = build_agent(&cfg)?;
        let retry = if cfg.retry.is_zero() {
            DEFAULT_RETRY
        } else {
            cfg.retry
        };
        Ok(CipherTrust {
            shared: Arc::new(Shared {
                transport: Transport {
                    endpoint,
                    agent: reach.agent,
                    stats: CallStats::default(),
                },
                tokens: Tokens::new(cfg.refresh_token, cfg.domain, retry),
            }),
            resident: cfg.resident,
            versions: VersionIds::default(),
            omit_tag_len: AtomicBool::new(false),
            resolver: reach.resolver,
            direct: reach.direct,
        })
    }
}

impl CipherTrust {
    fn resident_mode(&self) -> Result<(), KeyStoreError> {
        if self.resident {
            Ok(())
        } else {
            Err(KeyStoreError::Unsupported(
                "resident keys are off: set master_keys: resident in the CipherTrust keystore section".into(),
            ))
        }
    }
}

impl Drop for CipherTrust {
    fn drop(&mut self) {
        // The renewal thread sees this at its next wake-up (at once unless it is inside a
        // token request) and ends; it is not joined, so dropping never blocks.
        lock(&self.shared.tokens.state).closed = true;
        self.shared.tokens.event.notify_all();
    }
}

impl KeyStore for CipherTrust {
    fn describe(&self) -> String {
        format!("ciphertrust:{}", self.shared.endpoint())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        self.create_secret(name, value)
    }

    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError> {
        self.export(name, Instant::now() + CALL_BUDGET)
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        if self.resident {
            self.delete_key(name, Instant::now() + CALL_BUDGET)?;
        }
        self.delete_secret(name)
    }

    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError> {
        if !self.resident {
            return self.list_secrets(prefix, start, limit);
        }
        let deadline = Instant::now() + CALL_BUDGET;
        let mut names = self.all_key_names(deadline)?;
        names.extend(self.all_secret_names(deadline)?);
        names.sort_unstable();
        names.dedup();
        Ok(page_of(&names, prefix, start, limit))
    }

    fn creates_resident(&self) -> bool {
        self.resident
    }

    fn resident_version(&self, name: &str) -> Result<Option<u32>, KeyStoreError> {
        if !self.resident {
            return Ok(None);
        }
        let object = self.lookup_key(name, Instant::now() + CALL_BUDGET)?;
        Ok(object.and_then(|object| object.version))
    }

    fn create_resident(&self, name: &str) -> Result<u32, KeyStoreError> {
        self.resident_mode()?;
        self.create_key(name)
    }

    fn seal(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, KeyStoreError> {
        self.resident_mode()?;
        self.encrypt_with(name, plaintext, aad)
    }

    fn unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        self.resident_mode()?;
        self.decrypt_with(name, sealed, aad)
    }

    fn rotate(&self, name: &str) -> Result<u32, KeyStoreError> {
        self.resident_mode()?;
        self.rotate_key(name)
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let tokenless = {
            let state = lock(&self.shared.tokens.state);
            if let Some(AuthFailure::Refused(msg)) = &state.problem {
                return Err(KeyStoreError::Other(msg.clone()));
            }
            state.bearer.is_none().then_some(state.generation)
        };
        let started = Instant::now();
        let probe = Call {
            route: CmRoute::Probe,
            method: Method::Get,
            url: self.shared.endpoint(),
            bearer: None,
            json: None,
            answer_limit: OTHER_ANSWER_LIMIT,
            any_answer_will_do: true,
        };
        if let Err(failure) = self.shared.transport.send(&probe, started + CALL_BUDGET) {
            return Err(KeyStoreError::Unreachable(
                self.shared.unreachable(&failure.message),
            ));
        }
        if let Some(generation) = tokenless {
            // CipherTrust answers, but no API token was obtained yet (it was down when kes
            // started): get one now, so that "ready" means key operations work, and a
            // refused refresh token shows here rather than at the next key request.
            self.shared
                .tokens
                .renew(
                    &self.shared.transport,
                    Some(generation),
                    started + CALL_BUDGET,
                )
                .map_err(|failure| failure.to_keystore_error())?;
        }
        Ok(started.elapsed())
    }

    fn remote(&self) -> Option<&dyn RemoteCrypto> {
        self.resident.then_some(self as &dyn RemoteCrypto)
    }

    fn call_stats(&self) -> Option<CallStatsSnapshot> {
        Some(self.shared.transport.stats.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    #[test]
    fn debug_hides_the_refresh_token() {
        let cfg =
            CipherTrustConfig::new("https://ctm", Zeroizing::new("very-secret-refresh".into()));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret-refresh"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
