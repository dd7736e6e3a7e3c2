//! MinIO's own KES clients through the real binary over real mTLS: the requests the
//! 2023 SDK (kes-go v0.1.0, in 2023 MinIO) and the last SDK (kms-go/kes v0.3.1, in
//! 2025 MinIO) send, written as Go's HTTP client writes them, and the answers decoded
//! by structs that mirror the SDKs' Go structs field by field (a list field fed an
//! object fails, as Go's decoder fails).

mod common;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use common::{Client, Credential, Kes, Pki, Resp};

/// MinIO's policy from the KES docs, as MinIO deployments copy it.
const DOCS_MINIO_RULES: &[&str] = &[
    "/v1/key/create/*",
    "/v1/key/generate/*",
    "/v1/key/decrypt/*",
    "/v1/key/bulk/decrypt",
    "/v1/key/list/*",
    "/v1/status",
    "/v1/metrics",
    "/v1/log/audit",
    "/v1/log/error",
];

struct Setup {
    pki: Pki,
    kes: Kes,
    admin: Credential,
    /// Under the docs' MinIO policy.
    minio: Credential,
    /// Under the docs' MinIO policy plus `/v1/key/bulk/decrypt/*`.
    minio_bulk: Credential,
    /// May list policies and identities, nothing else.
    lister: Credential,
    /// May list only names with a given prefix.
    narrow: Credential,
}

fn start() -> Setup {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let minio = pki.client("minio");
    let minio_bulk = pki.client("minio-bulk");
    let lister = pki.client("lister");
    let narrow = pki.client("narrow");
    let rules = |extra: &[&str]| {
        DOCS_MINIO_RULES
            .iter()
            .chain(extra)
            .map(|r| format!("    - {r}\n"))
            .collect::<String>()
    };
    let config = format!(
        "admin:\n  identity: {}\npolicy:\n  minio-docs:\n    allow:\n{}    identities: [{}]\n  minio-bulk:\n    allow:\n{}    identities: [{}]\n  lister:\n    allow: [/v1/policy/list/*, /v1/identity/list/*]\n    identities: [{}]\n  narrow:\n    allow: [/v1/key/list/my-app*, /v1/policy/list/minio*, /v1/identity/list/0*]\n    identities: [{}]\nkeystore:\n  fs:\n    path: {}\n",
        admin.identity,
        rules(&[]),
        minio.identity,
        rules(&["/v1/key/bulk/decrypt/*"]),
        minio_bulk.identity,
        lister.identity,
        narrow.identity,
        pki.path("keys").display()
    );
    let path = pki.config("config.yml", &config);
    let kes = Kes::start(&pki, &path, &[]);
    Setup {
        pki,
        kes,
        admin,
        minio,
        minio_bulk,
        lister,
        narrow,
    }
}

/// A request as Go's `net/http` client writes it for both SDKs: no User-Agent of their
/// own, and a body of unknown length (the SDKs wrap it for retries) sent chunked.
fn go_request(method: &str, path: &str, body: Option<(&[u8], Option<&str>)>) -> Vec<u8> {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:7373\r\nUser-Agent: Go-http-client/1.1\r\n"
    );
    if let Some((_, content_type)) = body {
        raw.push_str("Transfer-Encoding: chunked\r\n");
        if let Some(content_type) = content_type {
            raw.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
    }
    raw.push_str("Accept-Encoding: gzip\r\n\r\n");
    let mut raw = raw.into_bytes();
    if let Some((bytes, _)) = body {
        raw.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        raw.extend_from_slice(bytes);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
    }
    raw
}

fn go_get(c: &mut Client, path: &str) -> Resp {
    c.send_raw(&go_request("GET", path, None))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn go_post(c: &mut Client, path: &str, body: &Value, content_type: Option<&str>) -> Resp {
    let bytes = body.to_string().into_bytes();
    c.send_raw(&go_request("POST", path, Some((&bytes, content_type))))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Go's `time.Time` in JSON: `null`, or an RFC 3339 string (an empty or other string is
/// an error).
#[derive(Debug, Default)]
struct GoTime(Option<String>);

impl<'de> Deserialize<'de> for GoTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        if let Some(s) = &s {
            if !is_rfc3339(s) {
                return Err(serde::de::Error::custom(format!(
                    "parsing time {s:?} as RFC 3339"
                )));
            }
        }
        Ok(GoTime(s))
    }
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && digits(5..7) && digits(8..10) && digits(11..13))
        || !(digits(14..16) && digits(17..19))
        || (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b'T', b':', b':')
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':')
}

