//! Which CipherTrust call is which, and what the calls took: a latency histogram and the
//! error answers by status, per route, for `/v1/metrics` (docs/metrics.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::observe::{CALL_BUCKETS, CallStatsSnapshot, RouteCalls};

/// One kind of CipherTrust call. Its label names it in metrics; its path and the
/// permission it needs name it in error messages (docs/ciphertrust.md, "Permissions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmRoute {
    Token,
    Probe,
    SecretCreate,
    SecretExport,
    SecretRead,
    SecretDelete,
    SecretList,
    KeyCreate,
    KeyRead,
    KeyList,
    KeyRotate,
    KeyDelete,
    Encrypt,
    Decrypt,
}

impl CmRoute {
    pub(super) const ALL: [CmRoute; 14] = [
        CmRoute::Token,
        CmRoute::Probe,
        CmRoute::SecretCreate,
        CmRoute::SecretExport,
        CmRoute::SecretRead,
        CmRoute::SecretDelete,
        CmRoute::SecretList,
        CmRoute::KeyCreate,
        CmRoute::KeyRead,
        CmRoute::KeyList,
        CmRoute::KeyRotate,
        CmRoute::KeyDelete,
        CmRoute::Encrypt,
        CmRoute::Decrypt,
    ];

    /// The `route` label of the metrics.
    pub(super) fn label(self) -> &'static str {
        match self {
            CmRoute::Token => "token",
            CmRoute::Probe => "probe",
            CmRoute::SecretCreate => "secret_create",
            CmRoute::SecretExport => "secret_export",
            CmRoute::SecretRead => "secret_read",
            CmRoute::SecretDelete => "secret_delete",
            CmRoute::SecretList => "secret_list",
            CmRoute::KeyCreate => "key_create",
            CmRoute::KeyRead => "key_read",
            CmRoute::KeyList => "key_list",
            CmRoute::KeyRotate => "key_rotate",
            CmRoute::KeyDelete => "key_delete",
            CmRoute::Encrypt => "encrypt",
            CmRoute::Decrypt => "decrypt",
        }
    }

    /// Method and path as CipherTrust's API documents them.
    pub(super) fn request_line(self) -> &'static str {
        match self {
            CmRoute::Token => "POST /api/v1/auth/tokens",
            CmRoute::Probe => "GET /",
            CmRoute::SecretCreate => "POST /api/v1/vault/secrets",
            CmRoute::SecretExport => "POST /api/v1/vault/secrets/{name}/export?type=name",
            CmRoute::SecretRead => "GET /api/v1/vault/secrets/{name}?type=name",
            CmRoute::SecretDelete => "DELETE /api/v1/vault/secrets/{name}?type=name",
            CmRoute::SecretList => "GET /api/v1/vault/secrets",
            CmRoute::KeyCreate => "POST /api/v1/vault/keys2",
            CmRoute::KeyRead => "GET /api/v1/vault/keys2/{name}?type=name",
            CmRoute::KeyList => "GET /api/v1/vault/keys2",
            CmRoute::KeyRotate => "POST /api/v1/vault/keys2/{name}/versions/?type=name",
            CmRoute::KeyDelete => "DELETE /api/v1/vault/keys2/{id}?type=id",
            CmRoute::Encrypt => "POST /api/v1/crypto/encrypt",
            CmRoute::Decrypt => "POST /api/v1/crypto/decrypt",
        }
    }

    /// What CipherTrust's user needs for this call, for the error log when CipherTrust
    /// refuses it (403). Resource names and actions: docs/ciphertrust.md, "Permissions".
    pub(super) fn permission(self) -> &'static str {
        match self {
            CmRoute::Token => {
                "a valid refresh token (credentials.token) of a user of credentials.domain"
            }
            CmRoute::Probe => "nothing (the probe sends no token)",
            CmRoute::SecretCreate => "CreateKey on kylo:kylo:vault:secrets:*",
            CmRoute::SecretExport => "ExportKey and ReadKey on kylo:kylo:vault:secrets:<name>*",
            CmRoute::SecretRead | CmRoute::SecretList => {
                "ReadKey on kylo:kylo:vault:secrets:<name>*"
            }
            CmRoute::SecretDelete => "DeleteKey on kylo:kylo:vault:secrets:<name>*",
            CmRoute::KeyCreate => "CreateKey on kylo:kylo:vault:keys:*",
            CmRoute::KeyRead | CmRoute::KeyList => "ReadKey on kylo:kylo:vault:keys:<name>*",
            CmRoute::KeyRotate => "CreateKey and ReadKey on kylo:kylo:vault:keys:<name>*",
            CmRoute::KeyDelete => "DeleteKey and ReadKey on kylo:kylo:vault:keys:<name>*",
            CmRoute::Encrypt => {
                "EncryptWithKey, UseKey and ReadKey on kylo:kylo:vault:keys:<name>*"
            }
            CmRoute::Decrypt => {
                "DecryptWithKey, UseKey and ReadKey on kylo:kylo:vault:keys:<name>*"
            }
        }
    }
}

