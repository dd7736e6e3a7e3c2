//! Key routes: create, import, describe, list, delete, and the cryptographic operations
//! MinIO calls on every encrypted PUT (generate) and GET (decrypt).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::ctx::{Ctx, Reply, errors, fail};
use crate::crypto::{Cipher, KeyVersion, random_dek};
use crate::http::Response;
use crate::keys::{Ik, IkUse, MasterKey, Warm};
use crate::keystore::KeyStoreError;
use crate::keystore::sealed::is_reserved_context;
use crate::names::{valid_name, valid_name_char};

/// Most ciphertexts one bulk decrypt may carry, as in the 2023 servers.
const BULK_MAX: usize = 1000;

/// The key name of the request, or the 400 answer for an invalid one.
fn key_name<'a>(ctx: &Ctx<'a>) -> Result<&'a str, Response> {
    if valid_name(ctx.resource) {
        Ok(ctx.resource)
    } else {
        Err(Response::error(
            400,
            &format!(
                "key name '{}' is empty, too long or contains invalid characters",
                ctx.resource
            ),
        ))
    }
}

/// Maps a keystore failure to the answer of a route whose generic message is `what`.
fn store_failure(err: KeyStoreError, what: &str) -> Response {
    match err {
        KeyStoreError::NotFound => fail(errors::KEY_NOT_FOUND),
        KeyStoreError::Exists => fail(errors::KEY_EXISTS),
        KeyStoreError::Unsupported(msg) => Response::error(501, &msg),
        other => {
            log::error!("{what}: {other}");
            Response::error(502, what)
        }
    }
}

fn load(ctx: &Ctx, name: &str) -> Result<MasterKey, Response> {
    // Taken for this request's resource, which `name` comes from.
    match &ctx.cached_key {
        Some(Warm::Held(key)) => return Ok(MasterKey::Local(key.clone())),
        Some(Warm::Resident { version, .. }) => {
            return Ok(MasterKey::Resident { version: *version });
        }
        None => {}
    }
    ctx.state
        .keys
        .get(name)
        .map_err(|e| store_failure(e, "failed to read key"))
}

/// A base64 JSON field as Go's `[]byte`: standard alphabet, padded; `null` is empty.
#[derive(Default)]
struct Bytes(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text: Option<Zeroizing<String>> = Option::<String>::deserialize(d)?.map(Zeroizing::new);
        match text {
            None => Ok(Bytes::default()),
            Some(text) => B64
                .decode(text.as_bytes())
                .map(|v| Bytes(Zeroizing::new(v)))
                .map_err(|_| serde::de::Error::custom("invalid base64")),
        }
    }
}

/// Decodes a JSON request body; anything else is a 400 with `message`.
fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8], message: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|_| Response::error(400, message))
}

/// Decodes a JSON object body. (serde would also build a struct from an array; Go
/// refuses that, and so do we.)
fn parse_object<'a, T: Deserialize<'a>>(body: &'a [u8], message: &str) -> Result<T, Response> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => parse_body(body, message),
        _ => Err(Response::error(400, message)),
    }
}

pub fn create(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    ctx.state
        .keys
        .create(
            name,
            || KeyVersion::generate(Cipher::default_for_cpu(), ctx.identity),
            ctx.live.config.oldest_reader,
        )
        .map_err(|e| store_failure(e, "failed to create key"))?;
    Ok(Response::ok())
}

/// Both import bodies: `{"key","cipher"}` (last release) and `{"bytes","algorithm"}` (2023).
#[derive(Deserialize)]
struct ImportRequest {
    #[serde(default)]
    key: Option<Bytes>,
    #[serde(default)]
    cipher: Option<String>,
    #[serde(default)]
    bytes: Option<Bytes>,
    #[serde(default)]
    algorithm: Option<String>,
}

