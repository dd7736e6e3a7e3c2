//! The wire to CipherTrust Manager: one agent (kept-alive connections, resumed TLS
//! sessions), requests and their answers, retries within a deadline, and what each call
//! took (for `/v1/metrics`). Knows nothing of tokens: `token` gets them over this wire,
//! `client` puts them on calls.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::stats::{CallStats, CmRoute};

/// Time limit of one keystore operation, all retries included. Well below the server's
/// 15 s route timeout, so that a request that waited for another's load of the same key
/// (see `crate::cache`) still ends in time, with a proper error.
pub const CALL_BUDGET: Duration = Duration::from_secs(10);

/// TCP connect timeout, as the original's dialer (never more than what is left of the
/// call's budget).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Repetitions of a call after a temporary failure (ciphertrust.md §2).
pub(super) const MAX_RETRIES: u32 = 2;

/// Answer size limits (ciphertrust.md §3, §5, §7, §8).
pub(super) const TOKEN_ANSWER_LIMIT: u64 = 1 << 20;
pub(super) const OTHER_ANSWER_LIMIT: u64 = 1 << 20;

/// Longest error text taken from a CipherTrust answer.
pub(super) const MAX_ERROR_TEXT: usize = 300;

/// The connection to one CipherTrust Manager.
pub(super) struct Transport {
    /// Base URL without a trailing `/`.
    pub(super) endpoint: String,
    pub(super) agent: ureq::Agent,
    pub(super) stats: CallStats,
}

/// The `Authorization` header value, `Bearer <jwt>`. Shared, not copied, between callers;
/// wiped when the last user drops it.
pub(super) type Bearer = Arc<Zeroizing<String>>;

