//! Key routes. (Being written: they answer 501 until the crypto layer lands.)

use super::Ctx;
use crate::http::Response;

fn not_yet(_: &Ctx) -> Response {
    Response::error(501, "not implemented")
}

pub fn create(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn import(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn describe(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn list(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn delete(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn encrypt(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn generate(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn decrypt(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn bulk_decrypt(ctx: &Ctx) -> Response {
    not_yet(ctx)
}
pub fn hmac(ctx: &Ctx) -> Response {
    not_yet(ctx)
}

/// Creates `name` unless it exists (the `keys:` section of the config).
pub fn ensure_key(_keystore: &dyn crate::keystore::KeyStore, _name: &str) -> Result<(), String> {
    Err("key creation is not available in this build yet".into())
}