pub fn import(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    // Refused before the body is looked at: the key bytes are not wanted here.
    ctx.state
        .keys
        .may_import()
        .map_err(|e| store_failure(e, "failed to import key"))?;
    let req: ImportRequest = parse_object(&ctx.req.body, "invalid import key request body")?;
    let (bytes, cipher) = match (req.key, req.bytes) {
        (Some(key), _) => {
            let text = req.cipher.unwrap_or_default();
            let Some(cipher) = Cipher::parse(&text) else {
                return Err(Response::error(
                    406,
                    &format!("algorithm '{text}' is not supported"),
                ));
            };
            if key.0.len() != 32 {
                return Err(Response::error(
                    406,
                    &format!("invalid key size for '{text}'"),
                ));
            }
            (key.0, cipher)
        }
        (None, Some(bytes)) => {
            // The 2023 body: a missing algorithm was "undefined"; such keys are AES256.
            let text = req.algorithm.unwrap_or_default();
            let cipher = match text.as_str() {
                "" | "undefined" => Cipher::Aes256,
                other => match Cipher::parse(other) {
                    Some(cipher) => cipher,
                    None => {
                        return Err(Response::error(
                            406,
                            &format!("algorithm '{other}' is not supported"),
                        ));
                    }
                },
            };
            if bytes.0.len() != 32 {
                return Err(Response::error(400, "invalid key size"));
            }
            (bytes.0, cipher)
        }
        (None, None) => return Err(Response::error(400, "invalid import key request body")),
    };
    let key = KeyVersion::import(&bytes, cipher, ctx.identity).map_err(|_| {
        Response::error(
            406,
            &format!("invalid key size for '{}'", cipher.api_name()),
        )
    })?;
    let reader = ctx.live.config.oldest_reader;
    if !key.encodes_losslessly_for(reader) {
        // v0.17 stores no algorithm: the key would come back as AES256, and whatever
        // the caller encrypted with it as ChaCha20 elsewhere would no longer decrypt.
        return Err(Response::error(
            406,
            &format!(
                "algorithm '{}' cannot be stored for compat.oldest_reader {reader}: keys of that generation have no algorithm",
                cipher.api_name()
            ),
        ));
    }
    ctx.state
        .keys
        .import(name, &key, reader)
        .map_err(|e| store_failure(e, "failed to create key"))?;
    Ok(Response::ok())
}

pub fn describe(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let key = match load(ctx, name)? {
        MasterKey::Local(key) => key,
        MasterKey::Resident { version } => {
            // No key id or creation facts: CipherTrust holds them, kes never reads the key.
            return Ok(Response::json(
                200,
                &json!({
                    "name": name,
                    "algorithm": Cipher::Aes256.legacy_name(),
                    "resident": true,
                    "version": version,
                }),
            ));
        }
    };
    // The 2023 algorithm names: both SDK generations accept them, while the 2023 SDK
    // rejects the last release's "AES256". A key stored without an algorithm has none
    // here either, as a 2023 node answers for it; both SDKs read the absent field as
    // their default.
    let mut body = json!({
        "name": name,
        "id": key.key_id(),
    });
    if !key.has_undefined_algorithm() {
        body["algorithm"] = json!(key.cipher().legacy_name());
    }
    body["created_at"] = json!(key.created_at_rfc3339());
    if !key.created_by().is_empty() {
        body["created_by"] = json!(key.created_by());
    }
    Ok(Response::json(200, &body))
}

/// Lists keys as NDJSON lines `{"name":…}`, all in one answer: the one listing format
/// both SDK generations read completely (the last release's paged JSON loses keys beyond
/// 1024, and the 2023 SDK reads it as a single empty name).
///
/// The pattern is a name prefix with an optional trailing `*` (`""` and `*` list all);
/// a pattern with other wildcards or an escape (`\`) is a 2023 glob.
pub fn list(ctx: &Ctx) -> Reply {
    let pattern = ctx.resource;
    const GLOB: [char; 4] = ['*', '?', '[', '\\'];
    let is_glob = pattern.trim_end_matches('*').contains(GLOB);
    let prefix = if is_glob {
        &pattern[..pattern.find(GLOB).unwrap_or(pattern.len())]
    } else {
        pattern.trim_end_matches('*')
    };
    // A glob must be well formed as Go's path.Match reads it: a Go server refuses a
    // malformed one, it must never list names under a meaning of kes's own.
    let valid = pattern.len() <= 80
        && prefix.bytes().all(valid_name_char)
        && if is_glob {
            crate::policy::check_syntax(pattern).is_ok()
        } else {
            pattern.strip_suffix('*').unwrap_or(pattern).len() == prefix.len()
        };
    if !valid {
        return Err(super::ctx::invalid_pattern(pattern));
    }
    let names = ctx
        .state
        .keys
        .list_all(prefix)
        .map_err(|e| store_failure(e, "failed to list keys"))?;
    Ok(super::ctx::ndjson(
        names
            .iter()
            .filter(|n| !is_glob || crate::policy::glob_match(pattern, n))
            .map(|name| json!({ "name": name })),
    ))
}

