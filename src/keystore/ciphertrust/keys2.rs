//! Resident master keys (`master_keys: resident`): non-exportable CipherTrust keys
//! (`/api/v1/vault/keys2`) that kes uses through CipherTrust's crypto endpoints
//! (`/api/v1/crypto/{encrypt,decrypt}`) and never reads. See docs/ciphertrust.md.
//!
//! CipherTrust keeps every version of a key as an object of its own with the same name; a
//! lookup by name answers the newest. Encrypt picks the newest version and says which it
//! used; decrypt is pinned to the version the envelope names, so rotation never breaks an
//! older ciphertext.

use std::borrow::Cow;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::CipherTrust;
use super::client::{
    Answer, CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, encode_path_segment, json_body,
};
use crate::keystore::{KeyStoreError, Sealed, StoredValue};

/// `usageMask` of a key that may encrypt (4) and decrypt (8), and nothing else.
const USAGE_ENCRYPT_DECRYPT: u32 = 12;

impl CipherTrust {
    fn key_url(&self, name: &str) -> String {
        format!(
            "{}/api/v1/vault/keys2/{}?type=name",
            self.shared.endpoint,
            encode_path_segment(name)
        )
    }

    fn unusable(&self, name: &str, what: &str, why: impl std::fmt::Display) -> KeyStoreError {
        KeyStoreError::Other(format!(
            "CipherTrust Manager sent an unusable {what} answer for key '{name}': {why}"
        ))
    }

    fn refused(&self, name: &str, what: &str, answer: &Answer) -> KeyStoreError {
        KeyStoreError::Other(format!(
            "CipherTrust Manager could not {what} key '{name}': {}",
            self.shared.explain(answer)
        ))
    }

    /// The id and newest version of key `name`, or `None` if CipherTrust has no such key.
    pub(super) fn lookup_key(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<KeyInfo>, KeyStoreError> {
        let answer = self.shared.authorized(
            Method::Get,
            &self.key_url(name),
            None,
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|err| self.unusable(name, "key", err)),
            404 => Ok(None),
            _ => Err(self.refused(name, "read", &answer)),
        }
    }

