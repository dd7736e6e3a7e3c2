//! A stand-in for Thales CipherTrust Manager, for integration tests only.
//!
//! It speaks the REST subset KES uses (ciphertrust.md §11) over HTTPS on 127.0.0.1, with a
//! CA and server certificate made at start, so the client under test verifies the server
//! exactly as it would verify a real one (through `tls.ca`).
//!
//! Behaviour worth knowing when writing tests:
//! * API tokens expire after [`CtmSim::set_token_secs`] seconds (default 300, as CM).
//! * The refresh token is checked; a wrong one gets a 401 JSON error.
//! * Data routes check `Authorization: Bearer <jwt>`: missing → 401 text, unknown or
//!   expired → 401 JSON.
//! * Secrets are kept in creation order, and the listing returns them in that order
//!   (not sorted), like a database-backed listing would.
//! * Switches: down/up (the listener is closed and open connections are cut; up again on
//!   the same port, data and tokens kept), added latency, 5xx answers, expire all tokens,
//!   listing quirks. Every request is counted per route.
//!
//! * Keys (`/api/v1/vault/keys2`), key versions and the crypto endpoints for resident
//!   master keys live in `ctm_keys.rs`; exports of unexportable keys are refused. Its
//!   strict mode ([`CtmSim::set_strict`]) accepts only the forms proven against a live
//!   CipherTrust Manager; [`CryptoQuirk`]s give other plausible answers.
//!
//! One thread serves every connection from a readiness loop (`ctm_net.rs`); HTTP/1.1 with
//! keep-alive; requests parsed with `httparse`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

#[path = "ctm_keys.rs"]
mod keys;
#[path = "ctm_net.rs"]
mod net;

#[allow(unused_imports)]
pub use keys::CryptoQuirk;

/// The refresh token the simulator accepts unless told otherwise.
pub const REFRESH_TOKEN: &str = "sim-refresh-token-0123456789";

/// The routes the simulator counts requests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Token,
    Create,
    Export,
    Delete,
    List,
    /// `GET /api/v1/vault/secrets/{name}`: a secret's metadata, no material.
    SecretGet,
    /// `POST /api/v1/vault/keys2`.
    KeyCreate,
    /// `GET /api/v1/vault/keys2/{name}`.
    KeyGet,
    /// `GET /api/v1/vault/keys2`.
    KeyList,
    /// `POST /api/v1/vault/keys2/{id}/versions`.
    KeyVersion,
    /// `DELETE /api/v1/vault/keys2/{name}`.
    KeyDelete,
    /// Any export of a key: `POST /api/v1/vault/keys2/{name}/export`.
    KeyExport,
    /// `POST /api/v1/crypto/encrypt`.
    Encrypt,
    /// `POST /api/v1/crypto/decrypt`.
    Decrypt,
    /// `GET /` (the status probe) and any other GET outside the API.
    Probe,
    Other,
}

const ROUTES: [Route; 16] = [
    Route::Token,
    Route::Create,
    Route::Export,
    Route::Delete,
    Route::List,
    Route::SecretGet,
    Route::KeyCreate,
    Route::KeyGet,
    Route::KeyList,
    Route::KeyVersion,
    Route::KeyDelete,
    Route::KeyExport,
    Route::Encrypt,
    Route::Decrypt,
    Route::Probe,
    Route::Other,
];

/// Misbehaviours of the listing, to test the client's guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListQuirk {
    None,
    /// Pages after the first come back empty although `skip < total`.
    EmptyPagesAfterFirst,
    /// The echoed `skip` is one more than asked.
    WrongSkip,
}

pub struct CtmSim {
    inner: Arc<Inner>,
    port: u16,
    /// The loop serving connections while the stand-in is up.
    server: Mutex<Option<net::NetLoop>>,
    dir: PathBuf,
    ca_file: PathBuf,
}