/// The last SDK's `kes.Rule` is `struct{}`: an object (any members) or `null`.
type GoRule = Option<Map<String, Value>>;

/// kes-go v0.1.0 `DescribeSelf`: `Response` with its `InlinePolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SelfDescribe2023 {
    identity: Option<String>,
    admin: Option<bool>,
    policy_name: Option<String>,
    #[allow(dead_code)]
    created_at: GoTime,
    #[allow(dead_code)]
    created_by: Option<String>,
    policy: Option<InlinePolicy2023>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InlinePolicy2023 {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    #[allow(dead_code)]
    created_at: GoTime,
    #[allow(dead_code)]
    created_by: Option<String>,
}

/// kms-go/kes v0.3.1 `DescribeSelf`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct SelfDescribe2025 {
    identity: Option<String>,
    admin: Option<bool>,
    ttl: Option<String>,
    expires_at: GoTime,
    created_at: GoTime,
    created_by: Option<String>,
    children: Option<Vec<String>>,
    policy: Option<String>,
    allow: Option<HashMap<String, GoRule>>,
    deny: Option<HashMap<String, GoRule>>,
}

/// kes-go v0.1.0 `GetPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct PolicyRead2023 {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    created_at: GoTime,
    created_by: Option<String>,
}

/// kms-go/kes v0.3.1 `GetPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct PolicyRead2025 {
    allow: Option<HashMap<String, GoRule>>,
    deny: Option<HashMap<String, GoRule>>,
    created_at: GoTime,
    created_by: Option<String>,
}

/// One NDJSON line of a listing, as the last SDK's `parseLegacyListing` reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LegacyListing {
    name: Option<String>,
    error: Option<String>,
}

/// What the last SDK's `ListKeys` makes of a listing answer.
fn last_sdk_names(resp: &Resp) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-ndjson"),
        "the last SDK reads the one-object-per-line form only with this exact type"
    );
    let mut names: Vec<String> = resp
        .text()
        .lines()
        .map(|line| {
            let entry: LegacyListing = serde_json::from_str(line).expect(line);
            assert_eq!(entry.error, None, "{line}");
            entry.name.unwrap_or_default()
        })
        .collect();
    names.sort();
    names
}

fn assert_not_allowed(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 403, "{what}: {}", resp.text());
    assert_eq!(
        resp.message(),
        "not authorized: insufficient permissions",
        "{what}"
    );
}

#[test]
fn last_minio_lists_keys_under_the_docs_policy_as_after_the_go_redirect() {
    let s = start();
    let mut admin = s.kes.client(&s.admin);
    for key in ["my-app-1", "other"] {
        assert_eq!(
            admin.post(&format!("/v1/key/create/{key}"), b"").status,
            200
        );
    }
    let all = vec!["my-app-1".to_string(), "other".to_string()];

    // 2025 MinIO's `ListKeys` with the empty prefix: `/v1/key/list`, no slash.
    let mut minio = s.kes.client(&s.minio);
    assert_eq!(last_sdk_names(&go_get(&mut minio, "/v1/key/list")), all);
    assert_eq!(
        last_sdk_names(&go_get(&mut minio, "/v1/key/list/my")),
        ["my-app-1"]
    );
    // 2023 MinIO lists with a pattern, always.
    let lines = go_get(&mut minio, "/v1/key/list/*");
    assert_eq!(lines.status, 200, "{}", lines.text());
    assert_eq!(lines.text().lines().count(), 2);
    assert_eq!(last_sdk_names(&go_get(&mut admin, "/v1/key/list")), all);

    // A narrower rule admits no more than the Go servers did: there `/v1/key/list` was
    // redirected to `/v1/key/list/` and checked as such.
    let mut narrow = s.kes.client(&s.narrow);
    assert_not_allowed(&go_get(&mut narrow, "/v1/key/list"), "narrow, all keys");
    assert_not_allowed(&go_get(&mut narrow, "/v1/key/list/"), "narrow, empty");
    assert_not_allowed(&go_get(&mut narrow, "/v1/key/list/*"), "narrow, *");
    assert_eq!(
        last_sdk_names(&go_get(&mut narrow, "/v1/key/list/my-app")),
        ["my-app-1"]
    );
    // The docs' policy allows no policy or identity listing, with or without slash.
    for path in ["/v1/policy/list", "/v1/identity/list", "/v1/policy/list/*"] {
        assert_not_allowed(&go_get(&mut minio, path), path);
    }

    // Policies and identities: the same rule.
    let mut lister = s.kes.client(&s.lister);
    let policies = last_sdk_names(&go_get(&mut lister, "/v1/policy/list"));
    assert_eq!(policies, ["lister", "minio-bulk", "minio-docs", "narrow"]);
    let identities = go_get(&mut lister, "/v1/identity/list");
    assert_eq!(identities.status, 200, "{}", identities.text());
    assert!(identities.text().contains(&s.minio.identity));
    assert_not_allowed(&go_get(&mut lister, "/v1/key/list"), "lister, keys");
    assert_not_allowed(&go_get(&mut narrow, "/v1/policy/list"), "narrow, policies");
    assert_eq!(
        last_sdk_names(&go_get(&mut narrow, "/v1/policy/list/minio")),
        ["minio-bulk", "minio-docs"]
    );
    assert_not_allowed(
        &go_get(&mut narrow, "/v1/identity/list"),
        "narrow, identities",
    );

    // Other prefix routes without slash are redirected before any identity or policy
    // is looked at; the target is the route itself, never anything from the request.
    let mut stranger = s.kes.client(&s.pki.client("stranger"));
    let moved = go_get(&mut stranger, "/v1/key/describe");
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/v1/key/describe/"));
}

