//! The simulator's keys (`/api/v1/vault/keys2`) and crypto endpoints
//! (`/api/v1/crypto/{encrypt,decrypt}`), for resident master keys.
//!
//! Like CipherTrust Manager: every version of a key is an object of its own (own id, same
//! name); a lookup by name answers the newest; a delete by name removes the newest; an
//! export of an unexportable key is refused. Encrypt and decrypt are real AES-256-GCM
//! with a 12-byte IV the simulator picks, so a wrong AAD, version or tag fails (400
//! `NCERRCryptoOperationFailed`). The crypto endpoints refuse requests without
//! `Accept: application/json`. A listing filters by `name` (a pattern, as CipherTrust's).
//!
//! **Strict mode** accepts only the forms public clients proven against a live
//! CipherTrust Manager use (docs/ciphertrust.md, fidelity table), and behaves as the
//! evidence says where a lenient stand-in could hide a mistake:
//! - decrypt is addressed by a version's id only (no `type`); by name it is refused;
//! - a rotation is addressed by name (`/versions/?type=name`) only;
//! - a lookup or listing by name also finds other object types of that name (secrets,
//!   as "Opaque Object");
//! - a delete by name removes the newest version only (as in both modes).
//!
//! [`CryptoQuirk`]s make it answer in other plausible ways, or refuse a form kes relies
//! on, for the tests of kes's robustness and of `kes keystore check`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use std::collections::HashMap;

use super::{Reply, Route, percent_decode};

/// Other plausible CipherTrust answers, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoQuirk {
    None,
    /// A decrypt by name ignores `version` and uses the newest version (what kes must not
    /// rely on: no public source shows the version honoured there).
    NameDecryptIgnoresVersion,
    /// Encrypt answers lack `version` (a form kes relies on fails).
    EncryptWithoutVersion,
    /// Encrypt refuses the `tag_len` field with 400.
    RefuseTagLen,
    /// A failed GCM check is answered 500 (still `NCERRCryptoOperationFailed`).
    TagFailureAs500,
}

/// Answers a request on one of the key or crypto routes.
pub fn dispatch(
    keys: &mut Keys2,
    route: Route,
    path: &str,
    query: &str,
    body: &[u8],
    secrets: &HashMap<String, u64>,
) -> Reply {
    let element = |suffix: &str| {
        let rest = path
            .strip_prefix("/api/v1/vault/keys2/")
            .unwrap_or_default();
        percent_decode(rest.strip_suffix(suffix).unwrap_or(rest))
    };
    match route {
        Route::KeyCreate => {
            let name = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_string))
                .unwrap_or_default();
            create(keys, secrets.contains_key(&name), body)
        }
        Route::KeyGet => get(keys, &element(""), query, secrets),
        Route::KeyList => list(keys, query, secrets),
        Route::KeyVersion => {
            let element = element("/versions/");
            let element = if element.ends_with("/versions") {
                element.trim_end_matches("/versions").to_string()
            } else {
                element
            };
            new_version(keys, &element, query)
        }
        Route::KeyDelete => delete(keys, &element(""), query),
        Route::KeyExport => export(keys, &element("/export"), query),
        Route::Encrypt => encrypt(keys, body),
        Route::Decrypt => decrypt(keys, body),
        _ => unreachable!("not a key route: {route:?}"),
    }
}

/// One version of a key.
#[derive(Clone)]
pub struct KeyObject {
    pub id: String,
    pub name: String,
    pub version: u32,
    pub unexportable: bool,
    pub usage_mask: u64,
    material: [u8; 32],
}

pub struct Keys2 {
    /// In creation order.
    pub objects: Vec<KeyObject>,
    next_id: u64,
    /// Only the proven forms (module docs).
    pub strict: bool,
    pub quirk: CryptoQuirk,
}

impl Default for Keys2 {
    fn default() -> Self {
        Keys2 {
            objects: Vec::new(),
            next_id: 0,
            strict: false,
            quirk: CryptoQuirk::None,
        }
    }
}

impl Keys2 {
    fn newest(&self, name: &str) -> Option<&KeyObject> {
        self.objects
            .iter()
            .filter(|k| k.name == name)
            .max_by_key(|k| k.version)
    }

    /// A key by name (`type=name`: the newest version) or else by id.
    fn find(&self, element: &str, query: &str) -> Option<&KeyObject> {
        if by_name(query) {
            self.newest(element)
        } else {
            self.objects.iter().find(|k| k.id == element)
        }
    }

    fn add(&mut self, name: &str, version: u32, unexportable: bool, usage_mask: u64) -> KeyObject {
        self.next_id += 1;
        let mut material = [0u8; 32];
        getrandom::getrandom(&mut material).unwrap();
        // Ids look like CipherTrust's: 64 hex digits.
        let object = KeyObject {
            id: format!("{:056x}{:08x}", 0x5eed_u64, self.next_id),
            name: name.to_string(),
            version,
            unexportable,
            usage_mask,
            material,
        };
        self.objects.push(object.clone());
        object
    }