struct Inner {
    tls: Arc<rustls::ServerConfig>,
    state: Mutex<State>,
    token_secs: AtomicU64,
    latency_ms: AtomicU64,
    /// Each answer's latency varies by up to this many percent either way (0: none).
    jitter_percent: AtomicU64,
    /// Requests being answered right now (handled, latency included), and the most seen.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Answer every request with this status (0: off).
    fail_status: AtomicU32,
    /// Answer this many next requests with 503.
    fail_next: AtomicU32,
    /// Answer requests on these routes with the given status, after letting the given
    /// number of them through.
    route_failures: Mutex<HashMap<Route, (u16, u64)>>,
    /// Read requests but answer none (as a CM behind a dead link would).
    hang: AtomicBool,
    /// Requests read and held by `hang` right now, per route.
    held: Mutex<HashMap<Route, u64>>,
    up: AtomicBool,
    counts: Mutex<HashMap<Route, u64>>,
    /// TCP connections accepted so far.
    next_connection: AtomicU64,
}

struct State {
    refresh_token: String,
    domain: String,
    secrets: BTreeMap<u64, Secret>,
    by_name: HashMap<String, u64>,
    next_id: u64,
    tokens: HashMap<String, Instant>,
    next_token: u64,
    list_quirk: ListQuirk,
    keys2: keys::Keys2,
}

#[derive(Clone)]
struct Secret {
    name: String,
    material: String,
    data_type: String,
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    fn error(status: u16, code: u32, desc: &str) -> Self {
        Self::json(
            status,
            json!({ "code": code, "codeDesc": desc, "message": desc }),
        )
    }

    fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }
}

impl CtmSim {
    /// Starts a simulator on a free loopback port.
    pub fn start() -> Self {
        Self::start_with_san(true)
    }

    /// Starts a simulator whose certificate names 127.0.0.1 only in its Common Name, with
    /// no Subject Alternative Names (as old CipherTrust installations have).
    pub fn start_without_san() -> Self {
        Self::start_with_san(false)
    }

    fn start_with_san(san: bool) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kes-ctm-sim-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();

        let (ca_pem, tls) = make_tls(san);
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();

