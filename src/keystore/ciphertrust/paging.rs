//! CipherTrust's paged listings (`GET /api/v1/vault/{secrets,keys2}?skip=…&limit=…`,
//! ciphertrust.md §7): every page of one listing, read within one deadline, with the
//! original's guards against a listing that is out of step or cannot advance.

use std::time::Instant;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::CipherTrust;
use super::stats::CmRoute;
use super::transport::Method;
use crate::keystore::KeyStoreError;

/// Entries per list request, as the original.
pub(super) const LIST_PAGE_SIZE: usize = 200;

pub(super) const LIST_ANSWER_LIMIT: u64 = 32 << 20;

/// One page: `resources` may be `null` on an empty listing.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    #[serde(default)]
    skip: u64,
    #[serde(default)]
    total: u64,
    #[serde(default, deserialize_with = "null_is_empty")]
    resources: Vec<T>,
}

fn null_is_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl CipherTrust {
    /// Every entry of `/api/v1/vault/{collection}` (with `filter`, e.g. `&name=k`), page
    /// by page. `noun` names the entries in error messages.
    pub(super) fn list_all<T: DeserializeOwned>(
        &self,
        route: CmRoute,
        collection: &str,
        filter: &str,
        noun: &str,
        deadline: Instant,
    ) -> Result<Vec<T>, KeyStoreError> {
        let mut all = Vec::new();
        let mut skip: u64 = 0;
        loop {
            let url = format!(
                "{}/api/v1/vault/{collection}?limit={LIST_PAGE_SIZE}&skip={skip}{filter}",
                self.shared.endpoint()
            );
            let answer = self.shared.authorized(
                route,
                Method::Get,
                &url,
                None,
                LIST_ANSWER_LIMIT,
                deadline,
            )?;
            if answer.status != 200 {
                return Err(self
                    .shared
                    .refusal(route, &format!("could not list {noun}"), &answer));
            }
            let page: Page<T> = serde_json::from_slice(&answer.body).map_err(|err| {
                KeyStoreError::Other(format!(
                    "CipherTrust Manager sent an unusable list of {noun}: {err}"
                ))
            })?;
            if page.skip != skip {
                return Err(KeyStoreError::Other(format!(
                    "CipherTrust Manager's listing is out of step: asked to skip {skip} {noun}, it skipped {}; try again",
                    page.skip
                )));
            }
            let received = page.resources.len() as u64;
            all.extend(page.resources);
            skip += received;
            if skip >= page.total {
                return Ok(all);
            }
            if received == 0 {
                // Asking again would get the same empty page forever.
                return Err(KeyStoreError::Other(format!(
                    "CipherTrust Manager returned an empty page after {skip} of {} {noun}; the listing cannot advance, try again",
                    page.total
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Named {
        name: String,
    }

    #[test]
    fn a_null_or_missing_resource_list_is_empty() {
        for body in [
            r#"{"skip":0,"total":0,"resources":null}"#,
            r#"{"skip":0,"total":0}"#,
        ] {
            let page: Page<Named> = serde_json::from_str(body).unwrap();
            assert!(page.resources.is_empty());
        }
        let page: Page<Named> =
            serde_json::from_str(r#"{"skip":0,"total":1,"resources":[{"name":"a"}]}"#).unwrap();
        assert_eq!(page.resources[0].name, "a");
    }
}
