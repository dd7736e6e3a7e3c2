//! The route table: every API path the server answers, in one place, as data.
//!
//! What each route is (method, path, body limit, timeout, auth, where it runs, whether it
//! is counted) and nothing else: the handler that answers each route is bound to it in
//! `api::handlers`, so that the policy checks (a rule must match some route), the `api:`
//! config section and the server state read this table without the handlers (and
//! everything they use) beneath them. The dispatcher and `GET /v1/api` read it too. A
//! route is added here and in `api::handlers::HANDLERS`, at the same index.

use std::time::Duration;

/// The HTTP method a route expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Delete,
    /// PUT or POST: the last Go release takes PUT, the 2023 servers and both SDKs POST.
    Put,
    /// POST or PUT: routes of the 2023 servers, where POST is canonical.
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Delete => "DELETE",
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }

    pub fn accepts(self, method: &str) -> bool {
        match self {
            Method::Get => method == "GET",
            Method::Delete => method == "DELETE",
            Method::Put | Method::Post => method == "PUT" || method == "POST",
        }
    }
}

/// How a route authenticates its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone; no identity is computed (`/version`).
    None,
    /// The caller's identity is computed if a certificate is present, but no policy
    /// applies (`/v1/identity/self/describe`, and routes with `api: skip_auth`).
    IdentifyOnly,
    /// Admin, or an identity whose policy allows the path.
    Policy,
}

/// Where a route's handler runs. Connections live on a few event-loop threads, each
/// serving many clients; a handler that waits (for CipherTrust, say) would stall every
/// client of its loop, so such requests go to the bounded pool of blocking workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// Never waits: answered on the event loop.
    Inline,
    /// Needs the master key the resource names: on the event loop when the key cache
    /// holds it (MinIO's hot path), on the pool when it must be loaded, and always on
    /// the pool for a resident key (every use is a CipherTrust call).
    Key,
    /// May wait for the keystore: always on the pool.
    Pool,
}

/// One API route.
pub struct Route {
    pub method: Method,
    /// Exact path, or a prefix when it ends with `/` (the rest is the resource).
    pub path: &'static str,
    /// Largest accepted request body in bytes; larger requests get 413 before reading.
    pub max_body: usize,
    /// Time to answer, from the request head to the last byte of the response.
    /// `None` for streams.
    pub timeout: Option<Duration>,
    pub auth: Auth,
    pub exec: Exec,
    /// Counted in the request metrics (as the last release counts).
    pub metrics: bool,
}

impl Route {
    pub fn is_prefix(&self) -> bool {
        self.path.ends_with('/')
    }
}

const MB: usize = 1_000_000;
const MIB: usize = 1 << 20;
const T10: Option<Duration> = Some(Duration::from_secs(10));
const T15: Option<Duration> = Some(Duration::from_secs(15));

macro_rules! route {
    ($method:ident $path:literal, $max_body:expr, $timeout:expr, $auth:ident, $exec:ident, $metrics:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            max_body: $max_body,
            timeout: $timeout,
            auth: Auth::$auth,
            exec: Exec::$exec,
            metrics: $metrics,
        }
    };
}

/// Every route: the last release's table, plus `/v1/key/bulk/decrypt/` of the 2023
/// servers (their MinIO clients use it), plus kes's own `/v1/key/rotate/` (resident keys,
/// docs/ciphertrust.md).
pub static ROUTES: &[Route] = &[
    route!(Get "/version", 0, T10, None, Inline, false),
    route!(Get "/v1/ready", 0, T15, Policy, Pool, false),
    route!(Get "/v1/status", 0, T15, Policy, Pool, false),
    route!(Get "/v1/metrics", 0, T15, Policy, Pool, false),
    route!(Get "/v1/api", 0, T10, Policy, Inline, false),
    route!(Put "/v1/key/create/", 0, T15, Policy, Pool, true),
    route!(Put "/v1/key/import/", MB, T15, Policy, Pool, true),
    route!(Get "/v1/key/describe/", 0, T15, Policy, Key, true),
    route!(Get "/v1/key/list/", 0, T15, Policy, Pool, true),
    route!(Delete "/v1/key/delete/", 0, T15, Policy, Pool, true),
    route!(Put "/v1/key/encrypt/", MB, T15, Policy, Key, true),
    route!(Put "/v1/key/generate/", MB, T15, Policy, Key, true),
    route!(Put "/v1/key/decrypt/", MB, T15, Policy, Key, true),
    route!(Post "/v1/key/bulk/decrypt/", MIB, T15, Policy, Key, true),
    route!(Put "/v1/key/hmac/", MB, T15, Policy, Key, true),
    route!(Post "/v1/key/rotate/", 0, T15, Policy, Pool, true),
    route!(Get "/v1/policy/describe/", 0, T15, Policy, Inline, true),
    route!(Get "/v1/policy/read/", 0, T15, Policy, Inline, true),
    route!(Get "/v1/policy/list/", 0, T15, Policy, Inline, true),
    route!(Get "/v1/identity/describe/", 0, T15, Policy, Inline, true),
    route!(Get "/v1/identity/list/", 0, T15, Policy, Inline, true),
    route!(Get "/v1/identity/self/describe", 0, T15, IdentifyOnly, Inline, true),
    route!(Get "/v1/log/error", 0, None, Policy, Inline, false),
    route!(Get "/v1/log/audit", 0, None, Policy, Inline, false),
];

/// The route whose path is exactly `path` (as written in the `api:` config section).
pub fn find_exact(path: &str) -> Option<usize> {
    ROUTES.iter().position(|r| r.path == path)
}

/// What a request path resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Route index and the resource (the rest of the path after a prefix route).
    Found(usize, &'a str),
    /// A prefix route asked for without its trailing slash: redirect there.
    Redirect(&'static str),
    NotFound,
}

/// Resolves a request path.
pub fn lookup(path: &str) -> Lookup<'_> {
    for (i, route) in ROUTES.iter().enumerate() {
        if route.is_prefix() {
            if let Some(resource) = path.strip_prefix(route.path) {
                return Lookup::Found(i, resource);
            }
            if path.len() + 1 == route.path.len() && route.path.starts_with(path) {
                // The last SDK lists with an empty prefix as `/v1/key/list`: serve it
                // as the empty pattern (the policy judges the slash form, as the Go
                // servers did after their redirect: `Routed::policy_path`).
                if route.path.ends_with("/list/") {
                    return Lookup::Found(i, "");
                }
                return Lookup::Redirect(route.path);
            }
        } else if route.path == path {
            return Lookup::Found(i, "");
        }
    }
    Lookup::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_resolves_prefix_and_exact_routes() {
        let create = find_exact("/v1/key/create/").unwrap();
        assert_eq!(
            lookup("/v1/key/create/my-key"),
            Lookup::Found(create, "my-key")
        );
        assert_eq!(
            lookup("/v1/key/create"),
            Lookup::Redirect("/v1/key/create/")
        );
        let list = find_exact("/v1/key/list/").unwrap();
        assert_eq!(lookup("/v1/key/list"), Lookup::Found(list, ""));
        assert_eq!(
            lookup("/v1/status"),
            Lookup::Found(find_exact("/v1/status").unwrap(), "")
        );
        assert_eq!(lookup("/v1/status/x"), Lookup::NotFound);
        assert_eq!(lookup("/v1/nothing"), Lookup::NotFound);
        let bulk = find_exact("/v1/key/bulk/decrypt/").unwrap();
        assert_eq!(lookup("/v1/key/bulk/decrypt/k"), Lookup::Found(bulk, "k"));
    }
}
