//! Calls with the API token: a data call carries the current token; a 401 gets a new
//! token once and repeats the call. Error answers are described without any token in
//! them.

use std::time::Instant;

use super::stats::CmRoute;
use super::token::Tokens;
use super::transport::{Answer, Call, Method, Transport, TransportFailure};
use crate::keystore::KeyStoreError;

/// What the store and its renewal thread share.
pub(super) struct Shared {
    pub(super) transport: Transport,
    pub(super) tokens: Tokens,
}

impl Shared {
    /// Makes a data call with the current API token; if CipherTrust answers 401, gets a
    /// new token once and repeats the call.
    pub(super) fn authorized(
        &self,
        route: CmRoute,
        method: Method,
        url: &str,
        json: Option<&[u8]>,
        answer_limit: u64,
        deadline: Instant,
    ) -> Result<Answer, KeyStoreError> {
        let (bearer, generation) = self.tokens.current(&self.transport)?;
        let mut call = Call {
            route,
            method,
            url,
            bearer: Some(&bearer),
            json,
            answer_limit,
            any_answer_will_do: false,
        };
        let answer = self
            .transport
            .send(&call, deadline)
            .map_err(|failure| self.transport_error(&failure))?;
        if answer.status != 401 {
            return Ok(answer);
        }
        log::debug!(
            "CipherTrust Manager at {}: API token refused (401), getting a new one",
            self.transport.endpoint
        );
        let (bearer, _) = self
            .tokens
            .renew(&self.transport, Some(generation), deadline)
            .map_err(|failure| failure.to_keystore_error())?;
        call.bearer = Some(&bearer);
        self.transport
            .send(&call, deadline)
            .map_err(|failure| self.transport_error(&failure))
    }

    /// A failed exchange as a keystore error: `Unreachable`, unless the server's
    /// certificate is not trusted, which no waiting will fix.
    pub(super) fn transport_error(&self, failure: &TransportFailure) -> KeyStoreError {
        let message = self.unreachable(&failure.message);
        if failure.untrusted {
            KeyStoreError::Other(message)
        } else {
            KeyStoreError::Unreachable(message)
        }
    }

    /// Describes an error answer (ciphertrust.md §8), without any token in it.
    pub(super) fn explain(&self, answer: &Answer) -> String {
        self.tokens.explain(answer)
    }

    /// CipherTrust's error answer to a `route` call as a keystore error; `what` says what
    /// kes tried ("could not encrypt with key 'k'").
    ///
    /// A refused token or permission (401 after a fresh token, 403) is a configuration
    /// problem: the message names the call and the permission its user needs, for the
    /// error log (clients get a generic server error). A 5xx that survived the retries is
    /// an outage (`Unreachable`), as a dropped connection is.
    pub(super) fn refusal(&self, route: CmRoute, what: &str, answer: &Answer) -> KeyStoreError {
        let explained = self.explain(answer);
        match answer.status {
            401 | 403 => KeyStoreError::Other(format!(
                "CipherTrust Manager {what}: {} answered {explained}; its user needs {} \
                 (docs/ciphertrust.md, \"Permissions\")",
                route.request_line(),
                route.permission()
            )),
            500.. => KeyStoreError::Unreachable(
                self.unreachable(&format!("{} answered {explained}", route.request_line())),
            ),
            _ => KeyStoreError::Other(format!("CipherTrust Manager {what}: {explained}")),
        }
    }

    pub(super) fn unreachable(&self, msg: &str) -> String {
        self.transport.unreachable(msg)
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.transport.endpoint
    }
}
