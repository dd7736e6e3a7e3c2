//! Encrypt and decrypt with resident keys: CipherTrust's crypto endpoints
//! (`/api/v1/crypto/{encrypt,decrypt}`), AES-256-GCM inside CipherTrust.
//!
//! Encrypt names the key by name (CipherTrust picks the newest version) and the answer
//! says which version, and which version id, it used. Decrypt names that exact version
//! by its id, as the client proven against a live CipherTrust does; the version id is
//! learned once (`versions`). docs/ciphertrust.md has the evidence for each field.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::CipherTrust;
use super::keys2::VersionLookup;
use super::stats::CmRoute;
use super::transport::{Answer, CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, json_body};
use crate::keystore::{KeyStoreError, Sealed, StoredValue};

/// The GCM tag length kes asks for, in bytes. CipherTrust's default is not documented
/// publicly; a shorter tag than 12 bytes is refused.
pub(super) const TAG_LEN: usize = 16;
const MIN_TAG_LEN: usize = 12;

/// An encrypt answer, with the fields kes relies on checked.
#[derive(Debug)]
pub(super) struct Encrypted {
    /// The id of the key version that encrypted.
    pub(super) id: String,
    pub(super) sealed: Sealed,
}

/// What a decrypt answer means.
#[derive(Debug)]
pub(super) enum Decrypted {
    Plaintext(StoredValue),
    /// CipherTrust says the GCM check failed: wrong tag, AAD, IV or ciphertext.
    NotAuthentic,
}

impl CipherTrust {
    /// CipherTrust encrypts `plaintext` with the newest version of key `name`.
    pub(super) fn encrypt_with(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let with_tag_len = !self.omit_tag_len.load(Ordering::Relaxed);
        let answer = self.encrypt_call(name, plaintext, aad, with_tag_len, deadline)?;
        let answer = if with_tag_len && answer.status == 400 && !answer.is_crypto_failure() {
            // `tag_len` is the one field kes sends that no public client was seen sending:
            // a CipherTrust that refuses it gets the request without it, from now on.
            let retried = self.encrypt_call(name, plaintext, aad, false, deadline)?;
            if matches!(retried.status, 200 | 201) {
                log::warn!(
                    "CipherTrust Manager at {} refused the GCM tag length field (tag_len: {TAG_LEN}) of an encrypt ({}); kes no longer sends it and checks the tag length of each answer",
                    self.shared.endpoint(),
                    self.shared.explain(&answer)
                );
                self.omit_tag_len.store(true, Ordering::Relaxed);
            }
            retried
        } else {
            answer
        };
        self.encrypt_answer(name, &answer)
    }

    /// What an encrypt answer means (for calls made here and on event loops).
    pub(super) fn encrypt_answer(
        &self,
        name: &str,
        answer: &Answer,
    ) -> Result<Sealed, KeyStoreError> {
        match answer.status {
            200 | 201 => Ok(self.encrypted(name, answer)?.sealed),
            404 => Err(KeyStoreError::NotFound),
            _ => Err(self.shared.refusal(
                CmRoute::Encrypt,
                &format!("could not encrypt with key '{name}'"),
                answer,
            )),
        }
    }

    /// One encrypt call by key name.
    pub(super) fn encrypt_call(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
        with_tag_len: bool,
        deadline: Instant,
    ) -> Result<Answer, KeyStoreError> {
        let body = encrypt_body(name, plaintext, aad, with_tag_len);
        self.crypto(CmRoute::Encrypt, &body, deadline)
    }

