//! KES keys stored as CipherTrust *secrets* of type `seed` (the original's way,
//! ciphertrust.md §4–§7): kes exports the stored value into its own memory.

use std::borrow::Cow;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::CipherTrust;
use super::stats::CmRoute;
use super::transport::{CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, encode_path_segment, json_body};
use crate::keystore::{KeyStoreError, ListPage, StoredValue, page_of};

pub(super) const EXPORT_ANSWER_LIMIT: u64 = 2 << 20;

impl CipherTrust {
    /// Reads secret `name` (ciphertrust.md §5) within `deadline`.
    pub(super) fn export(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<StoredValue, KeyStoreError> {
        let url = self.secret_url(name, "/export?type=name");
        let answer = self.shared.authorized(
            CmRoute::SecretExport,
            Method::Post,
            &url,
            None,
            EXPORT_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 => {
                let unusable = |why: String| {
                    KeyStoreError::Other(format!(
                        "CipherTrust Manager sent an unusable answer for key '{name}': {why}"
                    ))
                };
                let mut export: ExportedSecret<'_> = serde_json::from_slice(&answer.body)
                    .map_err(|err| unusable(err.to_string()))?;
                let material = export
                    .material
                    .take()
                    .ok_or_else(|| unusable("no material".into()))?;
                let value = Zeroizing::new(material.as_bytes().to_vec());
                if let Cow::Owned(mut owned) = material {
                    owned.zeroize();
                }
                Ok(value)
            }
            404 => Err(KeyStoreError::NotFound),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not export key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    pub(super) fn secret_url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/api/v1/vault/secrets/{}{suffix}",
            self.shared.endpoint(),
            encode_path_segment(name)
        )
    }

    /// Stores `value` as secret `name` (ciphertrust.md §4).
    pub(super) fn create_secret(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let material = std::str::from_utf8(value).map_err(|_| {
            KeyStoreError::Other(format!(
                "cannot store key '{name}' in CipherTrust Manager: secrets hold text, but the key value is not UTF-8"
            ))
        })?;
        let body = json_body(&CreateSecret {
            data_type: "seed",
            material,
            name,
        });
        let deadline = Instant::now() + CALL_BUDGET;
        let url = format!("{}/api/v1/vault/secrets", self.shared.endpoint());
        let answer = self.shared.authorized(
            CmRoute::SecretCreate,
            Method::Post,
            &url,
            Some(&body),
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            200 | 201 => Ok(()),
            409 if answer.may_have_been_applied => {
                // An earlier attempt timed out or failed with 5xx, and may have created the
                // secret before it did. If the stored value is ours, the create succeeded.
                match self.export(name, deadline) {
                    Ok(stored) if stored.as_slice() == value => Ok(()),
                    _ => Err(KeyStoreError::Exists),
                }
            }
            409 => Err(KeyStoreError::Exists),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not create key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    /// Deletes secret `name` (ciphertrust.md §6).
    pub(super) fn delete_secret(&self, name: &str) -> Result<(), KeyStoreError> {
        let deadline = Instant::now() + CALL_BUDGET;
        let url = self.secret_url(name, "?type=name");
        let answer = self.shared.authorized(
            CmRoute::SecretDelete,
            Method::Delete,
            &url,
            None,
            OTHER_ANSWER_LIMIT,
            deadline,
        )?;
        match answer.status {
            // CipherTrust also answers 404 when the caller may not see the secret, so a 404
            // cannot be told from "already gone"; like the original, count it as deleted.
            200 | 204 | 404 => Ok(()),
            _ => Err(KeyStoreError::Other(format!(
                "CipherTrust Manager could not delete key '{name}': {}",
                self.shared.explain(&answer)
            ))),
        }
    }

    /// Lists all secret names, pages them like every keystore (ciphertrust.md §7).
    pub(super) fn list_secrets(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError> {
        let names = self.all_secret_names(Instant::now() + CALL_BUDGET)?;
        Ok(page_of(&names, prefix, start, limit))
    }

    /// Every secret name, sorted, each once.
    pub(super) fn all_secret_names(&self, deadline: Instant) -> Result<Vec<String>, KeyStoreError> {
        let entries: Vec<SecretName> =
            self.list_all(CmRoute::SecretList, "secrets", "", "secrets", deadline)?;
        let mut names: Vec<String> = entries
            .into_iter()
            .map(|entry| entry.name)
            .filter(|name| !name.is_empty())
            .collect();
        // Names created or deleted while we paged can shift a name onto two pages.
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
}

#[derive(Serialize)]
pub(super) struct CreateSecret<'a> {
    #[serde(rename = "dataType")]
    pub(super) data_type: &'a str,
    pub(super) material: &'a str,
    pub(super) name: &'a str,
}

#[derive(Deserialize)]
pub(super) struct ExportedSecret<'a> {
    #[serde(borrow, default)]
    pub(super) material: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct SecretName {
    #[serde(default)]
    pub(super) name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::ciphertrust::transport::json_body;

    #[test]
    fn secret_body_has_the_original_field_order() {
        let body = json_body(&CreateSecret {
            data_type: "seed",
            material: "m\"x",
            name: "k",
        });
        assert_eq!(
            &body[..],
            br#"{"dataType":"seed","material":"m\"x","name":"k"}"#
        );
        assert_eq!(body.capacity(), body.len());
    }
}