impl Transport {
    /// Sends `call`, repeating it after temporary failures (ciphertrust.md §2) while the
    /// deadline allows.
    pub(super) fn send(
        &self,
        call: &Call<'_>,
        deadline: Instant,
    ) -> Result<Answer, TransportFailure> {
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
                // A crypto failure is CipherTrust's answer, whatever its status: repeating
                // it cannot change it (and it is no outage).
                Ok(mut answer)
                    if answer.status < 500 || last_chance || answer.is_crypto_failure() =>
                {
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

    /// One HTTP exchange, its answer read completely, timed and counted by route.
    pub(super) fn attempt(
        &self,
        call: &Call<'_>,
        remaining: Duration,
    ) -> Result<Answer, TransportFailure> {
        let started = Instant::now();
        let result = self.exchange(call, remaining);
        let status = result.as_ref().ok().map(|answer| answer.status);
        self.stats.record(call.route, started.elapsed(), status);
        result
    }

    fn exchange(&self, call: &Call<'_>, remaining: Duration) -> Result<Answer, TransportFailure> {
        fn authorize<B>(
            request: ureq::RequestBuilder<B>,
            bearer: Option<&Bearer>,
        ) -> ureq::RequestBuilder<B> {
            // CipherTrust's crypto endpoints refuse requests that do not ask for JSON.
            let request = request.header("Accept", "application/json");
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

    pub(super) fn unreachable(&self, msg: &str) -> String {
        format!("CipherTrust Manager at {}: {msg}", self.endpoint)
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Method {
    Get,
    Post,
    Delete,
}

/// One request to CipherTrust.
pub(super) struct Call<'a> {
    pub(super) route: CmRoute,
    pub(super) method: Method,
    pub(super) url: &'a str,
    pub(super) bearer: Option<&'a Bearer>,
    pub(super) json: Option<&'a [u8]>,
    pub(super) answer_limit: u64,
    /// The status probe: any answer counts, even one whose body cannot be read.
    pub(super) any_answer_will_do: bool,
}

/// CipherTrust's answer, body read (it may hold key material, so it is wiped on drop).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: String,
    pub(super) body: Zeroizing<Vec<u8>>,
    /// An earlier attempt of the same call failed in a way that does not rule out that
    /// CipherTrust carried it out.
    pub(super) may_have_been_applied: bool,
}

impl Answer {
    /// CipherTrust's `codeDesc`, when the answer is its JSON error.
    pub(super) fn code_desc(&self) -> Option<String> {
        serde_json::from_slice::<ErrorAnswer>(&self.body)
            .ok()
            .and_then(|error| error.code_desc)
    }

    /// CipherTrust says a cryptographic operation failed (`NCERRCryptoOperationFailed`):
    /// for a GCM decrypt, a wrong tag, AAD, IV or ciphertext. Evidence: docs/ciphertrust.md,
    /// fidelity table.
    pub(super) fn is_crypto_failure(&self) -> bool {
        self.code_desc()
            .is_some_and(|desc| desc.trim_start().starts_with(CRYPTO_FAILURE))
    }

    /// Describes an error answer (ciphertrust.md §8): status, and CipherTrust's code and
    /// description (or the text of a non-JSON answer). Callers scrub tokens from it.
    pub(super) fn describe(&self) -> String {
        let status = ureq::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .map_or_else(
                || self.status.to_string(),
                |reason| format!("{} {reason}", self.status),
            );
        if self
            .content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            match serde_json::from_slice::<ErrorAnswer>(&self.body) {
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
            let body = String::from_utf8_lossy(&self.body);
            match body.trim() {
                "" => status,
                text => format!("{status}: {text}"),
            }
        }
    }
}

/// CipherTrust's `codeDesc` prefix for a failed cryptographic operation.
pub(super) const CRYPTO_FAILURE: &str = "NCERRCryptoOperationFailed";

pub(super) struct TransportFailure {
    pub(super) message: String,
    /// Worth repeating: a timeout or a connection dropped mid-way (ciphertrust.md §2).
    pub(super) temporary: bool,
    /// The server's certificate is not trusted: a configuration problem, not an outage.
    pub(super) untrusted: bool,
}

impl TransportFailure {
    pub(super) fn new(message: String, temporary: bool) -> Self {
        Self {
            message,
            temporary,
            untrusted: false,
        }
    }

    pub(super) fn after_retries(mut self) -> Self {
        self.message = format!("temporary network error: {}", self.message);
        self
    }

    pub(super) fn from_ureq(err: ureq::Error) -> Self {
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

    pub(super) fn from_io(err: &std::io::Error) -> Self {
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

#[derive(Deserialize)]
pub(super) struct ErrorAnswer {
    #[serde(default)]
    pub(super) code: Option<i64>,
    #[serde(default, rename = "codeDesc")]
    pub(super) code_desc: Option<String>,
}

/// Serializes a request body into a wiped buffer, sized up front so that growing it
/// never leaves copies of the secrets inside behind.
pub(super) fn json_body<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut probe = Zeroizing::new(Vec::new());
    let mut counter = CountingWriter(0);
    // Serializing these plain structs cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    probe.reserve_exact(counter.0);
    let _ = serde_json::to_writer(&mut *probe, value);
    probe
}

pub(super) struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads an answer body of at most `limit` bytes into a wiped buffer, which grows without
/// leaving an unwiped copy behind ([`crate::memory::extend_wiped`]).
pub(super) fn read_answer(
    body: &mut ureq::Body,
    limit: u64,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
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
        crate::memory::extend_wiped(&mut out, &chunk[..n]);
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters. Valid KES key names pass
/// unchanged; anything else cannot escape the path segment.
pub(super) fn encode_path_segment(name: &str) -> Cow<'_, str> {
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
pub(super) fn retry_pause() -> Duration {
    let mut bytes = [0u8; 4];
    let jitter = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes) % 800,
        Err(_) => 400,
    };
    Duration::from_millis(200 + u64::from(jitter))
}

pub(super) fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_safe() {
        assert_eq!(encode_path_segment("my-key_1.v2"), "my-key_1.v2");
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn retry_pause_is_in_range() {
        for _ in 0..100 {
            let pause = retry_pause();
            assert!(pause >= Duration::from_millis(200) && pause < Duration::from_millis(1000));
        }
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
