//! The resident-key steps of the check: a key made, used before and after a rotation,
//! decrypted every way, tampered with, and deleted, as kes does each (see `super`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::{AAD, AtMostWarn, Check, Judged, Need, fields, key_object, random_bytes};
use crate::keystore::Sealed;
use crate::keystore::ciphertrust::crypto::Decrypted;
use crate::keystore::ciphertrust::keys2::create_key_body;
use crate::keystore::ciphertrust::stats::CmRoute;
use crate::keystore::ciphertrust::transport::{CALL_BUDGET, Method};
use crate::keystore::report::{Row, Verdict};

impl Check<'_> {
    pub(super) fn resident_keys(&mut self) {
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
    }
}
