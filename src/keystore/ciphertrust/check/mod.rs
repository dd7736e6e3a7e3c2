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

use super::CipherTrust;
use super::config::CipherTrustConfig;
use super::keys2::KeyObject;
use super::secrets::CreateSecret;
use super::stats::CmRoute;
use super::transport::{Answer, CALL_BUDGET, Method, OTHER_ANSWER_LIMIT, json_body};

mod resident;
use crate::keystore::KeyStoreError;
use crate::keystore::report::{Report, Row, Verdict};

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
    /// Both modes (the token, the listing of secrets).
    Always,
    /// Secrets mode (`master_keys: exported`, the original's): keys are secrets that kes
    /// creates, exports and deletes (ciphertrust.md §4–§6).
    Secrets,
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
            Need::Secrets if !self.resident => Verdict::Fail,
            Need::Secrets => Verdict::Warn,
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
        if self.stopped() {
            return;
        }
        self.delete_secret();
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

    /// Both throw-away names are unused: kes never touches what exists. The secret's name
    /// is looked for as each mode does: by export (secrets mode) and by its metadata
    /// (resident mode: a new key may not take a secret's name).
    fn names_are_free(&mut self) -> bool {
        let mut free = true;
        for (step, route, method, suffix, need) in [
            (
                "name is free (secret)",
                CmRoute::SecretExport,
                Method::Post,
                "/export?type=name",
                Need::Secrets,
            ),
            (
                "name is free (secret metadata)",
                CmRoute::SecretRead,
                Method::Get,
                "?type=name",
                Need::Resident,
            ),
        ] {
            let url = self.store.secret_url(&self.secret, suffix);
            let reply = self.call(route, method, &url, None);
            let name = self.secret.clone();
            self.step(step, route, need, &reply, |answer| {
                Judged::status(answer.status == 404, format!("{name}: expected 404"))
            });
            free &= !exists(&reply);
        }
        let url = self.store.key_url(&self.key, "?type=name");
        let reply = self.call(CmRoute::KeyRead, Method::Get, &url, None);
        let name = self.key.clone();
        self.step(
            "name is free (key)",
            CmRoute::KeyRead,
            Need::Resident,
            &reply,
            |answer| Judged::status(answer.status == 404, format!("{name}: expected 404")),
        );
        // Something of either name (a 200) is never touched: the check stops. Any other
        // answer (a refused permission) lets it go on; what it cannot create, it never
        // deletes.
        free && !exists(&reply)
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
        let reply = self.call(
            CmRoute::SecretCreate,
            Method::Post,
            &url_of_secrets(self.store),
            Some(&body),
        );
        self.made_secret = reply.as_ref().is_ok_and(|a| matches!(a.status, 200 | 201));
        self.step(
            "create secret",
            CmRoute::SecretCreate,
            Need::Secrets,
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
            Need::Secrets,
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
        let url = self.store.secret_url(&self.secret, "?type=name");
        let reply = self.call(CmRoute::SecretRead, Method::Get, &url, None);
        self.step(
            "secret metadata",
            CmRoute::SecretRead,
            Need::Resident,
            &reply,
            |answer| {
                Judged::status(
                    answer.status == 200,
                    "expected 200 (kes: the name is taken)",
                )
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
            Need::Secrets,
            &reply,
            |answer| {
                Judged::status(
                    answer.status == 409,
                    "expected 409 (kes: key already exists)",
                )
            },
        );
    }

    /// Deletes the check's secret as kes deletes keys in secrets mode, and sees it gone.
    fn delete_secret(&mut self) {
        if !self.made_secret {
            return;
        }
        let url = self.store.secret_url(&self.secret, "?type=name");
        let reply = self.call(CmRoute::SecretDelete, Method::Delete, &url, None);
        let deleted = self.step(
            "delete secret",
            CmRoute::SecretDelete,
            Need::Secrets,
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
            Need::Secrets,
            &reply,
            |answer| Judged::status(answer.status == 404, "expected 404"),
        );
        self.made_secret = !(deleted && gone);
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

fn exists(reply: &Reply) -> bool {
    reply.as_ref().is_ok_and(|answer| answer.status == 200)
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
