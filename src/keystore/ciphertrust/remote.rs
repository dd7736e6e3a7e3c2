//! Resident-key encrypts and decrypts made by event loops (`crate::keystore::remote`):
//! the same request bodies and the same reading of the answers as the calls made here
//! (`crypto`), sent over the loops' own connections.
//!
//! What this path leaves to the blocking one ([`Judged::Retry`]): no API token yet, a
//! 401 (the blocking call gets a new token), a 5xx or a call without an answer (the
//! blocking call retries), an encrypt refused while it carried `tag_len` (the blocking
//! call learns to leave it out), a decrypt of a version whose id is not known yet (the
//! blocking call lists the versions).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::CipherTrust;
use super::crypto::{decrypt_body, encrypt_body};
use super::stats::CmRoute;
use super::transport::Answer;
use crate::http::client::write_request;
use crate::keystore::remote::{self, Call, Endpoint, Judged, Outcome, RemoteCrypto};
use crate::keystore::{Sealed, StoredValue};

impl CipherTrust {
    /// The HTTP request of a crypto call, with the current token; `None` without one.
    fn crypto_request(&self, operation: &str, body: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let direct = self.direct.as_ref()?;
        let bearer = self.shared.tokens.peek()?;
        let target = format!("{}/api/v1/crypto/{operation}", direct.base);
        Some(write_request(
            "POST",
            &direct.host,
            &target,
            &[
                ("Authorization", bearer.as_str()),
                ("Accept", "application/json"),
                ("Content-Type", "application/json"),
                ("User-Agent", concat!("kes/", env!("CARGO_PKG_VERSION"))),
            ],
            body,
        ))
    }

    /// An outcome as the answer the blocking calls read, or `Retry` for what only they
    /// settle. Every call is counted in the call metrics, as theirs are.
    fn answer_of(&self, route: CmRoute, outcome: Outcome, took: Duration) -> Option<Answer> {
        match outcome {
            Outcome::Failed(why) => {
                self.shared.transport.stats.record(route, took, None);
                log::debug!(
                    "CipherTrust Manager at {}: {} on an event loop failed ({why}); made again the blocking way",
                    self.shared.endpoint(),
                    route.request_line()
                );
                None
            }
            Outcome::Answered(answer) => {
                self.shared
                    .transport
                    .stats
                    .record(route, took, Some(answer.status));
                let answer = Answer {
                    status: answer.status,
                    content_type: answer.content_type,
                    body: answer.body,
                    may_have_been_applied: false,
                };
                let settled_here =
                    answer.status != 401 && (answer.status < 500 || answer.is_crypto_failure());
                settled_here.then_some(answer)
            }
        }
    }
}

impl RemoteCrypto for CipherTrust {
    fn endpoint(&self) -> Option<Endpoint> {
        let direct = self.direct.as_ref()?;
        Some(Endpoint {
            addr: self.resolver.last()?,
            server_name: direct.server_name.clone(),
            tls: direct.tls.clone(),
        })
    }

    fn prepare_seal(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
        deadline: Instant,
    ) -> Option<Call> {
        let with_tag_len = !self.omit_tag_len.load(Ordering::Relaxed);
        let body = encrypt_body(name, plaintext, aad, with_tag_len);
        Some(Call {
            request: self.crypto_request("encrypt", &body)?,
            deadline,
        })
    }

    fn finish_seal(&self, name: &str, outcome: Outcome, took: Duration) -> Judged<Sealed> {
        let Some(answer) = self.answer_of(CmRoute::Encrypt, outcome, took) else {
            return Judged::Retry;
        };
        if answer.status == 400
            && !answer.is_crypto_failure()
            && !self.omit_tag_len.load(Ordering::Relaxed)
        {
            return Judged::Retry;
        }
        Judged::Done(self.encrypt_answer(name, &answer))
    }

    fn prepare_unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
        deadline: Instant,
    ) -> Option<Call> {
        let id = self.versions.get(name, sealed.version)?;
        let body = decrypt_body(&id, sealed, aad);
        Some(Call {
            request: self.crypto_request("decrypt", &body)?,
            deadline,
        })
    }

    fn finish_unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        outcome: Outcome,
        took: Duration,
    ) -> remote::Judged<Option<StoredValue>> {
        match self.answer_of(CmRoute::Decrypt, outcome, took) {
            Some(answer) => Judged::Done(self.decrypt_answer(name, sealed.version, &answer)),
            None => Judged::Retry,
        }
    }
}