        let inner = Arc::new(Inner {
            tls,
            state: Mutex::new(State {
                refresh_token: REFRESH_TOKEN.to_string(),
                domain: String::new(),
                secrets: BTreeMap::new(),
                by_name: HashMap::new(),
                next_id: 1,
                tokens: HashMap::new(),
                next_token: 1,
                list_quirk: ListQuirk::None,
                keys2: keys::Keys2::default(),
            }),
            token_secs: AtomicU64::new(300),
            latency_ms: AtomicU64::new(0),
            jitter_percent: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            fail_status: AtomicU32::new(0),
            fail_next: AtomicU32::new(0),
            route_failures: Mutex::new(HashMap::new()),
            hang: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            up: AtomicBool::new(false),
            counts: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sim = CtmSim {
            inner,
            port,
            server: Mutex::new(None),
            dir,
            ca_file,
        };
        sim.listen(listener);
        sim
    }

    /// `https://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that issued the simulator's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A scratch directory removed with the simulator.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the accepted refresh token (as revoking the old one would).
    pub fn set_refresh_token(&self, token: &str) {
        lock(&self.inner.state).refresh_token = token.to_string();
    }

    pub fn set_domain(&self, domain: &str) {
        lock(&self.inner.state).domain = domain.to_string();
    }

    /// Lifetime of API tokens issued from now on.
    pub fn set_token_secs(&self, secs: u64) {
        self.inner.token_secs.store(secs, Ordering::SeqCst);
    }

    /// Every API token issued so far stops working.
    pub fn expire_all_tokens(&self) {
        lock(&self.inner.state).tokens.clear();
    }

    /// Delay added before every answer.
    /// The most requests answered at the same time so far.
    pub fn max_concurrent(&self) -> u64 {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes each answer's latency vary uniformly by up to `percent` % either way, as a
    /// real CipherTrust's does (Thales' own load sample: 12–33 ms).
    pub fn set_latency_jitter(&self, percent: u64) {
        self.inner
            .jitter_percent
            .store(percent.min(100), Ordering::SeqCst);
    }

    /// Answer every request with `status` (e.g. 500), or behave again with `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.inner
            .fail_status
            .store(status.map_or(0, u32::from), Ordering::SeqCst);
    }

    /// Answer every request on `route` with `status` (e.g. 500), or behave again with `None`.
    pub fn fail_route_with(&self, route: Route, status: Option<u16>) {
        let mut failing = lock(&self.inner.route_failures);
        match status {
            Some(status) => failing.insert(route, (status, 0)),
            None => failing.remove(&route),
        };
    }

    /// Serve the next `ok` requests on `route`, then answer every further one with
    /// `status` (until `fail_route_with(route, None)`).
    pub fn fail_route_after(&self, route: Route, ok: u64, status: u16) {
        lock(&self.inner.route_failures).insert(route, (status, ok));
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next(&self, n: u32) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// Stop answering (connections stay open, requests are read, no reply is sent) or
    /// answer again.
    pub fn set_hang(&self, hang: bool) {
        self.inner.hang.store(hang, Ordering::SeqCst);
    }

    /// Requests on `route` that arrived while hanging and still wait for an answer.
    pub fn held(&self, route: Route) -> u64 {
        lock(&self.inner.held).get(&route).copied().unwrap_or(0)
    }

    pub fn set_list_quirk(&self, quirk: ListQuirk) {
        lock(&self.inner.state).list_quirk = quirk;
    }

    /// Requests received on `route` so far.
    pub fn count(&self, route: Route) -> u64 {
        lock(&self.inner.counts).get(&route).copied().unwrap_or(0)
    }

    /// Requests received so far, all routes.
    pub fn total_count(&self) -> u64 {
        ROUTES.iter().map(|r| self.count(*r)).sum()
    }

    /// The material of secret `name`, if it exists.
    pub fn secret(&self, name: &str) -> Option<String> {
        let state = lock(&self.inner.state);
        state
            .by_name
            .get(name)
            .map(|id| state.secrets[id].material.clone())
    }

    /// The data type of secret `name`, if it exists.
    pub fn secret_type(&self, name: &str) -> Option<String> {
        let state = lock(&self.inner.state);
        state
            .by_name
            .get(name)
            .map(|id| state.secrets[id].data_type.clone())
    }

    pub fn secret_count(&self) -> usize {
        lock(&self.inner.state).secrets.len()
    }

    /// Key objects (one per version) of all keys.
    pub fn key_object_count(&self) -> usize {
        lock(&self.inner.state).keys2.objects.len()
    }

    /// Adds a secret behind the API's back (as another CM client would).
    pub fn insert_secret(&self, name: &str, material: &str) {
        let mut state = lock(&self.inner.state);
        assert!(!state.by_name.contains_key(name), "secret {name} exists");
        insert(&mut state, name, material, "seed");
    }

    /// The versions of key `name` (one object each): `(version, unexportable, usageMask)`.
    pub fn key_versions(&self, name: &str) -> Vec<(u32, bool, u64)> {
        let state = lock(&self.inner.state);
        state
            .keys2
            .objects
            .iter()
            .filter(|k| k.name == name)
            .map(|k| (k.version, k.unexportable, k.usage_mask))
            .collect()
    }

    /// Strict mode: only the forms proven against a live CipherTrust (`ctm_keys.rs`).
    pub fn set_strict(&self, strict: bool) {
        lock(&self.inner.state).keys2.strict = strict;
    }

    pub fn set_crypto_quirk(&self, quirk: keys::CryptoQuirk) {
        lock(&self.inner.state).keys2.quirk = quirk;
    }

    /// Deletes one version of key `name` behind the API's back.
    pub fn remove_key_version(&self, name: &str, version: u32) {
        lock(&self.inner.state)
            .keys2
            .objects
            .retain(|k| k.name != name || k.version != version);
    }

    /// Deletes every version of key `name` behind the API's back (as an administrator
    /// would in CM's console).
    pub fn remove_key(&self, name: &str) {
        lock(&self.inner.state)
            .keys2
            .objects
            .retain(|k| k.name != name);
    }

    /// TCP connections accepted so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.next_connection.load(Ordering::SeqCst)
    }

    /// Requests on routes that can hand out key material (secret and key exports).
    pub fn export_count(&self) -> u64 {
        self.count(Route::Export) + self.count(Route::KeyExport)
    }

    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Stops answering: closes the listener (connections are refused) and cuts every open
    /// connection. Data and tokens are kept for [`CtmSim::come_up`].
    pub fn go_down(&self) {
        let server = lock(&self.server).take();
        self.inner.up.store(false, Ordering::SeqCst);
        if let Some(server) = server {
            server.stop();
        }
    }

    /// Listens again on the same port.
    pub fn come_up(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(err) if tries < 50 => {
                    tries += 1;
                    let _ = err;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("cannot listen on port {} again: {err}", self.port),
            }
        };
        self.listen(listener);
    }

