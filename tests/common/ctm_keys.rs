//! The simulator's keys (`/api/v1/vault/keys2`) and crypto endpoints
//! (`/api/v1/crypto/{encrypt,decrypt}`), for resident master keys.
//!
//! Like CipherTrust Manager: every version of a key is an object of its own (own id, same
//! name); a lookup by name answers the newest; a delete by name removes the newest; an
//! export of an unexportable key is refused. Encrypt and decrypt are real AES-256-GCM
//! with a 12-byte IV the simulator picks, so a wrong AAD, version or tag fails. The crypto
//! endpoints refuse requests without `Accept: application/json`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{Reply, Route, percent_decode};

/// Answers a request on one of the key or crypto routes.
pub fn dispatch(
    keys: &mut Keys2,
    route: Route,
    path: &str,
    query: &str,
    body: &[u8],
    secret_exists: impl Fn(&str) -> bool,
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
            create(keys, secret_exists(&name), body)
        }
        Route::KeyGet => get(keys, &element(""), query),
        Route::KeyList => list(keys, query),
        Route::KeyVersion => new_version(keys, &element("/versions")),
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

#[derive(Default)]
pub struct Keys2 {
    /// In creation order.
    pub objects: Vec<KeyObject>,
    next_id: u64,
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
        let object = KeyObject {
            id: format!("key-{:08x}", self.next_id),
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

fn get(keys: &Keys2, element: &str, query: &str) -> Reply {
    match keys.find(element, query) {
        Some(key) => Reply::json(200, describe(key)),
        None => error(404, 5, "NCERRResourceNotFound", "key not found"),
    }
}

fn list(keys: &Keys2, query: &str) -> Reply {
    let (skip, limit) = super::paging(query);
    let resources: Vec<Value> = keys
        .objects
        .iter()
        .skip(skip)
        .take(limit)
        .map(describe)
        .collect();
    Reply::json(
        200,
        json!({ "skip": skip, "limit": limit, "total": keys.objects.len(), "resources": resources }),
    )
}

/// `POST /api/v1/vault/keys2/{id}/versions`.
fn new_version(keys: &mut Keys2, id: &str) -> Reply {
    let Some(key) = keys.objects.iter().find(|k| k.id == id).cloned() else {
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
fn crypto_key<'a>(
    keys: &'a Keys2,
    request: &Value,
    version: Option<u32>,
) -> Result<&'a KeyObject, Reply> {
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
    let key = if request["type"].as_str() == Some("name") {
        match version {
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
        let key = crypto_key(keys, &request, None)?;
        if key.usage_mask & 4 == 0 {
            return Err(error(
                403,
                16,
                "NCERRKeyUsageNotAllowed",
                "key may not encrypt",
            ));
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
        Ok(Reply::json(
            200,
            json!({
                "id": key.id,
                "version": key.version,
                "mode": "gcm",
                "iv": B64.encode(iv),
                "tag": B64.encode(tag),
                "ciphertext": B64.encode(ciphertext),
            }),
        ))
    };
    run().unwrap_or_else(|refusal| refusal)
}

fn decrypt(keys: &Keys2, body: &[u8]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let request = parse(body)?;
        let version = request["version"].as_u64().map(|v| v as u32);
        let key = crypto_key(keys, &request, version)?;
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
                error(
                    400,
                    3,
                    "NCERRCryptoDecryptionFailed",
                    "decryption failed: message authentication failed",
                )
            })?;
        Ok(Reply::json(
            200,
            json!({ "plaintext": B64.encode(plaintext) }),
        ))
    };
    run().unwrap_or_else(|refusal| refusal)
}
