//! `kes keystore check` against a CipherTrust Manager: every call kes makes, made the way
//! kes makes it (the same request bodies, URLs and answer parsers as the store), on
//! throw-away names, with one row per step saying whether the answer has what kes relies
//! on. It also asks what no public source settles (docs/ciphertrust.md, fidelity table:
//! "unconfirmed") and reports the answer, so a site learns how its CipherTrust behaves.
//!
//! The names start with `kes-check-` and a random suffix; a name that exists is never
//! used. Whatever the check made is deleted at the end, also after a failed step or
//! Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::crypto::Decrypted;
use super::keys2::{KeyObject, create_key_body};
use super::secrets::CreateSecret;
use super::stats::CmRoute;
use super::transport::{Answer, CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, json_body};
use super::{CipherTrust, CipherTrustConfig};
use crate::keystore::check::{Report, Row, Verdict};
use crate::keystore::{KeyStoreError, Sealed};

/// Runs the check against the CipherTrust Manager `config` names.
pub fn run(config: CipherTrustConfig, stop: &AtomicBool) -> Report {
    let keystore = format!("ciphertrust:{}", config.endpoint);
    let resident = config.resident;
    let store = match CipherTrust::without_token(config) {
        Ok(store) => store,
        Err(err) => {
            return Report {
                keystore,
                rows: vec![Row::new("connect", "", Verdict::Fail, err.to_string())],
                interrupted: false,
            };
        }
    };
    let suffix = {
        let mut bytes = [0u8; 4];
        let _ = getrandom::getrandom(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut check = Check {
        store: &store,
        stop,
        resident,
        rows: Vec::new(),
        secret: format!("kes-check-{suffix}-secret"),
        key: format!("kes-check-{suffix}-key"),
        made_secret: false,
        made_key: false,
    };
    check.conversation();
    check.clean_up();
    Report {
        keystore,
        interrupted: stop.load(Ordering::SeqCst),
        rows: check.rows,
    }
}

/// Which mode of kes relies on a step.
#[derive(Clone, Copy)]
enum Need {
    /// Both modes: secrets hold keys in each (ciphertrust.md §3–§7).
    Always,
    /// `master_keys: resident`.
    Resident,
    /// Neither: what no public source settles; kes works either way.
    Nothing,
}

struct Check<'a> {
    store: &'a CipherTrust,
    stop: &'a AtomicBool,
    /// The config sets `master_keys: resident`.
    resident: bool,
    rows: Vec<Row>,
    secret: String,
    key: String,
    made_secret: bool,
    made_key: bool,
}

/// A CipherTrust answer (or why there was none).
type Reply = Result<Answer, KeyStoreError>;

impl Check<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The verdict of a step that did not get what `need` relies on.
    fn broken(&self, need: Need) -> Verdict {
        match need {
            Need::Always => Verdict::Fail,
            Need::Resident if self.resident => Verdict::Fail,
            Need::Resident => Verdict::Warn,
            Need::Nothing => Verdict::Info,
        }
    }

    fn call(&self, route: CmRoute, method: Method, url: &str, body: Option<&[u8]>) -> Reply {
        self.store.shared.authorized(
            route,
            method,
            url,
            body,
            OTHER_ANSWER_LIMIT,
            Instant::now() + CALL_BUDGET,
        )
    }

    /// Records a step. `judge` gets the answer (status and body) and says whether it is
    /// what kes relies on, with the fields it found and a note.
    fn step(
        &mut self,
        step: &str,
        route: CmRoute,
        need: Need,
        reply: &Reply,
        judge: impl FnOnce(&Answer) -> Judged,
    ) -> bool {
        let mut row = Row::new(step, route.request_line(), Verdict::Ok, "");
        let ok = match reply {
            Err(err) => {
                row.verdict = self.broken(need);
                row.detail = format!("no usable answer: {err}");
                false
            }
            Ok(answer) => {
                row.status = Some(answer.status);
                let judged = judge(answer);
                row.fields = judged.fields;
                row.detail = judged.note;
                if !judged.ok {
                    row.verdict = self.broken(need);
                    let got = self.store.shared.explain(answer);
                    row.detail = if row.detail.is_empty() {
                        got
                    } else {
                        format!("{}; got {got}", row.detail)
                    };
                } else if matches!(need, Need::Nothing) {
                    row.verdict = Verdict::Info;
                }
                judged.ok
            }
        };
        self.rows.push(row);
        ok
    }

    fn skip(&mut self, step: &str, route: CmRoute, why: &str) {
        self.rows.push(Row::new(
            step,
            route.request_line(),
            Verdict::Info,
            format!("skipped: {why}"),
        ));
    }

    fn conversation(&mut self) {
        if !self.token() || self.stopped() {
            return;
        }
        self.listings();
        if self.stopped() || !self.names_are_free() || self.stopped() {
            return;
        }
        self.secrets();
        if self.stopped() {
            return;
        }
        self.resident_keys();
    }

    /// The token exchange, as kes makes it at start and every renewal.
    fn token(&mut self) -> bool {
        let store = self.store;
        let (tokens, transport) = (&store.shared.tokens, &store.shared.transport);
        let reply = tokens
            .call(transport, Instant::now() + CALL_BUDGET)
            .map_err(|failure| failure.to_keystore_error());
        let ok = self.step("token", CmRoute::Token, Need::Always, &reply, |answer| {
            let accepted = tokens.accept(transport, answer);
            Judged {
                ok: accepted.is_ok(),
                fields: fields(answer, &["jwt", "token_type", "duration"]),
                note: accepted
                    .err()
                    .map(|e| e.message().to_string())
                    .unwrap_or_default(),
            }
        });
        // The calls below carry a token of their own request, as the store's would.
        ok && tokens
            .renew(transport, None, Instant::now() + CALL_BUDGET)
            .is_ok()
    }

    fn listings(&mut self) {
        let endpoint = self.store.shared.endpoint().to_string();
        for (route, collection, need) in [
            (CmRoute::SecretList, "secrets", Need::Always),
            (CmRoute::KeyList, "keys2", Need::Resident),
        ] {
            let url = format!("{endpoint}/api/v1/vault/{collection}?limit=200&skip=0");
            let reply = self.call(route, Method::Get, &url, None);
            self.step(
                &format!("list {collection}"),
                route,
                need,
                &reply,
                |answer| {
                    let page = json(answer);
                    let ok = answer.status == 200
                        && page["skip"].is_u64()
                        && page["total"].is_u64()
                        && (page["resources"].is_array() || page["resources"].is_null());
                    Judged::new(ok, fields(answer, &["skip", "total", "resources"]))
                },
            );
        }
    }

    /// Both throw-away names are unused: kes never touches what exists.
    fn names_are_free(&mut self) -> bool {
        let url = self.store.secret_url(&self.secret, "/export?type=name");
        let reply = self.call(CmRoute::SecretExport, Method::Post, &url, None);
        let name = self.secret.clone();
        let secret_free = self.step(
            "name is free (secret)",
            CmRoute::SecretExport,
            Need::Always,
            &reply,
            |answer| Judged::status(answer.status == 404, format!("{name}: expected 404")),
        );
        let url = self.store.key_url(&self.key, "?type=name");
        let reply = self.call(CmRoute::KeyRead, Method::Get, &url, None);
        let name = self.key.clone();
        let key_free = self.step(
            "name is free (key)",
            CmRoute::KeyRead,
            Need::Resident,
            &reply,
            |answer| Judged::status(answer.status == 404, format!("{name}: expected 404")),
        );
        secret_free && (key_free || !self.resident)
    }

    /// Create, read and a duplicate create of a secret (the original's way of keeping
    /// keys, ciphertrust.md §4–§5).
    fn secrets(&mut self) {
        let material = "kes keystore check: not a key";
        let body = json_body(&CreateSecret {
            data_type: "seed",
            material,
            name: &self.secret,
        });
        let url = format!("{}/api/v1/vault/secrets", self.store.shared.endpoint());
        let reply = self.call(CmRoute::SecretCreate, Method::Post, &url, Some(&body));
        self.made_secret = reply.as_ref().is_ok_and(|a| matches!(a.status, 200 | 201));
        self.step(
            "create secret",
            CmRoute::SecretCreate,
            Need::Always,
            &reply,
            |answer| {
                Judged::status(
                    matches!(answer.status, 200 | 201),
                    "status 201 (200 accepted)",
                )
            },
        );
        if !self.made_secret {
            return;
        }
        let url = self.store.secret_url(&self.secret, "/export?type=name");
        let reply = self.call(CmRoute::SecretExport, Method::Post, &url, None);
        self.step(
            "read secret",
            CmRoute::SecretExport,
            Need::Always,
            &reply,
            |answer| {
                let same = json(answer)["material"].as_str() == Some(material);
                let found = if same {
                    "material (as stored)"
                } else {
                    "material: missing or changed"
                };
                Judged::new(answer.status == 200 && same, found)
            },
        );
        let reply = self.call(
            CmRoute::SecretCreate,
            Method::Post,
            &url_of_secrets(self.store),
            Some(&body),
        );
        self.step(
            "duplicate secret",
            CmRoute::SecretCreate,
            Need::Always,
            &reply,
            |answer| {
                Judged::status(
                    answer.status == 409,
                    "expected 409 (kes: key already exists)",
                )
            },
        );
    }

    fn resident_keys(&mut self) {
        let url = format!("{}/api/v1/vault/keys2", self.store.shared.endpoint());
        let body = create_key_body(&self.key);
        let reply = self.call(CmRoute::KeyCreate, Method::Post, &url, Some(&body));
        self.made_key = reply.as_ref().is_ok_and(|a| matches!(a.status, 200 | 201));
        let key = self.key.clone();
        let created = self.step(
            "create key",
            CmRoute::KeyCreate,
            Need::Resident,
            &reply,
            |answer| {
                let object = key_object(answer);
                let ok = matches!(answer.status, 200 | 201)
                    && object.as_ref().is_some_and(|o| o.id_and_version().is_ok());
                Judged::new(
                    ok,
                    fields(answer, &["id", "version", "objectType", "algorithm"]),
                )
            },
        );
        if !created || self.stopped() {
            return;
        }
        let reply = self.call(CmRoute::KeyCreate, Method::Post, &url, Some(&body));
        self.step(
            "duplicate key",
            CmRoute::KeyCreate,
            Need::Resident,
            &reply,
            |answer| {
                Judged::status(
                    answer.status == 409,
                    "expected 409 (kes: key already exists)",
                )
            },
        );
        let lookup = self.call(
            CmRoute::KeyRead,
            Method::Get,
            &self.store.key_url(&key, "?type=name"),
            None,
        );
        self.step(
            "look up key",
            CmRoute::KeyRead,
            Need::Resident,
            &lookup,
            |answer| {
                let ok = answer.status == 200
                    && key_object(answer)
                        .is_some_and(|o| o.is_resident_key(&key) && o.version == Some(0));
                Judged::new(
                    ok,
                    fields(answer, &["id", "version", "objectType", "algorithm"]),
                )
            },
        );
        if self.stopped() {
            return;
        }
        let dek = random_bytes();
        let Some(first) = self.encrypt("encrypt", &dek, 0) else {
            return;
        };
        let reply = self.call(
            CmRoute::KeyRotate,
            Method::Post,
            &self.store.key_url(&key, "/versions/?type=name"),
            Some(b"{}"),
        );
        let rotated = self.step(
            "rotate",
            CmRoute::KeyRotate,
            Need::Resident,
            &reply,
            |answer| {
                let ok = matches!(answer.status, 200 | 201)
                    && key_object(answer).is_some_and(|o| o.id.is_some());
                let mut found = fields(answer, &["id", "version"]);
                if key_object(answer).is_some_and(|o| o.version.is_none()) {
                    found.push_str(" (kes then looks the key up for the version)");
                }
                Judged::new(ok, found)
            },
        );
        if !rotated || self.stopped() {
            return;
        }
        let second_dek = random_bytes();
        let Some(second) = self.encrypt("encrypt after rotate", &second_dek, 1) else {
            return;
        };
        if first.0 == second.0 {
            self.rows.push(Row::new(
                "version ids",
                CmRoute::Encrypt.request_line(),
                self.broken(Need::Resident),
                "both versions answered with the same id: kes could not address the older one",
            ));
        }
        self.list_versions(&first.0, &second.0);
        if self.stopped() {
            return;
        }
        self.decrypt_by_id("decrypt v0 by id", &first, &dek);
        self.decrypt_by_id("decrypt v1 by id", &second, &second_dek);
        self.decrypt_by_name(&first.1, &dek);
        self.tampered(&second);
        self.secret_through_keys2();
        if self.stopped() {
            return;
        }
        self.deletes(&second);
    }

    /// Encrypts `plaintext` by key name as kes does; the version id and envelope.
    fn encrypt(
        &mut self,
        step: &str,
        plaintext: &[u8],
        expected_version: u32,
    ) -> Option<(String, Sealed)> {
        let deadline = Instant::now() + CALL_BUDGET;
        let with_tag_len = !self.store.omit_tag_len.load(Ordering::Relaxed);
        let mut reply = self
            .store
            .encrypt_call(&self.key, plaintext, AAD, with_tag_len, deadline);
        if with_tag_len
            && reply
                .as_ref()
                .is_ok_and(|a| a.status == 400 && !a.is_crypto_failure())
        {
            let refused = reply
                .as_ref()
                .map(|a| self.store.shared.explain(a))
                .unwrap_or_default();
            self.rows.push(Row::new(
                "tag_len",
                CmRoute::Encrypt.request_line(),
                Verdict::Warn,
                format!("CipherTrust refused the field tag_len ({refused}); kes sends encrypts without it after such an answer"),
            ));
            self.store.omit_tag_len.store(true, Ordering::Relaxed);
            reply = self
                .store
                .encrypt_call(&self.key, plaintext, AAD, false, deadline);
        }
        let mut outcome = None;
        let store = self.store;
        let key = self.key.clone();
        self.step(step, CmRoute::Encrypt, Need::Resident, &reply, |answer| {
            let found = fields(
                answer,
                &["id", "version", "iv", "tag", "ciphertext", "mode"],
            );
            if !matches!(answer.status, 200 | 201) {
                return Judged::new(false, found);
            }
            match store.encrypted(&key, answer) {
                Ok(encrypted) if encrypted.sealed.version == expected_version => {
                    let note = format!(
                        "version {} (the newest); tag {} bytes, IV {} bytes",
                        encrypted.sealed.version,
                        encrypted.sealed.tag.len(),
                        encrypted.sealed.iv.len()
                    );
                    outcome = Some((encrypted.id, encrypted.sealed));
                    Judged {
                        ok: true,
                        fields: found,
                        note,
                    }
                }
                Ok(encrypted) => Judged {
                    ok: false,
                    fields: found,
                    note: format!(
                        "encrypted with version {}, not the newest ({expected_version})",
                        encrypted.sealed.version
                    ),
                },
                Err(err) => Judged {
                    ok: false,
                    fields: found,
                    note: err.to_string(),
                },
            }
        });
        outcome
    }

    fn list_versions(&mut self, first: &str, second: &str) {
        let deadline = Instant::now() + CALL_BUDGET;
        let listed = self.store.key_versions(&self.key, deadline);
        let mut row = Row::new(
            "list versions",
            CmRoute::KeyList.request_line(),
            Verdict::Ok,
            "",
        );
        match listed {
            Ok(versions) => {
                row.status = Some(200);
                let ids: Vec<&str> = versions.iter().filter_map(|v| v.id.as_deref()).collect();
                row.fields = format!("{} versions of the name (filter name=…)", versions.len());
                if !(ids.contains(&first) && ids.contains(&second)) {
                    row.verdict = self.broken(Need::Resident);
                    row.detail = "the listing by name lacks a version's id: kes learns ids this way after a restart".into();
                }
            }
            Err(err) => {
                row.verdict = self.broken(Need::Resident);
                row.detail = err.to_string();
            }
        }
        self.rows.push(row);
    }

    fn decrypt_by_id(&mut self, step: &str, (id, sealed): &(String, Sealed), expected: &[u8]) {
        let reply = self
            .store
            .decrypt_call(id, sealed, AAD, Instant::now() + CALL_BUDGET);
        let (store, key) = (self.store, self.key.clone());
        self.step(step, CmRoute::Decrypt, Need::Resident, &reply, |answer| {
            let plain = store.decrypted(&key, answer);
            let ok =
                matches!(&plain, Ok(Some(Decrypted::Plaintext(p))) if p.as_slice() == expected);
            let note = match plain {
                Ok(Some(Decrypted::Plaintext(_))) if ok => String::new(),
                Ok(Some(Decrypted::Plaintext(_))) => "decrypted to something else".into(),
                Ok(Some(Decrypted::NotAuthentic)) => "refused as not authentic".into(),
                Ok(None) => String::new(),
                Err(err) => err.to_string(),
            };
            Judged {
                ok,
                fields: fields(answer, &["plaintext"]),
                note,
            }
        });
    }

    /// What no public source settles: does a decrypt by name honour `version`?
    fn decrypt_by_name(&mut self, sealed: &Sealed, expected: &[u8]) {
        let body = serde_json::json!({
            "id": self.key, "type": "name", "version": sealed.version, "mode": "gcm",
            "iv": B64.encode(&sealed.iv), "tag": B64.encode(&sealed.tag),
            "ciphertext": B64.encode(&sealed.ciphertext), "aad": B64.encode(AAD),
        });
        let url = format!("{}/api/v1/crypto/decrypt", self.store.shared.endpoint());
        let reply = self.call(
            CmRoute::Decrypt,
            Method::Post,
            &url,
            Some(body.to_string().as_bytes()),
        );
        let (store, key) = (self.store, self.key.clone());
        self.step(
            "decrypt v0 by name + version",
            CmRoute::Decrypt,
            Need::Nothing,
            &reply,
            |answer| {
                let note = match store.decrypted(&key, answer) {
                    Ok(Some(Decrypted::Plaintext(p))) if p.as_slice() == expected => {
                        "honoured: the older version decrypted"
                    }
                    Ok(Some(Decrypted::Plaintext(_))) => "ignored: another version decrypted",
                    Ok(Some(Decrypted::NotAuthentic)) => {
                        "ignored: the newest version refused it as not authentic"
                    }
                    _ => "refused",
                };
                Judged {
                    ok: true,
                    fields: fields(answer, &["plaintext"]),
                    note: format!("{note} (kes decrypts by version id, not this way)"),
                }
            },
        );
    }

    /// A flipped tag byte must come back as CipherTrust's GCM failure, which is what kes
    /// answers "not authentic" for.
    fn tampered(&mut self, (id, sealed): &(String, Sealed)) {
        let mut bad = sealed.clone();
        if let Some(byte) = bad.tag.first_mut() {
            *byte ^= 1;
        }
        let reply = self
            .store
            .decrypt_call(id, &bad, AAD, Instant::now() + CALL_BUDGET);
        self.step("decrypt a tampered tag", CmRoute::Decrypt, Need::Resident, &reply, |answer| {
            let desc = answer.code_desc().unwrap_or_else(|| "no codeDesc".into());
            if answer.is_crypto_failure() {
                Judged::new(true, format!("codeDesc {desc}"))
            } else {
                Judged {
                    ok: false,
                    fields: format!("codeDesc {desc}"),
                    note: "not CipherTrust's GCM failure (NCERRCryptoOperationFailed): kes would answer a server error, not \"not authentic\"".into(),
                }
            }
        });
    }

    /// A secret's name looked up among keys: kes must not take it for a resident key.
    fn secret_through_keys2(&mut self) {
        if !self.made_secret {
            return self.skip("secret via keys2", CmRoute::KeyRead, "no secret was made");
        }
        let url = self.store.key_url(&self.secret, "?type=name");
        let reply = self.call(CmRoute::KeyRead, Method::Get, &url, None);
        let name = self.secret.clone();
        self.step(
            "secret via keys2",
            CmRoute::KeyRead,
            Need::Resident,
            &reply,
            |answer| {
                let object = key_object(answer);
                let taken = answer.status == 200
                    && object.as_ref().is_some_and(|o| o.is_resident_key(&name));
                let note = match (answer.status, &object) {
                    (404, _) => "not found among keys".to_string(),
                    (200, Some(o)) => format!(
                        "found as {}; kes {} it for a resident key",
                        o.object_type
                            .as_deref()
                            .unwrap_or("an object without objectType"),
                        if taken { "WOULD TAKE" } else { "does not take" }
                    ),
                    _ => String::new(),
                };
                Judged {
                    ok: matches!(answer.status, 200 | 404) && !taken,
                    fields: fields(answer, &["objectType", "algorithm"]),
                    note,
                }
            },
        );
    }

    /// How many versions one delete by name removes (unsettled), then the rest by id as
    /// kes deletes, then the key is gone and its data keys no longer decrypt.
    fn deletes(&mut self, newest: &(String, Sealed)) {
        let url = self.store.key_url(&self.key, "?type=name");
        let reply = self.call(CmRoute::KeyDelete, Method::Delete, &url, None);
        let remaining = self
            .store
            .key_versions(&self.key, Instant::now() + CALL_BUDGET)
            .map(|v| v.len());
        let by_name = self.rows.len();
        self.step(
            "delete by name (once)",
            CmRoute::KeyDelete,
            Need::Nothing,
            &reply,
            |answer| {
                let note = match remaining {
                    Ok(0) => "removed every version".to_string(),
                    Ok(n) => {
                        format!("removed one version, {n} left (kes deletes each version by id)")
                    }
                    Err(err) => format!("versions left unknown: {err}"),
                };
                Judged {
                    ok: true,
                    fields: String::new(),
                    note: format!("status {}: {note}", answer.status),
                }
            },
        );
        self.rows[by_name].call = "DELETE /api/v1/vault/keys2/{name}?type=name".into();
        let outcome = self
            .store
            .delete_key(&self.key, Instant::now() + CALL_BUDGET);
        let mut row = Row::new(
            "delete versions by id",
            CmRoute::KeyDelete.request_line(),
            Verdict::Ok,
            "",
        );
        if let Err(err) = outcome {
            row.verdict = self.broken(Need::Resident);
            row.detail = err.to_string();
        }
        self.rows.push(row);
        let lookup = self.call(
            CmRoute::KeyRead,
            Method::Get,
            &self.store.key_url(&self.key, "?type=name"),
            None,
        );
        let gone = self.step(
            "key is gone",
            CmRoute::KeyRead,
            Need::Resident,
            &lookup,
            |answer| Judged::status(answer.status == 404, "expected 404"),
        );
        self.made_key = !gone;
        let reply =
            self.store
                .decrypt_call(&newest.0, &newest.1, AAD, Instant::now() + CALL_BUDGET);
        let verdict_if_other = self.broken(Need::Resident).min_warn();
        let mut row = Row::new(
            "decrypt with a deleted key",
            CmRoute::Decrypt.request_line(),
            Verdict::Ok,
            "expected 404 (kes: key does not exist)",
        );
        match &reply {
            Ok(answer) => {
                row.status = Some(answer.status);
                if matches!(answer.status, 200 | 201) {
                    row.verdict = Verdict::Fail;
                    row.detail = "a deleted key still decrypts".into();
                } else if answer.status != 404 {
                    row.verdict = verdict_if_other;
                    row.detail = format!(
                        "{}: kes answers a server error instead of \"key does not exist\"",
                        self.store.shared.explain(answer)
                    );
                }
            }
            Err(err) => {
                row.verdict = verdict_if_other;
                row.detail = err.to_string();
            }
        }
        self.rows.push(row);
        if self.made_secret {
            let url = self.store.secret_url(&self.secret, "?type=name");
            let reply = self.call(CmRoute::SecretDelete, Method::Delete, &url, None);
            let deleted = self.step(
                "delete secret",
                CmRoute::SecretDelete,
                Need::Always,
                &reply,
                |answer| {
                    Judged::status(
                        matches!(answer.status, 200 | 204),
                        "status 204 (200 accepted)",
                    )
                },
            );
            let url = self.store.secret_url(&self.secret, "/export?type=name");
            let reply = self.call(CmRoute::SecretExport, Method::Post, &url, None);
            let gone = self.step(
                "secret is gone",
                CmRoute::SecretExport,
                Need::Always,
                &reply,
                |answer| Judged::status(answer.status == 404, "expected 404"),
            );
            self.made_secret = !(deleted && gone);
        }
    }

    /// Deletes what the check made and did not delete yet (after a failure or Ctrl-C).
    fn clean_up(&mut self) {
        if self.made_key {
            let outcome = self
                .store
                .delete_key(&self.key, Instant::now() + CALL_BUDGET);
            let (verdict, detail) = match outcome {
                Ok(_) => (Verdict::Info, format!("deleted {}", self.key)),
                Err(err) => (Verdict::Warn, format!("{} may be left: {err}", self.key)),
            };
            self.rows.push(Row::new(
                "clean up key",
                CmRoute::KeyDelete.request_line(),
                verdict,
                detail,
            ));
        }
        if self.made_secret {
            let url = self.store.secret_url(&self.secret, "?type=name");
            let reply = self.call(CmRoute::SecretDelete, Method::Delete, &url, None);
            let (verdict, detail) = match &reply {
                Ok(a) if matches!(a.status, 200 | 204 | 404) => {
                    (Verdict::Info, format!("deleted {}", self.secret))
                }
                Ok(a) => (
                    Verdict::Warn,
                    format!(
                        "{} may be left: {}",
                        self.secret,
                        self.store.shared.explain(a)
                    ),
                ),
                Err(err) => (Verdict::Warn, format!("{} may be left: {err}", self.secret)),
            };
            self.rows.push(Row::new(
                "clean up secret",
                CmRoute::SecretDelete.request_line(),
                verdict,
                detail,
            ));
        }
    }
}