    fn listen(&self, listener: TcpListener) {
        self.inner.up.store(true, Ordering::SeqCst);
        let server = net::NetLoop::start(Arc::clone(&self.inner), listener);
        *lock(&self.server) = Some(server);
    }
}

impl Drop for CtmSim {
    fn drop(&mut self) {
        self.go_down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it (with `san`
/// false, named 127.0.0.1 in the Common Name only).
fn make_tls(san: bool) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "CipherTrust simulator test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let names = if san {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        if san { "ctm-sim" } else { "127.0.0.1" },
    );
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(cert.der().to_vec()),
                CertificateDer::from(ca.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        406 => "Not Acceptable",
        409 => "Conflict",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn route_of(method: &str, path: &str) -> Route {
    let secret_path = path.strip_prefix("/api/v1/vault/secrets/");
    let key_path = path.strip_prefix("/api/v1/vault/keys2/");
    let one_element = |rest: &str| !rest.is_empty() && !rest.contains('/');
    match (method, path) {
        ("POST", "/api/v1/vault/keys2") => Route::KeyCreate,
        ("GET", "/api/v1/vault/keys2") => Route::KeyList,
        ("POST", "/api/v1/crypto/encrypt") => Route::Encrypt,
        ("POST", "/api/v1/crypto/decrypt") => Route::Decrypt,
        ("GET", _) if key_path.is_some_and(one_element) => Route::KeyGet,
        ("DELETE", _) if key_path.is_some_and(one_element) => Route::KeyDelete,
        ("POST", _)
            if key_path.is_some_and(|r| r.ends_with("/versions") || r.ends_with("/versions/")) =>
        {
            Route::KeyVersion
        }
        (_, _) if key_path.is_some_and(|r| r.ends_with("/export")) => Route::KeyExport,
        ("GET", _) if secret_path.is_some_and(one_element) => Route::SecretGet,
        ("POST", "/api/v1/auth/tokens" | "/api/v1/auth/tokens/") => Route::Token,
        ("POST", "/api/v1/vault/secrets") => Route::Create,
        ("GET", "/api/v1/vault/secrets") => Route::List,
        ("POST", _) if secret_path.is_some_and(|rest| rest.ends_with("/export")) => Route::Export,
        ("DELETE", _)
            if secret_path.is_some_and(|rest| !rest.is_empty() && !rest.contains('/')) =>
        {
            Route::Delete
        }
        ("GET", _) if !path.starts_with("/api/") => Route::Probe,
        _ => Route::Other,
    }
}

fn handle(
    inner: &Inner,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = route_of(method, path);
    *lock(&inner.counts).entry(route).or_insert(0) += 1;

    let status = inner.fail_status.load(Ordering::SeqCst);
    if status != 0 {
        return Reply::error(status as u16, 1, "NCERRInternal: simulated failure");
    }
    if let Some((status, ok)) = lock(&inner.route_failures).get_mut(&route) {
        if *ok > 0 {
            *ok -= 1;
        } else {
            let desc = match *status {
                401 => "NCERRUnauthorized: simulated failure",
                403 => "NCERRForbidden: simulated permission denied",
                404 => "NCERRResourceNotFound: simulated failure",
                _ => "NCERRInternal: simulated failure",
            };
            return Reply::error(*status, 1, desc);
        }
    }
    if inner
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Reply::error(503, 1, "NCERRServiceUnavailable: simulated failure");
    }

    let json_body =
        header(headers, "content-type").is_some_and(|v| v.starts_with("application/json"));
    if matches!(route, Route::Encrypt | Route::Decrypt)
        && header(headers, "accept").is_none_or(|v| !v.contains("application/json"))
    {
        return keys::error(
            406,
            3,
            "NCERRNotAcceptable",
            "the crypto endpoints answer JSON only: send Accept: application/json",
        );
    }
    if matches!(
        route,
        Route::Token | Route::Create | Route::KeyCreate | Route::Encrypt | Route::Decrypt
    ) && !json_body
    {
        return Reply::error(
            400,
            3,
            "NCERRBadRequest: Content-Type must be application/json",
        );
    }
    match route {
        Route::Token => issue_token(inner, body),
        Route::Probe => Reply {
            status: 200,
            content_type: "text/html",
            body: b"<html>CipherTrust Manager</html>".to_vec(),
        },
        Route::Other => Reply::text(404, "404 page not found"),
        _ => {
            if let Some(denied) = check_bearer(inner, headers) {
                return denied;
            }
            let mut state = lock(&inner.state);
            match route {
                Route::Create => create_secret(&mut state, body),
                Route::Export => {
                    let name = path
                        .strip_prefix("/api/v1/vault/secrets/")
                        .unwrap()
                        .strip_suffix("/export")
                        .unwrap();
                    match find(&state, &percent_decode(name), query) {
                        Some(secret) => Reply::json(
                            200,
                            json!({ "id": "x", "name": secret.name, "dataType": secret.data_type, "material": secret.material }),
                        ),
                        None => Reply::error(404, 5, "NCERRResourceNotFound: secret not found"),
                    }
                }
                Route::Delete => {
                    let name = percent_decode(path.strip_prefix("/api/v1/vault/secrets/").unwrap());
                    let by_name = query.split('&').any(|p| p == "type=name");
                    match by_name.then(|| state.by_name.remove(&name)).flatten() {
                        Some(id) => {
                            state.secrets.remove(&id);
                            Reply {
                                status: 204,
                                content_type: "",
                                body: Vec::new(),
                            }
                        }
                        None => Reply::error(404, 5, "NCERRResourceNotFound: secret not found"),
                    }
                }
                Route::List => list_secrets(&state, query),
                Route::SecretGet => {
                    let name = percent_decode(secret_path_of(path));
                    match find(&state, &name, query) {
                        Some(secret) => Reply::json(
                            200,
                            json!({ "name": secret.name, "dataType": secret.data_type }),
                        ),
                        None => Reply::error(404, 5, "NCERRResourceNotFound: secret not found"),
                    }
                }
                Route::KeyCreate
                | Route::KeyGet
                | Route::KeyList
                | Route::KeyVersion
                | Route::KeyDelete
                | Route::KeyExport
                | Route::Encrypt
                | Route::Decrypt => {
                    let state = &mut *state;
                    keys::dispatch(&mut state.keys2, route, path, query, body, &state.by_name)
                }
                _ => unreachable!(),
            }
        }
    }
}

fn secret_path_of(path: &str) -> &str {
    path.strip_prefix("/api/v1/vault/secrets/")
        .unwrap_or_default()
}

fn issue_token(inner: &Inner, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Reply::error(400, 3, "NCERRBadRequest: request body is not JSON");
    };
    let mut state = lock(&inner.state);
    if request["grant_type"] != "refresh_token" {
        return Reply::error(400, 3, "NCERRBadRequest: unsupported grant_type");
    }
    if request["refresh_token"] != state.refresh_token.as_str()
        || request["domain"] != state.domain.as_str()
    {
        return Reply::error(401, 10, "NCERRUnauthorized: invalid refresh token");
    }
    let secs = inner.token_secs.load(Ordering::SeqCst);
    let now = Instant::now();
    state.tokens.retain(|_, expiry| *expiry > now);
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiJ9.sim-{}-{}.c2ln",
        state.next_token,
        std::process::id()
    );
    state.next_token += 1;
    state
        .tokens
        .insert(jwt.clone(), now + Duration::from_secs(secs));
    Reply::json(
        200,
        json!({
            "jwt": jwt,
            "duration": secs,
            "token_type": "Bearer",
            "client_id": "sim-client",
            "refresh_token": state.refresh_token,
            "refresh_token_expires_in": 1799,
        }),
    )
}