    /// The fields of a successful encrypt answer: `id`, `version`, `iv`, `tag`,
    /// `ciphertext`, each required (a missing one is named). The version's id is
    /// remembered for decrypts.
    pub(super) fn encrypted(
        &self,
        name: &str,
        answer: &Answer,
    ) -> Result<Encrypted, KeyStoreError> {
        let route = CmRoute::Encrypt;
        let fields: EncryptAnswer<'_> =
            serde_json::from_slice(&answer.body).map_err(|err| self.unusable(route, name, err))?;
        let missing = |field: &str| self.unusable(route, name, format!("it lacks `{field}`"));
        let decode = |field: &'static str, text: Option<Cow<'_, str>>| {
            let text = text.ok_or_else(|| missing(field))?;
            B64.decode(text.as_bytes())
                .map_err(|_| self.unusable(route, name, format!("`{field}` is not base64")))
        };
        let id = fields
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| missing("id"))?
            .into_owned();
        let version = fields.version.ok_or_else(|| missing("version"))?;
        let sealed = Sealed {
            version,
            iv: decode("iv", fields.iv)?,
            tag: decode("tag", fields.tag)?,
            ciphertext: decode("ciphertext", fields.ciphertext)?,
        };
        sealed
            .check()
            .map_err(|why| self.unusable(route, name, why))?;
        if sealed.tag.len() < MIN_TAG_LEN {
            return Err(self.unusable(
                route,
                name,
                format!(
                    "its GCM tag has {} bytes, fewer than {MIN_TAG_LEN}",
                    sealed.tag.len()
                ),
            ));
        }
        self.versions.remember(name, version, &id);
        Ok(Encrypted { id, sealed })
    }

    /// CipherTrust decrypts `sealed` with the key version it names; `Ok(None)` if
    /// CipherTrust refuses it as not authentic, or key `name` never had that version.
    pub(super) fn decrypt_with(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let id = match self.version_id(name, sealed.version, deadline)? {
            VersionLookup::Found(id) => id,
            VersionLookup::Deleted => return Err(KeyStoreError::NotFound),
            VersionLookup::Unknown => return Ok(None),
        };
        let answer = self.decrypt_call(&id, sealed, aad, deadline)?;
        self.decrypt_answer(name, sealed.version, &answer)
    }

    /// What a decrypt answer means (for calls made here and on event loops): the
    /// plaintext, `None` for CipherTrust's GCM failure, or an error.
    pub(super) fn decrypt_answer(
        &self,
        name: &str,
        version: u32,
        answer: &Answer,
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        match self.decrypted(name, answer)? {
            Some(Decrypted::Plaintext(plaintext)) => Ok(Some(plaintext)),
            Some(Decrypted::NotAuthentic) => Ok(None),
            None if answer.status == 404 => {
                // The version (or the whole key) was deleted, or a CipherTrust policy hides
                // it from kes's user: not a forgery, so not "not authentic".
                self.versions.forget(name);
                Err(KeyStoreError::NotFound)
            }
            None => Err(self.shared.refusal(
                CmRoute::Decrypt,
                &format!("could not decrypt with key '{name}' (version {version})"),
                answer,
            )),
        }
    }

    /// One decrypt call by version id.
    pub(super) fn decrypt_call(
        &self,
        id: &str,
        sealed: &Sealed,
        aad: &[u8],
        deadline: Instant,
    ) -> Result<Answer, KeyStoreError> {
        let body = decrypt_body(id, sealed, aad);
        self.crypto(CmRoute::Decrypt, &body, deadline)
    }

    /// The meaning of a decrypt answer, or `None` for an error answer other than a GCM
    /// failure (the caller maps it).
    pub(super) fn decrypted(
        &self,
        name: &str,
        answer: &Answer,
    ) -> Result<Option<Decrypted>, KeyStoreError> {
        if !matches!(answer.status, 200 | 201) {
            return Ok(answer
                .is_crypto_failure()
                .then_some(Decrypted::NotAuthentic));
        }
        let route = CmRoute::Decrypt;
        let plain: DecryptAnswer<'_> =
            serde_json::from_slice(&answer.body).map_err(|err| self.unusable(route, name, err))?;
        let text = plain
            .plaintext
            .ok_or_else(|| self.unusable(route, name, "it lacks `plaintext`"))?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        let decoded = B64.decode_vec(text.as_bytes(), &mut bytes);
        if let Cow::Owned(mut owned) = text {
            owned.zeroize();
        }
        decoded.map_err(|_| self.unusable(route, name, "`plaintext` is not base64"))?;
        Ok(Some(Decrypted::Plaintext(bytes)))
    }

    fn crypto(
        &self,
        route: CmRoute,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Answer, KeyStoreError> {
        let operation = match route {
            CmRoute::Encrypt => "encrypt",
            _ => "decrypt",
        };
        let url = format!("{}/api/v1/crypto/{operation}", self.shared.endpoint());
        self.shared.authorized(
            route,
            Method::Post,
            &url,
            Some(body),
            OTHER_ANSWER_LIMIT,
            deadline,
        )
    }
}