/// The associated data of the check's encrypts.
const AAD: &[u8] = b"kes keystore check";

fn url_of_secrets(store: &CipherTrust) -> String {
    format!("{}/api/v1/vault/secrets", store.shared.endpoint())
}

/// What a step's judge found.
struct Judged {
    ok: bool,
    fields: String,
    note: String,
}

impl Judged {
    fn new(ok: bool, fields: impl Into<String>) -> Judged {
        Judged {
            ok,
            fields: fields.into(),
            note: String::new(),
        }
    }

    /// A step judged by its status alone; `expected` says what it should be.
    fn status(ok: bool, expected: impl Into<String>) -> Judged {
        Judged {
            ok,
            fields: String::new(),
            note: expected.into(),
        }
    }
}

trait AtMostWarn {
    fn min_warn(self) -> Verdict;
}

impl AtMostWarn for Verdict {
    /// A wrong answer kes still handles safely is a warning, not a failure.
    fn min_warn(self) -> Verdict {
        match self {
            Verdict::Fail => Verdict::Warn,
            other => other,
        }
    }
}

fn json(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or(Value::Null)
}

fn key_object(answer: &Answer) -> Option<KeyObject> {
    serde_json::from_slice(&answer.body).ok()
}

/// The named fields of a JSON answer as found: values of the harmless ones, sizes of the
/// binary ones, presence only of anything secret (tokens, material, plaintext).
fn fields(answer: &Answer, names: &[&str]) -> String {
    let body = json(answer);
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let value = &body[*name];
        if *name == "resources" && value.is_null() && body.get("resources").is_some() {
            present.push("resources (null: none)".to_string());
            continue;
        }
        if value.is_null() {
            missing.push(*name);
            continue;
        }
        present.push(match (*name, value) {
            ("iv" | "tag", Value::String(text)) => {
                let bytes = B64.decode(text).map(|b| b.len()).unwrap_or(0);
                format!("{name} ({bytes} bytes)")
            }
            (
                "version" | "objectType" | "algorithm" | "token_type" | "duration" | "skip"
                | "total" | "mode",
                v,
            ) => {
                let shown = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                format!("{name}={}", super::transport::truncate(&shown, 40))
            }
            ("resources", Value::Array(items)) => format!("resources ({} entries)", items.len()),
            _ => name.to_string(),
        });
    }
    let mut text = present.join(", ");
    if !missing.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!("missing: {}", missing.join(", ")));
    }
    text
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let _ = getrandom::getrandom(&mut bytes);
    bytes
}