fn check_bearer(inner: &Inner, headers: &[(String, String)]) -> Option<Reply> {
    let Some(value) = header(headers, "authorization") else {
        return Some(Reply::text(401, "Token is missing"));
    };
    let Some(jwt) = value.strip_prefix("Bearer ") else {
        return Some(Reply::error(
            401,
            10,
            "NCERRUnauthorized: malformed Authorization header",
        ));
    };
    match lock(&inner.state).tokens.get(jwt) {
        Some(expiry) if *expiry > Instant::now() => None,
        Some(_) => Some(Reply::error(401, 10, "NCERRUnauthorized: Token is expired")),
        None => Some(Reply::error(401, 10, "NCERRUnauthorized: Token is invalid")),
    }
}

fn create_secret(state: &mut State, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Reply::error(400, 3, "NCERRBadRequest: request body is not JSON");
    };
    let (Some(name), Some(material), Some(data_type)) = (
        request["name"].as_str(),
        request["material"].as_str(),
        request["dataType"].as_str(),
    ) else {
        return Reply::error(
            400,
            3,
            "NCERRBadRequest: name, material and dataType are required",
        );
    };
    if !matches!(data_type, "seed" | "blob" | "password") || name.is_empty() {
        return Reply::error(400, 3, "NCERRBadRequest: invalid secret");
    }
    if state.by_name.contains_key(name) {
        return Reply::error(
            409,
            4,
            "NCERRResourceAlreadyExists: a secret with this name exists",
        );
    }
    let id = insert(state, name, material, data_type);
    Reply::json(
        201,
        json!({ "id": format!("sim-{id}"), "name": name, "dataType": data_type }),
    )
}

