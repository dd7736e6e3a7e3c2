//! What a handler is given (the request's [`Ctx`]) and what it answers with: the errors
//! the SDKs compare by message, and the NDJSON form of listings.

use std::net::IpAddr;
use std::time::Duration;

use crate::http::{Request, Response};
use crate::keys::Warm;
use crate::keystore::remote::{Call, Outcome};
use crate::routes::Route;
use crate::state::{Live, State};

/// The SDKs compare these errors by status and exact message.
pub mod errors {
    pub const NOT_ALLOWED: (u16, &str) = (403, "not authorized: insufficient permissions");
    pub const KEY_NOT_FOUND: (u16, &str) = (404, "key does not exist");
    pub const KEY_EXISTS: (u16, &str) = (400, "key already exists");
    pub const DECRYPT: (u16, &str) = (400, "decryption failed: ciphertext is not authentic");
    pub const POLICY_NOT_FOUND: (u16, &str) = (404, "policy does not exist");
    pub const IDENTITY_NOT_FOUND: (u16, &str) = (404, "identity does not exist");
    pub const NO_CERTIFICATE: (u16, &str) = (400, "tls: client certificate is required");
}

/// Builds the error response for one of [`errors`].
pub fn fail((status, message): (u16, &str)) -> Response {
    Response::error(status, message)
}

/// Everything a handler may look at.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub live: &'a Live,
    pub req: &'a Request,
    pub route: &'static Route,
    /// The rest of the path after a prefix route: a key, policy or identity name.
    pub resource: &'a str,
    /// The caller's identity; empty when unknown.
    pub identity: &'a str,
    pub peer: IpAddr,
    /// The master key the resource names, when the server already took it (requests
    /// served on an event loop, which must not wait for a load or a keystore call).
    pub cached_key: Option<Warm>,
}

/// A handler answers with `Ok`, or refuses with `Err` (so that `?` can carry refusals).
pub type Reply = Result<Response, Response>;

pub type Handler = fn(&Ctx) -> Reply;

/// The 400 answer for an invalid listing pattern.
pub fn invalid_pattern(pattern: &str) -> Response {
    Response::error(
        400,
        &format!("listing pattern '{pattern}' is empty, too long or is invalid"),
    )
}

/// A listing as NDJSON, one object per line, `Content-Type: application/x-ndjson` exactly:
/// the one listing format both SDK generations read completely (the last SDK switches
/// on that exact content type; the 2023 SDK reads a stream of objects).
pub fn ndjson<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Response {
    let mut body = Vec::new();
    for item in items {
        if serde_json::to_writer(&mut body, &item).is_ok() {
            body.push(b'\n');
        }
    }
    let mut response = Response::new(200).with_header("Content-Type", "application/x-ndjson");
    response.body = body;
    response
}

// Requests made on an event loop although they wait for CipherTrust: generate, encrypt
// and decrypt with a resident key (issue 25; docs/ARCHITECTURE.md, "Calls to
// CipherTrust"). Their handlers (`handlers::REMOTE`) prepare the call; the loop makes it
// (`server::upstream`) and hands its outcome to the job's `Finish`.

/// What a request needs.
pub enum Remote {
    /// Its answer, at once (a refusal: policy, name, body).
    Answer(Response),
    /// A call to make on the loop.
    Call(RemoteJob),
    /// It cannot be made on the loop (not a resident key the cache knows, no API token
    /// yet, a version whose id is not known): the pool runs the blocking handler.
    Pool,
}

impl From<Response> for Remote {
    fn from(response: Response) -> Remote {
        Remote::Answer(response)
    }
}

/// A prepared call and what to make of its outcome.
pub struct RemoteJob {
    pub call: Call,
    pub finish: Finish,
}

/// Turns a call's outcome (and how long it took), or `None` when it was refused for
/// want of room (queue full or too long in it), into the answer.
pub type Finish = Box<dyn FnOnce(&State, Option<(Outcome, Duration)>) -> Resumed + Send>;

/// What a finished call means for its request.
pub enum Resumed {
    Answer(Response),
    /// Make the request again the blocking way, on the pool.
    Pool,
}

/// The answer when CipherTrust calls are at their limit: 503 in the original's error
/// shape, with `Retry-After`.
pub fn busy() -> Response {
    Response::error(
        503,
        "too many calls to the keystore are waiting: try again later",
    )
    .with_header("Retry-After", "1")
}

/// A handler of a request made on an event loop: prepares its call, given the request's
/// deadline.
pub type RemoteHandler = fn(&Ctx, std::time::Instant) -> Remote;