    /// Names of all keys, one entry per version.
    pub fn count_versions(&self, name: &str) -> usize {
        self.objects.iter().filter(|k| k.name == name).count()
    }
}

fn by_name(query: &str) -> bool {
    query.split('&').any(|p| p == "type=name")
}

/// A query parameter's (percent-decoded) value.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .map(percent_decode)
}

/// CipherTrust's name filter: a pattern with `*` and `?`.
fn name_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') => (0..=t.len()).any(|k| go(&p[1..], &t[k..])),
            Some(b'?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// A secret as a keys2 lookup or listing shows it in strict mode.
fn describe_secret(name: &str, id: u64) -> Value {
    json!({
        "id": format!("{:056x}{id:08x}", 0x5ec_u64),
        "name": name,
        "version": 0,
        "objectType": "Opaque Object",
        "algorithm": "OPAQUE",
        "state": "Active",
    })
}

/// An error with CipherTrust's fields.
pub fn error(status: u16, code: u32, desc: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "code": code, "codeDesc": desc, "message": message }),
    )
}

fn describe(key: &KeyObject) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "version": key.version,
        "objectType": "Symmetric Key",
        "algorithm": "AES",
        "size": 256,
        "usageMask": key.usage_mask,
        "unexportable": key.unexportable,
        "state": "Active",
    })
}

fn create(keys: &mut Keys2, secret_exists: bool, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(400, 3, "NCERRBadRequest", "request body is not JSON");
    };
    let Some(name) = request["name"].as_str().filter(|n| !n.is_empty()) else {
        return error(400, 3, "NCERRBadRequest", "name is required");
    };
    if request["algorithm"]
        .as_str()
        .map(str::to_ascii_uppercase)
        .as_deref()
        != Some("AES")
        || request["size"].as_u64() != Some(256)
    {
        return error(400, 3, "NCERRBadRequest", "only AES 256 keys are simulated");
    }
    if keys.newest(name).is_some() || secret_exists {
        return error(
            409,
            4,
            "NCERRResourceAlreadyExists",
            "a key with this name exists",
        );
    }
    let usage_mask = request["usageMask"].as_u64().unwrap_or(0);
    let unexportable = request["unexportable"].as_bool().unwrap_or(false);
    let key = keys.add(name, 0, unexportable, usage_mask);
    Reply::json(201, describe(&key))
}

fn get(keys: &Keys2, element: &str, query: &str, secrets: &HashMap<String, u64>) -> Reply {
    match keys.find(element, query) {
        Some(key) => Reply::json(200, describe(key)),
        None => match secrets.get(element) {
            Some(&id) if keys.strict && by_name(query) => {
                Reply::json(200, describe_secret(element, id))
            }
            _ => error(404, 5, "NCERRResourceNotFound", "key not found"),
        },
    }
}

fn list(keys: &Keys2, query: &str, secrets: &HashMap<String, u64>) -> Reply {
    let (skip, limit) = super::paging(query);
    let filter = param(query, "name");
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name_matches(f, name));
    let mut all: Vec<Value> = keys
        .objects
        .iter()
        .filter(|k| wanted(&k.name))
        .map(describe)
        .collect();
    if keys.strict {
        let mut names: Vec<(&String, &u64)> = secrets.iter().filter(|(n, _)| wanted(n)).collect();
        names.sort();
        all.extend(
            names
                .into_iter()
                .map(|(name, &id)| describe_secret(name, id)),
        );
    }
    let total = all.len();
    let resources: Vec<Value> = all.into_iter().skip(skip).take(limit).collect();
    // An empty listing has `resources: null`, as CipherTrust's may.
    let resources = if total == 0 {
        Value::Null
    } else {
        Value::from(resources)
    };
    Reply::json(
        200,
        json!({ "skip": skip, "limit": limit, "total": total, "resources": resources }),
    )
}

/// `POST /api/v1/vault/keys2/{name}/versions/?type=name`, or (not in strict mode) by id.
fn new_version(keys: &mut Keys2, element: &str, query: &str) -> Reply {
    if keys.strict && !by_name(query) {
        return error(
            400,
            3,
            "NCERRBadRequest",
            "strict stand-in: rotate by name (?type=name) only",
        );
    }
    let Some(key) = keys.find(element, query).cloned() else {
        return error(404, 5, "NCERRResourceNotFound", "key not found");
    };
    let newest = keys.newest(&key.name).map_or(0, |k| k.version);
    let added = keys.add(&key.name, newest + 1, key.unexportable, key.usage_mask);
    Reply::json(201, describe(&added))
}

/// Deletes the newest version of a key by name, or one object by id.
fn delete(keys: &mut Keys2, element: &str, query: &str) -> Reply {
    let Some(id) = keys.find(element, query).map(|k| k.id.clone()) else {
        return error(404, 5, "NCERRResourceNotFound", "key not found");
    };
    keys.objects.retain(|k| k.id != id);
    Reply {
        status: 204,
        content_type: "",
        body: Vec::new(),
    }
}