pub fn delete(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    ctx.state
        .keys
        .delete(name)
        .map_err(|e| store_failure(e, "failed to delete key"))?;
    Ok(Response::ok())
}

#[derive(Deserialize)]
struct EncryptRequest {
    #[serde(default)]
    plaintext: Bytes,
    #[serde(default)]
    context: Bytes,
}

pub fn encrypt(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let req: EncryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
    let (ciphertext, how) = seal(ctx, name, &req.plaintext.0, &req.context.0)?;
    Ok(audited(ciphertext_answer(&ciphertext), how))
}

fn ciphertext_answer(ciphertext: &[u8]) -> Response {
    Response::json(200, &json!({ "ciphertext": B64.encode(ciphertext) }))
}

/// The audit event of a resident-key request served under an intermediate key says how
/// the key was had (docs/metrics.md, "Audit events").
fn audited(mut response: Response, how: Option<IkUse>) -> Response {
    response.audit_extra = how.map(|how| ("intermediate_key", how.audit_name()));
    response
}

/// The intermediate key taken for this request on an event loop, if any.
fn warm_ik<'a>(ctx: &'a Ctx) -> Option<&'a Arc<Ik>> {
    match &ctx.cached_key {
        Some(Warm::Resident { ik, .. }) => Some(ik),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
struct GenerateRequest {
    #[serde(default)]
    context: Bytes,
}

pub fn generate(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let req = generate_request(ctx)?;
    let dek = random_dek();
    let (ciphertext, how) = seal(ctx, name, dek.as_ref(), &req.context.0)?;
    Ok(audited(data_key_answer(dek.as_ref(), &ciphertext), how))
}

/// The body is optional (the last release reads it only when one is sent).
fn generate_request(ctx: &Ctx) -> Result<GenerateRequest, Response> {
    if ctx.req.body.iter().all(u8::is_ascii_whitespace) {
        Ok(GenerateRequest::default())
    } else {
        parse_object(&ctx.req.body, "invalid request body")
    }
}

fn data_key_answer(dek: &[u8], ciphertext: &[u8]) -> Response {
    let plaintext = Zeroizing::new(B64.encode(dek));
    let ciphertext = B64.encode(ciphertext);
    Response::json(
        200,
        &DataKey {
            plaintext: &plaintext,
            ciphertext: &ciphertext,
        },
    )
}

/// Answers that carry secrets are serialized from borrowed, zeroized strings, so no
/// unzeroized copy (as a `serde_json::Value` would make) is left behind.
#[derive(serde::Serialize)]
struct Plaintext<'a> {
    plaintext: &'a str,
}

#[derive(serde::Serialize)]
struct DataKey<'a> {
    plaintext: &'a str,
    ciphertext: &'a str,
}

#[derive(Deserialize)]
struct DecryptRequest {
    #[serde(default)]
    ciphertext: Bytes,
    #[serde(default)]
    context: Bytes,
}

pub fn decrypt(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let req: DecryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
    let key = load(ctx, name)?;
    let (plaintext, how) = open(ctx, name, &key, &req)?;
    Ok(audited(plaintext_answer(&plaintext), how))
}

fn plaintext_answer(plaintext: &[u8]) -> Response {
    let encoded = Zeroizing::new(B64.encode(plaintext));
    Response::json(
        200,
        &Plaintext {
            plaintext: &encoded,
        },
    )
}

/// What one decrypt or encrypt answers with, and how a resident key's intermediate key
/// was had (`None`: none was used).
type Done = (Zeroizing<Vec<u8>>, Option<IkUse>);