fn insert(state: &mut State, name: &str, material: &str, data_type: &str) -> u64 {
    let id = state.next_id;
    state.next_id += 1;
    state.secrets.insert(
        id,
        Secret {
            name: name.to_string(),
            material: material.to_string(),
            data_type: data_type.to_string(),
        },
    );
    state.by_name.insert(name.to_string(), id);
    id
}

/// A secret by name (`type=name`) or else by id, as CM interprets the path element.
fn find<'a>(state: &'a State, element: &str, query: &str) -> Option<&'a Secret> {
    if query.split('&').any(|p| p == "type=name") {
        state.by_name.get(element).map(|id| &state.secrets[id])
    } else {
        let id: u64 = element.strip_prefix("sim-")?.parse().ok()?;
        state.secrets.get(&id)
    }
}

fn list_secrets(state: &State, query: &str) -> Reply {
    let (skip, limit) = paging(query);
    let total = state.secrets.len();
    let mut resources: Vec<Value> = state
        .secrets
        .iter()
        .skip(skip)
        .take(limit)
        .map(
            |(id, s)| json!({ "id": format!("sim-{id}"), "name": s.name, "dataType": s.data_type }),
        )
        .collect();
    let mut echoed_skip = skip;
    match state.list_quirk {
        ListQuirk::None => {}
        ListQuirk::EmptyPagesAfterFirst if skip > 0 => resources.clear(),
        ListQuirk::EmptyPagesAfterFirst => {}
        ListQuirk::WrongSkip => echoed_skip += 1,
    }
    Reply::json(
        200,
        json!({ "skip": echoed_skip, "limit": limit, "total": total, "resources": resources }),
    )
}

/// `skip` and `limit` of a listing query (CM's defaults: 0 and 10).
fn paging(query: &str) -> (usize, usize) {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
    };
    (param("skip").unwrap_or(0), param("limit").unwrap_or(10))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
