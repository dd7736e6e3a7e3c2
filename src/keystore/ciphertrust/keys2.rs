//! Resident master keys (`master_keys: resident`): non-exportable CipherTrust key objects
//! (`/api/v1/vault/keys2`) that kes creates, looks up, rotates and deletes, and never
//! reads. Encrypt and decrypt with them are in `crypto`. See docs/ciphertrust.md for the
//! public evidence behind each form sent here.
//!
//! CipherTrust keeps every version of a key as an object of its own, with its own id and
//! the same name; a lookup by name answers the newest. Its key listings also carry other
//! object types (secrets, certificates), so every object kes takes for a resident key is
//! checked to be a symmetric AES key of exactly that name.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::CipherTrust;
use super::stats::CmRoute;
use super::transport::{
    Answer, CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, encode_path_segment, json_body,
};
use crate::keystore::KeyStoreError;

/// `usageMask` of a key that may encrypt (4) and decrypt (8), and nothing else.
const USAGE_ENCRYPT_DECRYPT: u32 = 12;

/// The `objectType` of a symmetric key; secrets are "Secret Data" or "Opaque Object".
const SYMMETRIC_KEY: &str = "Symmetric Key";

/// Versions deleted at once when a key is deleted.
const PARALLEL_DELETES: usize = 8;

/// What kes reads of a CipherTrust key object: never material (there is none to read).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyObject {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) version: Option<u32>,
    #[serde(default, rename = "objectType")]
    pub(super) object_type: Option<String>,
    #[serde(default)]
    pub(super) algorithm: Option<String>,
}

impl KeyObject {
    /// Whether this object is a resident key of that name: a symmetric AES key. An
    /// answer without `objectType` is judged by its `algorithm` alone.
    pub(super) fn is_resident_key(&self, name: &str) -> bool {
        let aes = |algorithm: &str| algorithm.eq_ignore_ascii_case("AES");
        let right_type = match &self.object_type {
            Some(kind) => {
                kind.eq_ignore_ascii_case(SYMMETRIC_KEY)
                    && self.algorithm.as_deref().is_none_or(aes)
            }
            None => self.algorithm.as_deref().is_some_and(aes),
        };
        right_type && self.name.as_deref().is_none_or(|n| n == name)
    }

    /// The id and version, which kes relies on; a missing one is named.
    pub(super) fn id_and_version(&self) -> Result<(&str, u32), &'static str> {
        let id = self.id.as_deref().filter(|id| !id.is_empty()).ok_or("id")?;
        let version = self.version.ok_or("version")?;
        Ok((id, version))
    }
}

/// Where a version's id was looked for.
pub(super) enum VersionLookup {
    /// The id of that version.
    Found(String),
    /// The key has newer versions but not this one: it was deleted in CipherTrust.
    Deleted,
    /// The key never had this version (newer than its newest), or no longer exists.
    Unknown,
}

