//! The KES HTTP API: authorization, and the handlers of the routes of `crate::routes`.
//!
//! A request reaches [`preflight`] as soon as its head is read (route, method and body
//! limit are checked before any body byte is buffered), then [`serve`] once the body is
//! complete (identity, policy, then the route's handler from `handlers::HANDLERS`).
//! [`warm_key`] tells the server which key requests an event loop may answer at once.

pub mod ctx;
pub mod handlers;
pub mod identity;
pub mod key;
pub mod log_stream;
pub mod metrics;
pub mod policy;
pub mod sys;
mod warm;

use std::net::IpAddr;
use std::time::Instant;

use crate::http::{Request, Response};
use crate::identity::PeerIdentity;
use crate::keys::Warm;
use crate::policy::Verdict;
use crate::routes::{self, Auth, Lookup, ROUTES, Route};
use crate::state::{Live, State};
use ctx::{Ctx, Remote, errors, fail};
pub use warm::warm_key;

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
    cached_key: Option<Warm>,
) -> Response {
    let route = routed.route();
    let identity = match authorize(live, routed, req, who) {
        Ok(identity) => identity,
        Err(refusal) => return refusal,
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
    (handlers::HANDLERS[routed.route].1)(&ctx).unwrap_or_else(|refusal| refusal)
}

/// The caller's identity if the route's auth mode and the caller's policy admit the
/// request, else the refusal.
fn authorize<'w>(
    live: &Live,
    routed: Routed,
    req: &Request,
    who: &'w PeerIdentity,
) -> Result<&'w str, Response> {
    let route = routed.route();
    let settings = live.route_settings[routed.route];
    let auth = match route.auth {
        Auth::Policy if settings.skip_auth => Auth::IdentifyOnly,
        auth => auth,
    };
    match (auth, who) {
        (Auth::None, _) => Ok(""),
        (Auth::IdentifyOnly, PeerIdentity::One(id)) => Ok(id.as_str()),
        (Auth::IdentifyOnly, _) => Ok(""),
        (Auth::Policy, PeerIdentity::Missing) => Err(fail(errors::NO_CERTIFICATE)),
        (Auth::Policy, PeerIdentity::One(id)) => {
            if live.auth.verify(id, routed.policy_path(req)) == Verdict::Denied {
                log::debug!("denied {} {} for identity {id}", req.method, req.path);
                return Err(fail(errors::NOT_ALLOWED));
            }
            Ok(id.as_str())
        }
    }
}

/// Authorizes the routed request and prepares its call, if its route can be made on an
/// event loop. `deadline` is the request's.
pub fn prepare_remote(
    state: &State,
    live: &Live,
    routed: Routed,
    req: &Request,
    peer: IpAddr,
    who: &PeerIdentity,
    deadline: Instant,
) -> Remote {
    let route = routed.route();
    let Some(handler) = handlers::REMOTE[routed.route].1 else {
        return Remote::Pool;
    };
    let identity = match authorize(live, routed, req, who) {
        Ok(identity) => identity,
        Err(refusal) => return Remote::Answer(refusal),
    };
    let ctx = Ctx {
        state,
        live,
        req,
        route,
        resource: routed.resource(req),
        identity,
        peer,
        cached_key: None,
    };
    handler(&ctx, deadline)
}