/// Encrypts with key `name`: here with a key kes holds (in the form
/// `compat.oldest_reader` reads); with a resident one under an intermediate key or
/// inside the keystore (an envelope either way, see `crate::keystore::sealed`).
fn seal(
    ctx: &Ctx,
    name: &str,
    plaintext: &[u8],
    context: &[u8],
) -> Result<(Vec<u8>, Option<IkUse>), Response> {
    match load(ctx, name)? {
        MasterKey::Local(key) => Ok((
            key.encrypt_for(ctx.live.config.oldest_reader, plaintext, context),
            None,
        )),
        MasterKey::Resident { version } => {
            if is_reserved_context(context) {
                return Err(reserved_context());
            }
            ctx.state
                .keys
                .seal_resident(name, version, plaintext, context, warm_ik(ctx))
                .map_err(|e| store_failure(e, "failed to encrypt"))
        }
    }
}

/// The answer to an encrypt whose context starts like the associated data of an
/// intermediate key's wrap: such a ciphertext could pass for a wrapped intermediate key.
fn reserved_context() -> Response {
    Response::error(
        400,
        "context is reserved: a context starting with the bytes C7 4B 52 49 4B 01 names kes's intermediate keys",
    )
}

/// The answer to a failed encrypt with resident key `name` made outside `Keys`.
fn seal_failure(state: &crate::state::State, name: &str, e: KeyStoreError) -> Response {
    if e == KeyStoreError::NotFound {
        // Deleted in CipherTrust behind kes's back: the next request looks again.
        state.keys.forget(name);
    }
    store_failure(e, "failed to encrypt")
}

/// Decrypts one ciphertext with `key`; a ciphertext the key did not make, or made with
/// another context, is the SDKs' "not authentic" error.
fn open(ctx: &Ctx, name: &str, key: &MasterKey, req: &DecryptRequest) -> Result<Done, Response> {
    let (ciphertext, context) = (&req.ciphertext.0, &req.context.0);
    match key {
        MasterKey::Local(key) => key
            .decrypt(ciphertext, context)
            .map(|plaintext| (plaintext, None))
            .map_err(|_| fail(errors::DECRYPT)),
        MasterKey::Resident { .. } => {
            let (plaintext, how) = ctx
                .state
                .keys
                .open_resident(name, ciphertext, context, warm_ik(ctx))
                .map_err(|e| store_failure(e, "failed to decrypt"))?;
            plaintext
                .map(|plaintext| (plaintext, how))
                .ok_or_else(|| fail(errors::DECRYPT))
        }
    }
}

/// Adds a version to a resident key (kes's own route: no KES release rotates keys).
pub fn rotate(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let version = ctx
        .state
        .keys
        .rotate(name)
        .map_err(|e| store_failure(e, "failed to rotate key"))?;
    Ok(Response::json(
        200,
        &json!({ "name": name, "version": version }),
    ))
}

#[derive(Deserialize)]
struct HmacRequest {
    #[serde(default)]
    message: Bytes,
}

pub fn hmac(ctx: &Ctx) -> Reply {
    let name = key_name(ctx)?;
    let req: HmacRequest = parse_object(&ctx.req.body, "invalid request body")?;
    let key = match load(ctx, name)? {
        MasterKey::Local(key) => key,
        MasterKey::Resident { .. } => {
            return Err(Response::error(
                501,
                "HMAC is not supported for resident keys",
            ));
        }
    };
    let sum = key
        .hmac(&req.message.0)
        .ok_or_else(|| Response::error(409, "key does not support HMAC"))?;
    Ok(Response::json(200, &json!({ "hmac": B64.encode(sum) })))
}

/// Decodes `body` as each key route's request body, in the order import, encrypt,
/// generate, decrypt, hmac, bulk decrypt, and says which accepted it. For the fuzzer
/// (request_bodies: no body may panic a decoder) and the test that pins what each
/// route accepts.
#[doc(hidden)]
pub fn decode_every_body(body: &[u8]) -> [bool; 6] {
    [
        parse_object::<ImportRequest>(body, "").is_ok(),
        parse_object::<EncryptRequest>(body, "").is_ok(),
        parse_object::<GenerateRequest>(body, "").is_ok(),
        parse_object::<DecryptRequest>(body, "").is_ok(),
        parse_object::<HmacRequest>(body, "").is_ok(),
        parse_body::<Vec<DecryptRequest>>(body, "").is_ok(),
    ]
}

pub mod bulk;
pub mod remote;
#[cfg(test)]
mod tests;
