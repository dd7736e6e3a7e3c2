//! Which key requests an event loop may answer at once (the server's hook,
//! `answerable_without_waiting`): those whose master key is in memory, taken now so that
//! the handler cannot find it gone. A key kes holds serves every key route; a resident
//! key serves generate and encrypt when the intermediate key for new data keys is kept,
//! and decrypt when the intermediate key of the request's ciphertext is (docs/ARCHITECTURE.md).
//! Everything else, and every request that needs a keystore call, goes to the pool.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::keys::Warm;
use crate::routes::Route;
use crate::state::State;

/// The master key `name` of a request on key route `route` with `body`, if the request
/// can be answered without waiting.
pub fn warm_key(state: &State, route: &Route, name: &str, body: &[u8]) -> Option<Warm> {
    let keys = &state.keys;
    match route.path {
        "/v1/key/generate/" | "/v1/key/encrypt/" => keys.warm_seal(name),
        "/v1/key/decrypt/" => keys.warm_open(name, || ciphertext_of(body)),
        _ => keys.get_cached(name).map(Warm::Held),
    }
}

/// The ciphertext of a decrypt body, if it has a well-formed one (else the handler, on
/// the pool, answers what is wrong with the body).
fn ciphertext_of(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Ciphertext<'a> {
        #[serde(borrow, default)]
        ciphertext: Option<&'a str>,
    }
    let parsed: Ciphertext = serde_json::from_slice(body).ok()?;
    B64.decode(parsed.ciphertext?).ok()
}
