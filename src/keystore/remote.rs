//! Resident-key crypto that an event loop runs without waiting (issue 25,
//! docs/ARCHITECTURE.md, "Calls to CipherTrust"): the keystore prepares each call as the
//! bytes of an HTTP request and judges the answer; the loop (`server::upstream`) owns the
//! connections, sends the bytes and reads the answer as they arrive. So a call that waits
//! for CipherTrust is a few hundred bytes of state, not a blocked thread.
//!
//! Only the calls of every generate, encrypt and decrypt go this way. Whatever this path
//! does not settle (no token yet, a refused token, a 5xx, a dropped connection, a version
//! whose id is not known) is [`Judged::Retry`]: the request is made again on a pool
//! worker the blocking way, which renews tokens, retries, and learns ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::error::{KeyStoreError, StoredValue};
use super::sealed::Sealed;
pub use crate::http::client::Answer;

/// Where the remote service is, for a loop to connect to (a resolved address: the loop
/// never waits for a name lookup).
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The name the service's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
}

/// One prepared call: the whole request, and when it must have been answered.
pub struct Call {
    /// It carries a token and, for an encrypt, a data key: wiped when dropped.
    pub request: Zeroizing<Vec<u8>>,
    pub deadline: Instant,
}

impl std::fmt::Debug for Call {
    /// Never the request: it holds a token and key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("request", &format_args!("<{} bytes>", self.request.len()))
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// How a call ended.
pub enum Outcome {
    Answered(Answer),
    /// No (complete) answer: the connection failed or the deadline passed.
    Failed(String),
}

/// What an outcome means.
pub enum Judged<T> {
    Done(Result<T, KeyStoreError>),
    /// This path cannot settle it: make the request again the blocking way.
    Retry,
}

/// A keystore whose resident-key crypto can run on an event loop.
pub trait RemoteCrypto: Send + Sync {
    /// Where to connect, or `None` while calls must go the blocking way (no address
    /// resolved yet, a proxy, plain HTTP).
    fn endpoint(&self) -> Option<Endpoint>;

    /// The call that encrypts `plaintext` with the newest version of resident key
    /// `name`, binding `aad`; `None`: make it the blocking way.
    fn prepare_seal(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
        deadline: Instant,
    ) -> Option<Call>;

    /// What the answer to [`prepare_seal`](Self::prepare_seal)'s call means; `took` is
    /// the time from sending it to its end.
    fn finish_seal(&self, name: &str, outcome: Outcome, took: Duration) -> Judged<Sealed>;

    /// The call that decrypts `sealed`; `None`: make it the blocking way (the id of the
    /// version it names is not known yet).
    fn prepare_unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
        deadline: Instant,
    ) -> Option<Call>;

    /// What the answer to [`prepare_unseal`](Self::prepare_unseal)'s call means:
    /// `Ok(None)` when the keystore refused the ciphertext as not authentic.
    fn finish_unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        outcome: Outcome,
        took: Duration,
    ) -> Judged<Option<StoredValue>>;
}