/// What 2023 MinIO decides at startup: bulk decryption if the self-describe answer
/// decodes and lists an allow rule starting with `/v1/key/bulk/decrypt/`.
fn minio_2023_bulk_available(c: &mut Client) -> bool {
    let resp = go_get(c, "/v1/identity/self/describe");
    if resp.status != 200 {
        return false;
    }
    match serde_json::from_slice::<SelfDescribe2023>(&resp.body) {
        Ok(me) => me
            .policy
            .unwrap_or_default()
            .allow
            .unwrap_or_default()
            .iter()
            .any(|rule| rule.starts_with("/v1/key/bulk/decrypt/")),
        Err(_) => false,
    }
}

#[test]
fn minio_2023_uses_bulk_decryption_exactly_where_its_policy_allows_it() {
    let s = start();
    let mut admin = s.kes.client(&s.admin);
    assert_eq!(admin.post("/v1/key/create/minio-key", b"").status, 200);

    let mut bulk = s.kes.client(&s.minio_bulk);
    let mut docs = s.kes.client(&s.minio);
    assert!(minio_2023_bulk_available(&mut bulk));
    // The docs' rule `/v1/key/bulk/decrypt` is reported as written, as the 2023 server
    // did; MinIO does not recognise it and decrypts one by one (which that rule's
    // holder may do). The admin has no policy to report, as in 2023.
    assert!(!minio_2023_bulk_available(&mut docs));
    assert!(!minio_2023_bulk_available(&mut admin));

    // SSE: generate data keys under MinIO's context, then decrypt them as MinIO would.
    let context = B64.encode(br#"{"my-bucket":"my-object"}"#);
    let mut sealed = Vec::new();
    for _ in 0..3 {
        let dek = go_post(
            &mut bulk,
            "/v1/key/generate/minio-key",
            &json!({ "context": context }),
            None,
        );
        assert_eq!(dek.status, 200, "{}", dek.text());
        let dek = dek.json();
        sealed.push((
            dek["plaintext"].as_str().unwrap().to_string(),
            dek["ciphertext"].as_str().unwrap().to_string(),
        ));
    }
    let items: Vec<Value> = sealed
        .iter()
        .map(|(_, ct)| json!({ "ciphertext": ct, "context": context }))
        .collect();
    let opened = go_post(
        &mut bulk,
        "/v1/key/bulk/decrypt/minio-key",
        &Value::Array(items),
        Some("application/json"),
    );
    assert_eq!(opened.status, 200, "{}", opened.text());
    #[derive(Deserialize)]
    struct Pcp {
        plaintext: String,
    }
    let opened: Vec<Pcp> = serde_json::from_slice(&opened.body).unwrap();
    assert_eq!(opened.len(), sealed.len());
    for (pcp, (plaintext, _)) in opened.iter().zip(&sealed) {
        assert_eq!(&pcp.plaintext, plaintext);
    }
    // Without the bulk rule MinIO decrypts each key alone, which the docs' policy allows.
    let (plaintext, ciphertext) = &sealed[0];
    let one = go_post(
        &mut docs,
        "/v1/key/decrypt/minio-key",
        &json!({ "ciphertext": ciphertext, "context": context }),
        None,
    );
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["plaintext"], plaintext.as_str());
}