impl CipherTrust {
    pub(super) fn key_url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/api/v1/vault/keys2/{}{suffix}",
            self.shared.endpoint(),
            encode_path_segment(name)
        )
    }

    /// An answer kes cannot use: the message names the call, the key and what is wrong.
    pub(super) fn unusable(
        &self,
        route: CmRoute,
        name: &str,
        why: impl std::fmt::Display,
    ) -> KeyStoreError {
        KeyStoreError::Other(format!(
            "CipherTrust Manager's answer to {} for key '{name}' is unusable: {why}",
            route.request_line()
        ))
    }

    /// A key object from an answer, with the id and version kes relies on (remembered).
    fn key_object(
        &self,
        route: CmRoute,
        name: &str,
        answer: &Answer,
    ) -> Result<KeyObject, KeyStoreError> {
        let object: KeyObject =
            serde_json::from_slice(&answer.body).map_err(|err| self.unusable(route, name, err))?;
        let (id, version) = object
            .id_and_version()
            .map_err(|field| self.unusable(route, name, format!("it lacks `{field}`")))?;
        self.versions.remember(name, version, id);
        Ok(object)
    }

    /// The newest version of resident key `name`, or `None` if CipherTrust has no key of
    /// that name, or what it has under that name is not a symmetric AES key (a secret of
    /// a key kes keeps in secrets mode, a certificate).
    pub(super) fn lookup_key(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<KeyObject>, KeyStoreError> {
        let route = CmRoute::KeyRead;
        let answer = self.shared.authorized(
            route,
            Method::Get,
            &self.key_url(name, "?type=name"),
            None,
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 => {
                let object: KeyObject = serde_json::from_slice(&answer.body)
                    .map_err(|err| self.unusable(route, name, err))?;
                if !object.is_resident_key(name) {
                    log::debug!(
                        "CipherTrust Manager has an object named '{name}' that is not a symmetric AES key ({}); not a resident key",
                        object.object_type.as_deref().unwrap_or("no objectType")
                    );
                    return Ok(None);
                }
                let (id, version) = object
                    .id_and_version()
                    .map_err(|field| self.unusable(route, name, format!("it lacks `{field}`")))?;
                self.versions.remember(name, version, id);
                Ok(Some(object))
            }
            404 => Ok(None),
            _ => Err(self
                .shared
                .refusal(route, &format!("could not read key '{name}'"), &answer)),
        }
    }

    /// Every version of resident key `name`: a listing filtered by name (the filter is a
    /// pattern to CipherTrust, so each entry is checked to carry exactly that name).
    pub(super) fn key_versions(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<KeyObject>, KeyStoreError> {
        let filter = format!("&name={}", encode_path_segment(name));
        let listed: Vec<KeyObject> =
            self.list_all(CmRoute::KeyList, "keys2", &filter, "key versions", deadline)?;
        let mut versions = Vec::new();
        for object in listed {
            if !object.is_resident_key(name) || object.name.as_deref() != Some(name) {
                continue;
            }
            let (id, version) = object.id_and_version().map_err(|field| {
                self.unusable(CmRoute::KeyList, name, format!("a version lacks `{field}`"))
            })?;
            self.versions.remember(name, version, id);
            versions.push(object);
        }
        Ok(versions)
    }

    /// The id of `version` of key `name`: remembered, or learned from a listing of the
    /// key's versions.
    pub(super) fn version_id(
        &self,
        name: &str,
        version: u32,
        deadline: Instant,
    ) -> Result<VersionLookup, KeyStoreError> {
        if let Some(id) = self.versions.get(name, version) {
            return Ok(VersionLookup::Found(id));
        }
        let versions = self.key_versions(name, deadline)?;
        if let Some(id) = self.versions.get(name, version) {
            return Ok(VersionLookup::Found(id));
        }
        let newest = versions.iter().filter_map(|v| v.version).max();
        Ok(match newest {
            Some(newest) if version < newest => VersionLookup::Deleted,
            _ => VersionLookup::Unknown,
        })
    }

    /// Whether secret `name` exists, without exporting it.
    fn secret_exists(&self, name: &str, deadline: Instant) -> Result<bool, KeyStoreError> {
        let route = CmRoute::SecretRead;
        let url = self.secret_url(name, "?type=name");
        let answer =
            self.shared
                .authorized(route, Method::Get, &url, None, OTHER_ANSWER_LIMIT, deadline)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self
                .shared
                .refusal(route, &format!("could not read key '{name}'"), &answer)),
        }
    }

    /// Creates non-exportable key `name`, unless a key or secret of that name exists (a
    /// resident key would hide the secret, and every ciphertext made with it).
    pub(super) fn create_key(&self, name: &str) -> Result<u32, KeyStoreError> {
        let route = CmRoute::KeyCreate;
        let deadline = Instant::now() + CALL_BUDGET;
        if self.secret_exists(name, deadline)? {
            return Err(KeyStoreError::Exists);
        }
        let answer = self.shared.authorized(
            route,
            Method::Post,
            &format!("{}/api/v1/vault/keys2", self.shared.endpoint()),
            Some(&create_key_body(name)),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => self.new_version(route, name, &answer, deadline),
            // An earlier attempt may have created it: a key of ours has no material to
            // compare, but any resident key of this name now is one kes asked for.
            409 if answer.may_have_been_applied => self
                .lookup_key(name, deadline)?
                .and_then(|object| object.version)
                .ok_or(KeyStoreError::Exists),
            409 => Err(KeyStoreError::Exists),
            _ => {
                Err(self
                    .shared
                    .refusal(route, &format!("could not create key '{name}'"), &answer))
            }
        }
    }

    /// The version a create or rotate answer names. An answer without a version (no
    /// public source guarantees one) is followed by a lookup, which names the newest.
    fn new_version(
        &self,
        route: CmRoute,
        name: &str,
        answer: &Answer,
        deadline: Instant,
    ) -> Result<u32, KeyStoreError> {
        match self.key_object(route, name, answer) {
            Ok(object) => Ok(object.version.unwrap_or_default()),
            Err(incomplete) => {
                log::debug!("{incomplete}; looking the key up");
                self.lookup_key(name, deadline)?
                    .and_then(|object| object.version)
                    .ok_or(incomplete)
            }
        }
    }

    /// Adds a version to key `name` and returns it.
    pub(super) fn rotate_key(&self, name: &str) -> Result<u32, KeyStoreError> {
        let route = CmRoute::KeyRotate;
        let deadline = Instant::now() + CALL_BUDGET;
        let answer = self.shared.authorized(
            route,
            Method::Post,
            &self.key_url(name, "/versions/?type=name"),
            Some(b"{}"),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => self.new_version(route, name, &answer, deadline),
            404 => Err(KeyStoreError::NotFound),
            _ => {
                Err(self
                    .shared
                    .refusal(route, &format!("could not rotate key '{name}'"), &answer))
            }
        }
    }

    /// Deletes every version of key `name`, each by its id, several at once; `Ok(false)`
    /// if there was none. A key whose versions were not all deleted within the time
    /// limit is reported as partly deleted, never as deleted.
    pub(super) fn delete_key(&self, name: &str, deadline: Instant) -> Result<bool, KeyStoreError> {
        let mut deleted = 0usize;
        let outcome = self.delete_all_versions(name, deadline, &mut deleted);
        self.versions.forget(name);
        outcome.map_err(|failure| {
            if deleted == 0 {
                return failure;
            }
            let why = match &failure {
                KeyStoreError::Unreachable(why)
                | KeyStoreError::Other(why)
                | KeyStoreError::Unsupported(why) => why.clone(),
                other => other.to_string(),
            };
            let partly = format!(
                "key '{name}' is partly deleted ({deleted} versions removed, at least one left); delete it again: {why}"
            );
            match failure {
                KeyStoreError::Unreachable(_) => KeyStoreError::Unreachable(partly),
                _ => KeyStoreError::Other(partly),
            }
        })?;
        Ok(deleted > 0)
    }

    fn delete_all_versions(
        &self,
        name: &str,
        deadline: Instant,
        deleted: &mut usize,
    ) -> Result<(), KeyStoreError> {
        // A version made while we delete (a rotation elsewhere) shows in the next listing;
        // one that stays listed after its delete succeeded is reported, not deleted again
        // and again.
        for _ in 0..3 {
            let versions = self.key_versions(name, deadline)?;
            if versions.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = versions.iter().filter_map(|v| v.id.as_deref()).collect();
            let failures = self.delete_versions(name, &ids, deadline);
            *deleted += ids.len() - failures.len();
            if let Some(failure) = failures.into_iter().next() {
                return Err(failure);
            }
        }
        Err(KeyStoreError::Other(format!(
            "CipherTrust Manager still lists versions of key '{name}' after deleting them"
        )))
    }

    /// Deletes the versions `ids` of key `name`; returns the failures.
    fn delete_versions(&self, name: &str, ids: &[&str], deadline: Instant) -> Vec<KeyStoreError> {
        let delete_one = |id: &str| -> Result<(), KeyStoreError> {
            let route = CmRoute::KeyDelete;
            let url = self.key_url(id, "?type=id");
            let answer = self.shared.authorized(
                route,
                Method::Delete,
                &url,
                None,
                OTHER_ANSWER_LIMIT,
                deadline,
            )?;
            match answer.status {
                // 404: gone already (deleted by another node, or by an earlier attempt).
                200 | 204 | 404 => Ok(()),
                _ => Err(self.shared.refusal(
                    route,
                    &format!("could not delete a version of key '{name}'"),
                    &answer,
                )),
            }
        };
        let chunk = ids.len().div_ceil(PARALLEL_DELETES).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|id| delete_one(id).err())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| {
                    worker.join().unwrap_or_else(|_| {
                        vec![KeyStoreError::Other("a key version delete failed".into())]
                    })
                })
                .collect()
        })
    }

    /// Every resident key name (listings carry one entry per version, and other object
    /// types too), sorted, each once.
    pub(super) fn all_key_names(&self, deadline: Instant) -> Result<Vec<String>, KeyStoreError> {
        let listed: Vec<KeyObject> =
            self.list_all(CmRoute::KeyList, "keys2", "", "keys", deadline)?;
        let mut names: Vec<String> = listed
            .into_iter()
            .filter_map(|object| {
                let name = object.name.clone()?;
                (!name.is_empty() && object.is_resident_key(&name)).then_some(name)
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
}

/// The body of a key create: AES-256, encrypt and decrypt only, never exportable, owned
/// by kes's CipherTrust user (a user that is not an administrator must name an owner;
/// Thales' own Terraform provider and Yugabyte send the same). `aes` in lower case, as
/// the client proven against a live CipherTrust sends it.
pub(super) fn create_key_body(name: &str) -> zeroize::Zeroizing<Vec<u8>> {
    json_body(&CreateKey {
        name,
        algorithm: "aes",
        size: 256,
        usage_mask: USAGE_ENCRYPT_DECRYPT,
        unexportable: true,
        assign_self_as_owner: true,
    })
}

#[derive(Serialize)]
struct CreateKey<'a> {
    name: &'a str,
    algorithm: &'a str,
    size: u32,
    #[serde(rename = "usageMask")]
    usage_mask: u32,
    unexportable: bool,
    #[serde(rename = "assignSelfAsOwner")]
    assign_self_as_owner: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> KeyObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_create_body_is_what_cipher_trust_expects() {
        assert_eq!(
            &create_key_body("k")[..],
            br#"{"name":"k","algorithm":"aes","size":256,"usageMask":12,"unexportable":true,"assignSelfAsOwner":true}"#
        );
    }

    #[test]
    fn only_a_symmetric_aes_key_of_that_name_is_a_resident_key() {
        let key =
            r#"{"id":"i","name":"k","version":2,"objectType":"Symmetric Key","algorithm":"AES"}"#;
        assert!(object(key).is_resident_key("k"));
        assert!(!object(key).is_resident_key("other"));
        assert!(object(r#"{"objectType":"symmetric key","algorithm":"aes"}"#).is_resident_key("k"));
        assert!(object(r#"{"algorithm":"AES"}"#).is_resident_key("k"));
        for other in [
            r#"{"name":"k","objectType":"Secret Data"}"#,
            r#"{"name":"k","objectType":"Opaque Object","algorithm":"OPAQUE"}"#,
            r#"{"name":"k","objectType":"Certificate"}"#,
            r#"{"name":"k","objectType":"Symmetric Key","algorithm":"HMAC-SHA256"}"#,
            r#"{"name":"k","algorithm":"RSA"}"#,
            r#"{"name":"k"}"#,
        ] {
            assert!(!object(other).is_resident_key("k"), "{other}");
        }
    }

    #[test]
    fn a_missing_id_or_version_is_named() {
        assert_eq!(
            object(r#"{"id":"i","version":0}"#).id_and_version(),
            Ok(("i", 0))
        );
        assert_eq!(object(r#"{"version":0}"#).id_and_version(), Err("id"));
        assert_eq!(
            object(r#"{"id":"","version":0}"#).id_and_version(),
            Err("id")
        );
        assert_eq!(object(r#"{"id":"i"}"#).id_and_version(), Err("version"));
    }
}