/// Error statuses counted one by one: 400..=599. Anything else (and a call that got no
/// answer) is counted under its own label.
const FIRST_STATUS: u16 = 400;
const STATUSES: usize = 200;

/// What one route's calls took.
struct RouteCounters {
    buckets: [AtomicU64; CALL_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Answers with status 400..=599.
    errors: [AtomicU64; STATUSES],
    /// Calls that got no answer (network, TLS, timeout).
    no_answer: AtomicU64,
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            no_answer: AtomicU64::new(0),
        }
    }
}

/// Every route's counters.
pub(super) struct CallStats {
    routes: [RouteCounters; CmRoute::ALL.len()],
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            routes: std::array::from_fn(|_| RouteCounters::default()),
        }
    }
}

impl CallStats {
    /// Counts one HTTP exchange (each attempt of a retried call is one).
    /// `status` is the answer's, `None` when the call got no answer.
    pub(super) fn record(&self, route: CmRoute, took: Duration, status: Option<u16>) {
        let counters = &self.routes[route as usize];
        let secs = took.as_secs_f64();
        if let Some(i) = CALL_BUCKETS.iter().position(|bound| secs <= *bound) {
            counters.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        counters.count.fetch_add(1, Ordering::Relaxed);
        counters
            .sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        match status {
            Some(status) => {
                if let Some(slot) = status
                    .checked_sub(FIRST_STATUS)
                    .and_then(|i| counters.errors.get(usize::from(i)))
                {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                counters.no_answer.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters now, routes that were never called left out.
    pub(super) fn snapshot(&self) -> CallStatsSnapshot {
        let routes = CmRoute::ALL
            .iter()
            .zip(&self.routes)
            .filter(|(_, counters)| counters.count.load(Ordering::Relaxed) > 0)
            .map(|(route, counters)| {
                let mut errors: Vec<(String, u64)> = counters
                    .errors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| {
                        let n = n.load(Ordering::Relaxed);
                        (n > 0).then(|| ((FIRST_STATUS + i as u16).to_string(), n))
                    })
                    .collect();
                let no_answer = counters.no_answer.load(Ordering::Relaxed);
                if no_answer > 0 {
                    errors.push(("none".to_string(), no_answer));
                }
                RouteCalls {
                    route: route.label(),
                    buckets: counters
                        .buckets
                        .iter()
                        .map(|n| n.load(Ordering::Relaxed))
                        .collect(),
                    count: counters.count.load(Ordering::Relaxed),
                    sum: Duration::from_nanos(counters.sum_nanos.load(Ordering::Relaxed)),
                    errors,
                }
            })
            .collect();
        CallStatsSnapshot { routes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_indexed_in_order() {
        for (i, route) in CmRoute::ALL.iter().enumerate() {
            assert_eq!(*route as usize, i);
        }
    }
}