#[test]
fn self_describe_and_policy_read_decoded_as_each_sdk_decodes_them() {
    let s = start();
    let (mut admin, mut minio) = (s.kes.client(&s.admin), s.kes.client(&s.minio));

    // A non-admin: the 2023 shape (docs/compatibility.md), complete for the 2023 SDK.
    let body = go_get(&mut minio, "/v1/identity/self/describe");
    assert_eq!(body.status, 200, "{}", body.text());
    let me: SelfDescribe2023 = serde_json::from_slice(&body.body).expect("2023 SDK decodes");
    assert_eq!(me.identity.as_deref(), Some(s.minio.identity.as_str()));
    assert_eq!(me.admin, None);
    assert_eq!(me.policy_name.as_deref(), Some("minio-docs"));
    let policy = me.policy.expect("policy");
    assert_eq!(policy.allow.expect("allow"), DOCS_MINIO_RULES);
    assert_eq!(policy.deny, None);
    assert!(policy.created_at.0.is_some());
    // The last SDK reads `policy` as the name and cannot decode it; the last Go release
    // answered this route with 404 to every non-admin, so it has never worked there.
    let err = serde_json::from_slice::<SelfDescribe2025>(&body.body).unwrap_err();
    assert!(err.to_string().contains("invalid type: map"), "{err}");

    // The admin: one answer both SDKs decode.
    let body = go_get(&mut admin, "/v1/identity/self/describe");
    assert_eq!(body.status, 200, "{}", body.text());
    let old: SelfDescribe2023 = serde_json::from_slice(&body.body).expect("2023 SDK decodes");
    let new: SelfDescribe2025 = serde_json::from_slice(&body.body).expect("last SDK decodes");
    assert_eq!(old.admin, Some(true));
    assert_eq!(new.admin, Some(true));
    assert_eq!(new.identity.as_deref(), Some(s.admin.identity.as_str()));
    assert!(new.created_at.0.is_some());

    // Policy read: the 2023 shape. 2023 MinIO calls it (`mc admin kms policy info`)
    // through the 2023 SDK; 2025 MinIO never does, and the requests are identical, so
    // the shape MinIO reads wins (docs/compatibility.md). The last SDK cannot decode it.
    let body = go_get(&mut admin, "/v1/policy/read/minio-bulk");
    assert_eq!(body.status, 200, "{}", body.text());
    let read: PolicyRead2023 = serde_json::from_slice(&body.body).expect("2023 SDK decodes");
    let allow = read.allow.expect("allow");
    let mut expected: Vec<&str> = DOCS_MINIO_RULES.to_vec();
    expected.push("/v1/key/bulk/decrypt/*");
    assert_eq!(allow, expected, "the rules as written, in order");
    assert!(read.created_at.0.is_some());
    assert!(serde_json::from_slice::<PolicyRead2025>(&body.body).is_err());
}

#[test]
fn the_sdk_mirrors_are_as_strict_as_go() {
    // A list where Go expects a map, and the reverse, fail; null and absent fields and
    // unknown members are fine, as with encoding/json.
    let listed = br#"{"allow":["/v1/status"],"created_at":"2023-02-15T14:54:37Z"}"#;
    let mapped = br#"{"allow":{"/v1/status":{}},"created_at":"2023-02-15T14:54:37.5+01:00"}"#;
    assert!(serde_json::from_slice::<PolicyRead2023>(listed).is_ok());
    assert!(serde_json::from_slice::<PolicyRead2023>(mapped).is_err());
    assert!(serde_json::from_slice::<PolicyRead2025>(mapped).is_ok());
    assert!(serde_json::from_slice::<PolicyRead2025>(listed).is_err());
    assert!(serde_json::from_slice::<PolicyRead2025>(br#"{"allow":{"/v1/status":true}}"#).is_err());
    assert!(serde_json::from_slice::<PolicyRead2025>(br#"{"allow":null,"x":1}"#).is_ok());
    assert!(serde_json::from_slice::<PolicyRead2023>(br#"{"created_at":""}"#).is_err());
    assert!(serde_json::from_slice::<SelfDescribe2023>(br#"{"policy":"p"}"#).is_err());
    assert!(serde_json::from_slice::<SelfDescribe2025>(br#"{"policy":{}}"#).is_err());
}
