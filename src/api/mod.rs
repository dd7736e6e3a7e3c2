//! The KES HTTP API: route table, authorization, and the handlers.
//!
//! A request reaches [`preflight`] as soon as its head is read (route, method and body
//! limit are checked before any body byte is buffered), then [`serve`] once the body is
//! complete (identity, policy, handler).

pub mod identity;
pub mod key;
pub mod log_stream;
pub mod metrics;
pub mod policy;
pub mod routes;
pub mod sys;

use std::net::IpAddr;
use std::sync::Arc;

use crate::crypto::KeyVersion;
use crate::http::{Request, Response};
use crate::identity::PeerIdentity;
use crate::policy::Verdict;
use crate::state::{Live, State};
use routes::{Auth, Lookup, ROUTES, Route};

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
    /// The master key the resource names, when the server already took it from the key
    /// cache (requests served on an event loop, which must not wait for a load).
    pub cached_key: Option<Arc<KeyVersion>>,
}

/// A request whose head passed the route, method and size checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub route: usize,
    /// Byte range of the resource within the request path.
    pub resource_start: usize,
}

impl Routed {
    pub fn route(&self) -> &'static Route {
        &ROUTES[self.route]
    }

    /// The key, policy or identity name the path names after a prefix route.
    pub fn resource<'r>(&self, req: &'r Request) -> &'r str {
        &req.path[self.resource_start..]
    }

    /// The path the caller's policy is checked against. A listing asked for without
    /// its trailing slash (`/v1/key/list`, as the last SDK sends) is the empty pattern
    /// of its route and is judged as `/v1/key/list/`: the path the Go servers redirect
    /// it to and then check. So `/v1/key/list/*` admits it exactly as it did there, and
    /// a narrower rule such as `/v1/key/list/my-app*` does not.
    pub fn policy_path<'r>(&self, req: &'r Request) -> &'r str {
        let route = self.route();
        if route.is_prefix() && !req.path.starts_with(route.path) {
            route.path
        } else {
            &req.path
        }
    }
}

/// Checks a request head: the route exists, the method fits, the announced body is
/// within the route's limit. Errors are the responses to send (and then close).
pub fn preflight(req: &Request, body_len: Option<u64>) -> Result<Routed, Response> {
    let (index, resource) = match routes::lookup(&req.path) {
        Lookup::Found(index, resource) => (index, resource),
        Lookup::Redirect(to) => {
            return Err(Response::new(301).with_header("Location", to));
        }
        Lookup::NotFound => return Err(Response::error(404, "404 page not found")),
    };
    let route = &ROUTES[index];
    if !route.method.accepts(&req.method) {
        return Err(Response::error(
            405,
            &format!(
                "received method '{}' expected '{}'",
                req.method,
                route.method.as_str()
            ),
        )
        .with_header("Accept", route.method.as_str()));
    }
    if body_len.is_some_and(|n| n > route.max_body as u64) {
        return Err(Response::error(413, "request body too large"));
    }
    Ok(Routed {
        route: index,
        resource_start: req.path.len() - resource.len(),
    })
}

/// Authorizes and runs the routed request.
pub fn serve(
    state: &State,
    live: &Live,
    routed: Routed,
    req: &Request,
    peer: IpAddr,
    who: &PeerIdentity,
    cached_key: Option<Arc<KeyVersion>>,
) -> Response {
    let route = routed.route();
    let settings = live.route_settings[routed.route];
    let auth = match route.auth {
        Auth::Policy if settings.skip_auth => Auth::IdentifyOnly,
        auth => auth,
    };
    let identity = match (auth, who) {
        (Auth::None, _) => "",
        (Auth::IdentifyOnly, PeerIdentity::One(id)) => id.as_str(),
        (Auth::IdentifyOnly, _) => "",
        (Auth::Policy, PeerIdentity::Missing) => return fail(errors::NO_CERTIFICATE),
        (Auth::Policy, PeerIdentity::One(id)) => {
            if live.auth.verify(id, routed.policy_path(req)) == Verdict::Denied {
                log::debug!("denied {} {} for identity {id}", req.method, req.path);
                return fail(errors::NOT_ALLOWED);
            }
            id.as_str()
        }
    };
    let ctx = Ctx {
        state,
        live,
        req,
        route,
        resource: routed.resource(req),
        identity,
        peer,
        cached_key,
    };
    (route.handler)(&ctx).unwrap_or_else(|refusal| refusal)
}

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