/// The body of an encrypt by key name (docs/ciphertrust.md, fidelity table).
pub(super) fn encrypt_body(
    name: &str,
    plaintext: &[u8],
    aad: &[u8],
    with_tag_len: bool,
) -> Zeroizing<Vec<u8>> {
    let plaintext = Zeroizing::new(B64.encode(plaintext));
    let aad = (!aad.is_empty()).then(|| B64.encode(aad));
    json_body(&EncryptRequest {
        id: name,
        kind: "name",
        plaintext: &plaintext,
        mode: "gcm",
        tag_len: with_tag_len.then_some(TAG_LEN),
        aad: aad.as_deref(),
    })
}

/// The body of a decrypt by version id.
pub(super) fn decrypt_body(id: &str, sealed: &Sealed, aad: &[u8]) -> Zeroizing<Vec<u8>> {
    let aad = (!aad.is_empty()).then(|| B64.encode(aad));
    json_body(&DecryptRequest {
        id,
        version: sealed.version,
        mode: "gcm",
        iv: &B64.encode(&sealed.iv),
        tag: &B64.encode(&sealed.tag),
        ciphertext: &B64.encode(&sealed.ciphertext),
        aad: aad.as_deref(),
    })
}

#[derive(Serialize)]
struct EncryptRequest<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    plaintext: &'a str,
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aad: Option<&'a str>,
}

/// Borrowed from the answer's bytes where they need no unescaping (base64 never does):
/// no allocation per field.
#[derive(Deserialize)]
struct EncryptAnswer<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(borrow, default)]
    iv: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tag: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ciphertext: Option<Cow<'a, str>>,
}

/// Addressed by the version's id, without `type`, as the live-proven client sends it.
#[derive(Serialize)]
struct DecryptRequest<'a> {
    id: &'a str,
    version: u32,
    mode: &'a str,
    iv: &'a str,
    tag: &'a str,
    ciphertext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aad: Option<&'a str>,
}

/// Borrowed from the (wiped) answer buffer: base64 has no JSON escapes.
#[derive(Deserialize)]
struct DecryptAnswer<'a> {
    #[serde(borrow, default)]
    plaintext: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_the_proven_forms() {
        let body = json_body(&EncryptRequest {
            id: "k",
            kind: "name",
            plaintext: "AA==",
            mode: "gcm",
            tag_len: Some(TAG_LEN),
            aad: Some("Yw=="),
        });
        assert_eq!(
            &body[..],
            br#"{"id":"k","type":"name","plaintext":"AA==","mode":"gcm","tag_len":16,"aad":"Yw=="}"#
        );
        let body = json_body(&DecryptRequest {
            id: "0123abcd",
            version: 3,
            mode: "gcm",
            iv: "aXY=",
            tag: "dGFn",
            ciphertext: "Y3Q=",
            aad: None,
        });
        assert_eq!(
            &body[..],
            br#"{"id":"0123abcd","version":3,"mode":"gcm","iv":"aXY=","tag":"dGFn","ciphertext":"Y3Q="}"#
        );
    }
}
