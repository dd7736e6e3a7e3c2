//! Bulk decrypt: many ciphertexts of one key in one request (the 2023 servers' route,
//! which 2023 MinIO uses). With a resident key each is a keystore call, several at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::{BULK_MAX, DecryptRequest, Done, Plaintext, audited, key_name, load, open, parse_body};
use crate::api::ctx::{Ctx, Reply};
use crate::http::Response;
use crate::keys::MasterKey;

pub fn bulk_decrypt(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let requests: Vec<DecryptRequest> = parse_body(&ctx.req.body, "invalid request body")?;
    if requests.len() > BULK_MAX {
        return Err(Response::error(400, "too many ciphertexts"));
    }
    let key = load(ctx, name)?;
    let plaintexts = match key {
        MasterKey::Local(_) => open_all(ctx, name, &key, &requests)?,
        MasterKey::Resident { .. } => open_in_parallel(ctx, name, &key, &requests)?,
    };
    // The audit event names the most a keystore was asked for: an unwrap over none.
    let how = plaintexts.iter().filter_map(|(_, how)| *how).max();
    let plaintexts: Vec<_> = plaintexts
        .iter()
        .map(|(p, _)| Zeroizing::new(B64.encode(p.as_slice())))
        .collect();
    let body: Vec<_> = plaintexts
        .iter()
        .map(|p| Plaintext { plaintext: p })
        .collect();
    Ok(audited(Response::json(200, &body), how))
}

/// Threads that bulk decrypts of resident keys run besides their own pool workers,
/// across all requests at once.
static BULK_HELPERS: AtomicUsize = AtomicUsize::new(0);

/// Helper threads taken from [`BULK_HELPERS`]; given back when dropped.
pub(super) struct Helpers(pub(super) usize);

impl Helpers {
    /// Up to `want` helpers, while all bulk decrypts together use at most `limit`.
    pub(super) fn take(want: usize, limit: usize) -> Helpers {
        let mut taken = 0;
        let _ = BULK_HELPERS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            taken = want.min(limit.saturating_sub(used));
            Some(used + taken)
        });
        Helpers(taken)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        BULK_HELPERS.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// A bulk decrypt with a resident key: one keystore call per ciphertext, several at once.
/// The pool worker serving the request takes a share itself, and helper threads take the
/// others; all bulk decrypts together use at most as many helpers as the pool has
/// workers, so that a burst of bulk requests cannot multiply the threads that wait for
/// CipherTrust (with none left, the worker does all the calls itself).
fn open_in_parallel(
    ctx: &Ctx,
    name: &str,
    key: &MasterKey,
    requests: &[DecryptRequest],
) -> Result<Vec<Done>, Response> {
    let workers = ctx.state.gauges.workers.load(Ordering::Relaxed).max(1);
    let helpers = Helpers::take(requests.len().saturating_sub(1), workers);
    let chunk = requests.len().div_ceil(helpers.0 + 1).max(1);
    std::thread::scope(|scope| {
        let mut parts = requests.chunks(chunk);
        let mine = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || open_all(ctx, name, key, part)))
            .collect();
        let mut all = open_all(ctx, name, key, mine)?;
        for other in others {
            match other.join() {
                Ok(opened) => all.extend(opened?),
                Err(_) => return Err(Response::error(500, "failed to decrypt")),
            }
        }
        Ok(all)
    })
}

fn open_all(
    ctx: &Ctx,
    name: &str,
    key: &MasterKey,
    requests: &[DecryptRequest],
) -> Result<Vec<Done>, Response> {
    requests
        .iter()
        .map(|req| open(ctx, name, key, req))
        .collect()
}