    /// Whether secret `name` exists, without exporting it.
    fn secret_exists(&self, name: &str, deadline: Instant) -> Result<bool, KeyStoreError> {
        let url = self.secret_url(name, "?type=name");
        let answer =
            self.shared
                .authorized(Method::Get, &url, None, OTHER_ANSWER_LIMIT, deadline)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(name, "read", &answer)),
        }
    }

    /// Creates non-exportable key `name`, unless a key or secret of that name exists (a
    /// resident key would hide the secret, and every ciphertext made with it).
    pub(super) fn create_key(&self, name: &str) -> Result<u32, KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        if self.secret_exists(name, deadline)? {
            return Err(KeyStoreError::Exists);
        }
        let body = json_body(&CreateKey {
            name,
            algorithm: "AES",
            size: 256,
            usage_mask: USAGE_ENCRYPT_DECRYPT,
            unexportable: true,
        });
        let url = format!("{}/api/v1/vault/keys2", self.shared.endpoint);
        let answer = self.shared.authorized(
            Method::Post,
            &url,
            Some(&body),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => serde_json::from_slice::<KeyInfo>(&answer.body)
                .map(|info| info.version)
                .map_err(|err| self.unusable(name, "create", err)),
            // An earlier attempt may have created it: a key of ours has no material
            // to compare, but any key of this name now is one kes asked for.
            409 if answer.may_have_been_applied => self
                .lookup_key(name, deadline)?
                .map(|info| info.version)
                .ok_or(KeyStoreError::Exists),
            409 => Err(KeyStoreError::Exists),
            _ => Err(self.refused(name, "create", &answer)),
        }
    }

    /// Adds a version to key `name` and returns it.
    pub(super) fn rotate_key(&self, name: &str) -> Result<u32, KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let info = self
            .lookup_key(name, deadline)?
            .ok_or(KeyStoreError::NotFound)?;
        let url = format!(
            "{}/api/v1/vault/keys2/{}/versions",
            self.shared.endpoint,
            encode_path_segment(&info.id)
        );
        let answer = self.shared.authorized(
            Method::Post,
            &url,
            Some(b"{}"),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => serde_json::from_slice::<KeyInfo>(&answer.body)
                .map(|info| info.version)
                .map_err(|err| self.unusable(name, "rotate", err)),
            404 => Err(KeyStoreError::NotFound),
            _ => Err(self.refused(name, "rotate", &answer)),
        }
    }

    /// Deletes every version of key `name`; `Ok(false)` if there was none.
    pub(super) fn delete_key(&self, name: &str, deadline: Instant) -> Result<bool, KeyStoreError> {
        let mut deleted = false;
        // One object per version: delete by name until none is left (a CipherTrust that
        // deletes them all at once answers 404 to the second call).
        loop {
            let answer = self.shared.authorized(
                Method::Delete,
                &self.key_url(name),
                None,
                OTHER_ANSWER_LIMIT,
                deadline,
            )?;
            match answer.status {
                200 | 204 => deleted = true,
                404 => return Ok(deleted),
                _ => return Err(self.refused(name, "delete", &answer)),
            }
        }
    }

    /// CipherTrust encrypts `plaintext` with the newest version of key `name`.
    pub(super) fn encrypt_with(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyStoreError> {
        let plaintext = Zeroizing::new(B64.encode(plaintext));
        let aad = (!aad.is_empty()).then(|| B64.encode(aad));
        let body = json_body(&EncryptRequest {
            id: name,
            kind: "name",
            plaintext: &plaintext,
            mode: "gcm",
            aad: aad.as_deref(),
        });
        let answer = self.crypto("encrypt", &body)?;
        match answer.status {
            200 | 201 => {
                let sealed: EncryptAnswer = serde_json::from_slice(&answer.body)
                    .map_err(|err| self.unusable(name, "encrypt", err))?;
                let decode = |field: &str, text: &str| {
                    B64.decode(text).map_err(|_| {
                        self.unusable(name, "encrypt", format!("{field} is not base64"))
                    })
                };
                let sealed = Sealed {
                    version: sealed.version,
                    iv: decode("iv", &sealed.iv)?,
                    tag: decode("tag", &sealed.tag)?,
                    ciphertext: decode("ciphertext", &sealed.ciphertext)?,
                };
                sealed
                    .check()
                    .map_err(|why| self.unusable(name, "encrypt", why))?;
                Ok(sealed)
            }
            404 => Err(KeyStoreError::NotFound),
            _ => Err(self.refused(name, "encrypt with", &answer)),
        }
    }

    /// CipherTrust decrypts `sealed` with the version it names; `Ok(None)` if CipherTrust
    /// refuses it as not authentic.
    pub(super) fn decrypt_with(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        let aad = (!aad.is_empty()).then(|| B64.encode(aad));
        let body = json_body(&DecryptRequest {
            id: name,
            kind: "name",
            ciphertext: &B64.encode(&sealed.ciphertext),
            iv: &B64.encode(&sealed.iv),
            tag: &B64.encode(&sealed.tag),
            mode: "gcm",
            version: sealed.version,
            aad: aad.as_deref(),
        });
        let answer = self.crypto("decrypt", &body)?;
        match answer.status {
            200 | 201 => {
                let plain: DecryptAnswer<'_> = serde_json::from_slice(&answer.body)
                    .map_err(|err| self.unusable(name, "decrypt", err))?;
                let mut bytes = Zeroizing::new(Vec::with_capacity(plain.plaintext.len()));
                let decoded = B64.decode_vec(plain.plaintext.as_bytes(), &mut bytes);
                if let Cow::Owned(mut owned) = plain.plaintext {
                    owned.zeroize();
                }
                decoded.map_err(|_| self.unusable(name, "decrypt", "plaintext is not base64"))?;
                Ok(Some(bytes))
            }
            // A wrong tag or AAD: CipherTrust answers 400 (or 422). A version it does not
            // have: 404; this key never sealed such a ciphertext either.
            400 | 404 | 422 => Ok(None),
            _ => Err(self.refused(name, "decrypt with", &answer)),
        }
    }

    fn crypto(&self, operation: &str, body: &[u8]) -> Result<Answer, KeyStoreError> {
        let url = format!("{}/api/v1/crypto/{operation}", self.shared.endpoint);
        self.shared.authorized(
            Method::Post,
            &url,
            Some(body),
            OTHER_ANSWER_LIMIT,
            Instant::now() + CALL_BUDGET,
        )
    }
}

/// What kes reads of a CipherTrust key: never material (there is none to read).
#[derive(Deserialize)]
pub(super) struct KeyInfo {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) version: u32,
}

#[derive(Serialize)]
struct CreateKey<'a> {
    name: &'a str,
    algorithm: &'a str,
    size: u32,
    #[serde(rename = "usageMask")]
    usage_mask: u32,
    unexportable: bool,
}

#[derive(Serialize)]
struct EncryptRequest<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    plaintext: &'a str,
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aad: Option<&'a str>,
}

#[derive(Deserialize)]
struct EncryptAnswer {
    #[serde(default)]
    version: u32,
    iv: String,
    tag: String,
    ciphertext: String,
}

#[derive(Serialize)]
struct DecryptRequest<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    ciphertext: &'a str,
    iv: &'a str,
    tag: &'a str,
    mode: &'a str,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    aad: Option<&'a str>,
}

/// Borrowed from the (wiped) answer buffer: base64 has no JSON escapes.
#[derive(Deserialize)]
struct DecryptAnswer<'a> {
    #[serde(borrow)]
    plaintext: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_what_cipher_trust_expects() {
        let body = json_body(&CreateKey {
            name: "k",
            algorithm: "AES",
            size: 256,
            usage_mask: USAGE_ENCRYPT_DECRYPT,
            unexportable: true,
        });
        assert_eq!(
            &body[..],
            br#"{"name":"k","algorithm":"AES","size":256,"usageMask":12,"unexportable":true}"#
        );
        let body = json_body(&EncryptRequest {
            id: "k",
            kind: "name",
            plaintext: "AA==",
            mode: "gcm",
            aad: None,
        });
        assert_eq!(
            &body[..],
            br#"{"id":"k","type":"name","plaintext":"AA==","mode":"gcm"}"#
        );
    }
}
