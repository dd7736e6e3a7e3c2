//! Which handler answers each route of the route table (`crate::routes::ROUTES`).
//!
//! Kept apart from the table, which is plain data that policy, config and state read: the
//! handlers import the keystore, the key cache and the server state, none of which may
//! sit beneath the table. Each line names its route's path, and a line out of step with
//! the table does not compile.

use super::ctx::{Handler, RemoteHandler};
use super::{identity, key, log_stream, metrics, policy, sys};
use crate::routes::ROUTES;

/// The handler of each route, at the route's index in [`ROUTES`].
pub static HANDLERS: &[(&str, Handler)] = &[
    ("/version", sys::version),
    ("/v1/ready", sys::ready),
    ("/v1/status", sys::status),
    ("/v1/metrics", metrics::metrics),
    ("/v1/api", sys::api),
    ("/v1/key/create/", key::create),
    ("/v1/key/import/", key::import),
    ("/v1/key/describe/", key::describe),
    ("/v1/key/list/", key::list),
    ("/v1/key/delete/", key::delete),
    ("/v1/key/encrypt/", key::encrypt),
    ("/v1/key/generate/", key::generate),
    ("/v1/key/decrypt/", key::decrypt),
    ("/v1/key/bulk/decrypt/", key::bulk::bulk_decrypt),
    ("/v1/key/hmac/", key::hmac),
    ("/v1/key/rotate/", key::rotate),
    ("/v1/policy/describe/", policy::describe),
    ("/v1/policy/read/", policy::read),
    ("/v1/policy/list/", policy::list),
    ("/v1/identity/describe/", identity::describe),
    ("/v1/identity/list/", identity::list),
    ("/v1/identity/self/describe", identity::self_describe),
    ("/v1/log/error", log_stream::error),
    ("/v1/log/audit", log_stream::audit),
];

/// The handler of each route that may be made on an event loop although it waits for
/// CipherTrust (resident keys), at the route's index in [`ROUTES`].
pub static REMOTE: &[(&str, Option<RemoteHandler>)] = &[
    ("/version", None),
    ("/v1/ready", None),
    ("/v1/status", None),
    ("/v1/metrics", None),
    ("/v1/api", None),
    ("/v1/key/create/", None),
    ("/v1/key/import/", None),
    ("/v1/key/describe/", None),
    ("/v1/key/list/", None),
    ("/v1/key/delete/", None),
    ("/v1/key/encrypt/", Some(key::remote::encrypt)),
    ("/v1/key/generate/", Some(key::remote::generate)),
    ("/v1/key/decrypt/", Some(key::remote::decrypt)),
    ("/v1/key/bulk/decrypt/", None),
    ("/v1/key/hmac/", None),
    ("/v1/key/rotate/", None),
    ("/v1/policy/describe/", None),
    ("/v1/policy/read/", None),
    ("/v1/policy/list/", None),
    ("/v1/identity/describe/", None),
    ("/v1/identity/list/", None),
    ("/v1/identity/self/describe", None),
    ("/v1/log/error", None),
    ("/v1/log/audit", None),
];

// Every route has its handler, at its own index: checked when kes is compiled.
const _: () = {
    assert!(
        HANDLERS.len() == ROUTES.len(),
        "HANDLERS and ROUTES differ in length"
    );
    assert!(
        REMOTE.len() == ROUTES.len(),
        "REMOTE and ROUTES differ in length"
    );
    let mut i = 0;
    while i < ROUTES.len() {
        assert!(
            same(HANDLERS[i].0, ROUTES[i].path),
            "HANDLERS is out of step with ROUTES"
        );
        assert!(
            same(REMOTE[i].0, ROUTES[i].path),
            "REMOTE is out of step with ROUTES"
        );
        i += 1;
    }
};

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