/// Any export of a key: refused when it is unexportable.
fn export(keys: &Keys2, element: &str, query: &str) -> Reply {
    match keys.find(element, query) {
        None => error(404, 5, "NCERRResourceNotFound", "key not found"),
        Some(key) if key.unexportable => {
            error(403, 15, "NCERRNotExportable", "the key is not exportable")
        }
        Some(key) => Reply::json(
            200,
            json!({ "id": key.id, "name": key.name, "material": hex(&key.material) }),
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn field(request: &Value, name: &str) -> Result<Vec<u8>, Reply> {
    match request[name].as_str() {
        None => Ok(Vec::new()),
        Some(text) => B64
            .decode(text)
            .map_err(|_| error(400, 3, "NCERRBadRequest", &format!("{name} is not base64"))),
    }
}

/// The key a crypto request names, with its own checks.
fn crypto_key<'a>(keys: &'a Keys2, request: &Value, decrypt: bool) -> Result<&'a KeyObject, Reply> {
    let version = request["version"].as_u64().map(|v| v as u32);
    let Some(id) = request["id"].as_str() else {
        return Err(error(400, 3, "NCERRBadRequest", "id is required"));
    };
    if request["mode"].as_str() != Some("gcm") {
        return Err(error(
            400,
            3,
            "NCERRBadRequest",
            "only mode gcm is simulated",
        ));
    }
    let by_name = request["type"].as_str() == Some("name");
    if keys.strict && decrypt && !request["type"].is_null() {
        return Err(error(
            400,
            3,
            "NCERRBadRequest",
            "strict stand-in: decrypt by a version's id only, without type",
        ));
    }
    let key = if by_name {
        match version {
            Some(_) if keys.quirk == CryptoQuirk::NameDecryptIgnoresVersion => keys.newest(id),
            None => keys.newest(id),
            Some(v) => keys.objects.iter().find(|k| k.name == id && k.version == v),
        }
    } else {
        keys.objects.iter().find(|k| k.id == id)
    };
    key.ok_or_else(|| error(404, 5, "NCERRResourceNotFound", "key or version not found"))
}

fn parse(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body)
        .map_err(|_| error(400, 3, "NCERRBadRequest", "request body is not JSON"))
}

fn encrypt(keys: &Keys2, body: &[u8]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let request = parse(body)?;
        let key = crypto_key(keys, &request, false)?;
        if key.usage_mask & 4 == 0 {
            return Err(error(
                403,
                16,
                "NCERRKeyUsageNotAllowed",
                "key may not encrypt",
            ));
        }
        if !request["tag_len"].is_null() {
            if keys.quirk == CryptoQuirk::RefuseTagLen {
                return Err(error(
                    400,
                    3,
                    "NCERRInvalidParamValue",
                    "unknown field tag_len",
                ));
            }
            if request["tag_len"].as_u64() != Some(16) {
                return Err(error(
                    400,
                    3,
                    "NCERRBadRequest",
                    "only 16-byte tags are simulated",
                ));
            }
        }
        let plaintext = field(&request, "plaintext")?;
        let aad = field(&request, "aad")?;
        let mut iv = [0u8; 12];
        getrandom::getrandom(&mut iv).unwrap();
        let cipher = Aes256Gcm::new_from_slice(&key.material).unwrap();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
        let mut answer = json!({
            "id": key.id,
            "version": key.version,
            "mode": "gcm",
            "iv": B64.encode(iv),
            "tag": B64.encode(tag),
            "ciphertext": B64.encode(ciphertext),
        });
        if keys.quirk == CryptoQuirk::EncryptWithoutVersion {
            answer.as_object_mut().unwrap().remove("version");
        }
        Ok(Reply::json(200, answer))
    };
    run().unwrap_or_else(|refusal| refusal)
}

fn decrypt(keys: &Keys2, body: &[u8]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let request = parse(body)?;
        let key = crypto_key(keys, &request, true)?;
        if key.usage_mask & 8 == 0 {
            return Err(error(
                403,
                16,
                "NCERRKeyUsageNotAllowed",
                "key may not decrypt",
            ));
        }
        let iv = field(&request, "iv")?;
        let mut sealed = field(&request, "ciphertext")?;
        sealed.extend_from_slice(&field(&request, "tag")?);
        let aad = field(&request, "aad")?;
        if iv.len() != 12 {
            return Err(error(400, 3, "NCERRBadRequest", "iv must be 12 bytes"));
        }
        let cipher = Aes256Gcm::new_from_slice(&key.material).unwrap();
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                let status = if keys.quirk == CryptoQuirk::TagFailureAs500 {
                    500
                } else {
                    400
                };
                error(
                    status,
                    106,
                    "NCERRCryptoOperationFailed: Cryptographic operation failed in cipher operation",
                    "AEAD decrypt final failed",
                )
            })?;
        Ok(Reply::json(
            200,
            json!({ "plaintext": B64.encode(plaintext) }),
        ))
    };
    run().unwrap_or_else(|refusal| refusal)
}
