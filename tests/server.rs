//! The server core through the real binary over real mTLS: handshake, identities,
//! policies, routes, limits, timeouts, config errors, signals.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::{Kes, Pki, run_kes};

/// A config with an admin and one application policy.
fn app_config(pki: &Pki, admin: &str, app: &str) -> std::path::PathBuf {
    pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {admin}\npolicy:\n  my-app:\n    allow:\n    - /v1/key/create/my-app*\n    - /v1/key/generate/my-app*\n    - /v1/policy/*\n    - /v1/status\n    deny:\n    - /v1/key/generate/my-app-internal*\n    - /v1/policy/read/*\n    identities:\n    - {app}\nkeystore:\n  fs:\n    path: {}\n",
            pki.path("keys").display()
        ),
    )
}

#[test]
fn a_client_without_certificate_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = Kes::start(
        &pki,
        &app_config(&pki, &admin.identity, &"0".repeat(64)),
        &[],
    );
    let mut anonymous = kes.client_without_cert();
    let refused = anonymous
        .connect()
        .and_then(|_| anonymous.try_request("GET", "/version", &[]).map(|_| ()));
    assert!(refused.is_err(), "a certless client must not get an answer");
    // A client with a certificate is served.
    assert_eq!(kes.client(&admin).get("/version").status, 200);
}

#[test]
fn identity_is_the_hash_of_the_public_key_as_in_the_spec_vectors() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/identity.json")).unwrap();
    let api_key = &vectors["api_keys"][0];
    let seed = hex_decode(api_key["seed_hex"].as_str().unwrap());
    // PKCS#8 of an Ed25519 private key: a fixed prefix and the 32-byte seed.
    let mut pkcs8 = hex_decode("302e020100300506032b657004220420");
    pkcs8.extend_from_slice(&seed);
    let key_pem = pem("PRIVATE KEY", &pkcs8);
    let cert = vectors["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ed25519-client-from-api-key")
        .unwrap();
    let expected = cert["identity"].as_str().unwrap();
    assert_eq!(expected, api_key["identity"].as_str().unwrap());

    let pki = Pki::new();
    let who = pki.save("vector", cert["pem"].as_str().unwrap(), &key_pem);
    assert_eq!(who.identity, expected);
    let kes = Kes::start(&pki, &app_config(&pki, expected, &"0".repeat(64)), &[]);
    let resp = kes.client(&who).get("/v1/identity/self/describe");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["identity"], expected);
    assert_eq!(resp.json()["admin"], true);
}

#[test]
fn admin_may_call_everything_and_apps_only_what_their_policy_allows() {
    let pki = Pki::new();
    let (admin, app, stranger) = (
        pki.client("admin"),
        pki.client("app"),
        pki.client("stranger"),
    );
    let kes = Kes::start(&pki, &app_config(&pki, &admin.identity, &app.identity), &[]);

    let mut a = kes.client(&admin);
    for path in [
        "/v1/status",
        "/v1/api",
        "/v1/ready",
        "/v1/policy/describe/my-app",
        "/v1/policy/read/my-app",
        "/v1/identity/list/",
        "/v1/identity/describe/".to_string().leak(),
    ] {
        let path = if path.ends_with("describe/") {
            format!("{path}{}", app.identity)
        } else {
            path.to_string()
        };
        let resp = a.get(&path);
        assert_eq!(resp.status, 200, "admin {path}: {}", resp.text());
    }
    let read = a.get("/v1/policy/read/my-app").json();
    // The 2023 shape: the rules as written, in order (docs/compatibility.md).
    assert_eq!(
        read["allow"],
        serde_json::json!([
            "/v1/key/create/my-app*",
            "/v1/key/generate/my-app*",
            "/v1/policy/*",
            "/v1/status"
        ]),
        "{read}"
    );
    assert_eq!(
        read["deny"],
        serde_json::json!(["/v1/key/generate/my-app-internal*", "/v1/policy/read/*"]),
        "{read}"
    );

    let policies = a.get("/v1/policy/list/*");
    assert_eq!(
        policies.header("content-type"),
        Some("application/x-ndjson")
    );
    let names: Vec<serde_json::Value> = policies
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["name"], "my-app");
    let identities = a.get("/v1/identity/list");
    let ids: Vec<String> = identities
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["identity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        ids.contains(&app.identity) && ids.contains(&admin.identity),
        "{ids:?}"
    );

    let mut p = kes.client(&app);
    assert_eq!(p.get("/v1/status").status, 200);
    assert_eq!(p.get("/v1/policy/describe/my-app").status, 200);
    // Not in the policy.
    let denied = p.get("/v1/api");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.message(), "not authorized: insufficient permissions");
    // Allowed by /v1/policy/* but denied by /v1/policy/read/*: deny wins.
    assert_eq!(p.get("/v1/policy/read/my-app").status, 403);
    // Self-describe needs no policy and tells the app its policy.
    let me = p.get("/v1/identity/self/describe");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["identity"], app.identity.as_str());
    assert_eq!(me.json()["policy_name"], "my-app");

    let mut s = kes.client(&stranger);
    let resp = s.get("/v1/status");
    assert_eq!(resp.status, 403);
    assert_eq!(resp.message(), "not authorized: insufficient permissions");
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

/// Go's `path.Match` lets a character class match a `/` (`*` and `?` never do): a deny
/// rule with a class at a separator denies what the original denied, and an allow rule
/// of that form allows what it allowed.
#[test]
fn a_character_class_at_a_separator_matches_the_slash_in_deny_and_allow_rules() {
    let pki = Pki::new();
    let (admin, app, other) = (pki.client("admin"), pki.client("app"), pki.client("other"));
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\npolicy:\n  app:\n    allow:\n    - /v1/key/generate/*\n    deny:\n    - /v1/key/generate[/]secret-app\n    - /v1/key/generate[^x]other-secret\n    identities:\n    - {}\n  other:\n    allow:\n    - /v1/key/generate[/]my-app\n    - /v1/key/generate[.-0]my-other-app\n    identities:\n    - {}\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            app.identity,
            other.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &[]);
    let mut a = kes.client(&admin);
    for name in ["secret-app", "other-secret", "my-app", "my-other-app"] {
        assert_eq!(a.post(&format!("/v1/key/create/{name}"), b"").status, 200);
    }
    let mut p = kes.client(&app);
    for denied in ["secret-app", "other-secret"] {
        let resp = p.post(&format!("/v1/key/generate/{denied}"), b"{}");
        assert_eq!(
            resp.status, 403,
            "{denied}: the deny rule's class matches '/'"
        );
        assert_eq!(resp.message(), "not authorized: insufficient permissions");
    }
    assert_eq!(p.post("/v1/key/generate/my-app", b"{}").status, 200);
    let mut o = kes.client(&other);
    for allowed in ["my-app", "my-other-app"] {
        let resp = o.post(&format!("/v1/key/generate/{allowed}"), b"{}");
        assert_eq!(resp.status, 200, "{allowed}: {}", resp.text());
    }
    assert_eq!(o.post("/v1/key/generate/secret-app", b"{}").status, 403);
}

#[test]
fn methods_redirects_unknown_paths_and_body_limits() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = Kes::start(
        &pki,
        &app_config(&pki, &admin.identity, &"0".repeat(64)),
        &[],
    );
    let mut c = kes.client(&admin);

    let resp = c.request("DELETE", "/v1/status", &[]);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("accept"), Some("GET"));
    assert_eq!(resp.message(), "received method 'DELETE' expected 'GET'");
    // The connection stays usable after an error without body.
    assert_eq!(c.get("/v1/status").status, 200);

    let resp = c.get("/v1/policy/describe");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("/v1/policy/describe/"));
    let resp = c.get("/v1/no/such/route");
    assert_eq!(resp.status, 404);

    // 1 000 000 bytes is the limit of the encrypt route; one more is refused unread.
    let resp = c.request("POST", "/v1/key/encrypt/k", &vec![b'a'; 1_000_001]);
    assert_eq!(resp.status, 413);
    // A body on a route that takes none.
    let resp = c.request("DELETE", "/v1/key/delete/k", b"x");
    assert_eq!(resp.status, 413);
    // Over-long request heads.
    let mut raw = b"GET /v1/status HTTP/1.1\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 20_000));
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(c.send_raw(&raw).unwrap().status, 431);
    // Garbage instead of HTTP.
    let resp = kes
        .client(&admin)
        .send_raw(b"\x00\x01 garbage\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 400);
}

#[test]
fn status_api_and_version_answer_in_the_original_shapes() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = Kes::start(
        &pki,
        &app_config(&pki, &admin.identity, &"0".repeat(64)),
        &[],
    );
    let mut c = kes.client(&admin);
    let version = c.get("/version").json();
    assert!(version["version"].is_string());
    let status = c.get("/v1/status").json();
    for field in [
        "version",
        "os",
        "arch",
        "uptime",
        "num_cpu",
        "num_cpu_used",
        "mem_heap_used",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }
    assert!(status["uptime"].is_u64());
    let api = c.get("/v1/api").json();
    let routes = api.as_array().unwrap();
    assert!(routes.iter().any(|r| r["path"] == "/v1/key/generate/"
        && r["method"] == "PUT"
        && r["max_body"] == 1_000_000
        && r["timeout"] == 15));
    assert!(
        routes
            .iter()
            .any(|r| r["path"] == "/v1/status" && r["method"] == "GET")
    );
}

#[test]
fn silent_and_slow_clients_are_cut_and_do_not_starve_others() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = Kes::start(
        &pki,
        &app_config(&pki, &admin.identity, &"0".repeat(64)),
        &["--workers", "2"],
    );

    // More silent TCP connections and slow TLS clients than there are workers.
    let silent: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(kes.addr).unwrap())
        .collect();
    let mut slow: Vec<_> = (0..10).map(|_| kes.client(&admin)).collect();
    for s in &mut slow {
        s.write(b"GET /v1/sta").unwrap();
    }
    let started = Instant::now();
    let mut good = kes.client(&admin);
    for _ in 0..50 {
        assert_eq!(good.get("/v1/status").status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "good client was slowed down: {:?}",
        started.elapsed()
    );

    // After the 5 s header timeout the silent and the slow connections are closed.
    std::thread::sleep(Duration::from_secs(6));
    for mut sock in silent {
        use std::io::Read;
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        // Closed means end of stream or a reset; a read that times out (WouldBlock)
        // means the connection is still open.
        match sock.read(&mut buf) {
            Ok(0) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("silent connection still open: {other:?}"),
        }
    }
    for s in &mut slow {
        // Sending the rest of the head now fails or gets no answer: the server hung up.
        let r = s
            .write(b"tus HTTP/1.1\r\n\r\n")
            .and_then(|_| s.read_response());
        assert!(r.is_err(), "slow connection still served");
    }
    assert_eq!(good.get("/v1/status").status, 200);
}

#[test]
fn config_errors_name_file_line_and_field() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let keys = pki.path("keys");
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "malformed YAML",
            format!("admin:\n  identity: {}\n  - oops\n", admin.identity),
            &["config.yml:", "line"],
        ),
        (
            "unknown key",
            format!(
                "admin:\n  identity: {}\npolicy:\n  p:\n    allow: [/v1/status]\n    dney: [/v1/api]\nkeystore:\n  fs:\n    path: {}\n",
                admin.identity,
                keys.display()
            ),
            &["config.yml:9", "dney", "allow", "deny", "identities"],
        ),
        (
            "missing variable",
            format!(
                "admin:\n  identity: ${{KES_TEST_UNSET_VARIABLE}}\nkeystore:\n  fs:\n    path: {}\n",
                keys.display()
            ),
            &["config.yml:5", "KES_TEST_UNSET_VARIABLE"],
        ),
        (
            "rule that never matches",
            format!(
                "admin:\n  identity: {}\npolicy:\n  p:\n    allow:\n    - /v1/key/genrate/*\nkeystore:\n  fs:\n    path: {}\n",
                admin.identity,
                keys.display()
            ),
            &["config.yml:", "/v1/key/genrate/*", "matches no API path"],
        ),
        (
            // Go's path.Match refuses this pattern, so a Go server never applied it.
            "malformed glob",
            format!(
                "admin:\n  identity: {}\npolicy:\n  p:\n    allow:\n    - \"/v1/key/generate/[]a]*\"\nkeystore:\n  fs:\n    path: {}\n",
                admin.identity,
                keys.display()
            ),
            &[
                "config.yml:9",
                "/v1/key/generate/[]a]*",
                "is malformed",
                "escape it",
            ],
        ),
        (
            "unsupported keystore",
            format!(
                "admin:\n  identity: {}\nkeystore:\n  vault:\n    endpoint: https://vault\n",
                admin.identity
            ),
            &["config.yml:", "not supported", "fs", "gemalto.keysecure"],
        ),
    ];
    for (what, body, expected) in cases {
        let path = pki.config("config.yml", &body);
        let (code, _, stderr) = run_kes(&[
            "server",
            "--config",
            path.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ]);
        assert_ne!(code, 0, "{what}: must fail");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{what}: stderr lacks '{needle}':\n{stderr}"
            );
        }
    }

    // An unreadable certificate names the file.
    let body = format!(
        "admin:\n  identity: {}\nkeystore:\n  fs:\n    path: {}\n",
        admin.identity,
        keys.display()
    );
    let path = pki.config("config.yml", &body);
    std::fs::write(pki.path("server.cert"), "not a certificate").unwrap();
    let (code, _, stderr) = run_kes(&[
        "server",
        "--config",
        path.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("server.cert"), "{stderr}");
}

#[test]
fn all_three_config_generations_load() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let keys = pki.path("keys");
    // SAFETY: set before the child processes start; read only by them.
    unsafe { std::env::set_var("KES_TEST_APP_IDENTITY", &app.identity) };
    let oldest = format!(
        "address: 0.0.0.0:7373\nroot: disabled\npolicy:\n  my-app:\n    paths:\n    - /v1/key/create/my-app*\n    identities:\n    - ${{KES_TEST_APP_IDENTITY}}\nkeystore:\n  fs:\n    path: {}\n",
        keys.display()
    );
    let gen2023 = format!(
        "version: v1\nadmin:\n  identity: {}\ntls:\n  proxy:\n    identities: []\npolicy:\n  minio:\n    allow:\n    - /v1/key/create/*\n    - /v1/key/generate/*\n    - /v1/key/decrypt/*\n    - /v1/key/bulk/decrypt\n    - /v1/key/list/*\n    - /v1/status\n    - /v1/metrics\n    - /v1/log/audit\n    - /v1/log/error\n    identities:\n    - ${{KES_TEST_APP_IDENTITY}}\ncache:\n  expiry:\n    any: 5m0s\n    unused: 20s\nlog:\n  error: on\n  audit: off\nkeys:\n- name: my-first-key\nkeystore:\n  fs:\n    path: {}\n",
        admin.identity,
        keys.display()
    );
    let last = format!(
        "version: v1\naddress: 0.0.0.0:7373\nadmin:\n  identity: {}\ntls:\n  auth: off\n  ca: \napi:\n  /v1/ready:\n    skip_auth: true\n    timeout: 15s\ncache:\n  expiry:\n    any: 5m\n    unused: 30s\n    offline: 0s\nlog:\n  error: INFO\n  audit: WARN\npolicy:\n  my-app:\n    allow: [/v1/key/generate/my-app*]\n    deny: [/v1/key/generate/my-app-internal*]\n    identities:\n    - ${{KES_TEST_APP_IDENTITY}}\nkeystore:\n  fs:\n    path: {}\n",
        admin.identity,
        keys.display()
    );
    // Per generation: a request its policy allows and one it does not (the `last`
    // config's deny rule among them), so each policy is shown to be in force.
    type Checks<'a> = &'a [(&'a str, &'a str, u16)];
    let checks: [(&str, &str, Checks); 3] = [
        (
            "oldest",
            &oldest,
            &[
                ("POST", "/v1/key/create/my-app-oldest", 200),
                ("POST", "/v1/key/create/other-oldest", 403),
            ],
        ),
        (
            "2023",
            &gen2023,
            &[
                ("POST", "/v1/key/create/my-app-2023", 200),
                ("POST", "/v1/key/generate/my-first-key", 200),
                ("DELETE", "/v1/key/delete/my-first-key", 403),
            ],
        ),
        (
            "last",
            &last,
            &[
                ("POST", "/v1/key/generate/my-app-2023", 200),
                ("POST", "/v1/key/generate/my-app-internal-1", 403),
                ("POST", "/v1/key/create/my-app-last", 403),
            ],
        ),
    ];
    for (name, body, requests) in checks {
        let path = pki.config(&format!("{name}.yml"), body);
        let kes =
            Kes::try_start(&pki, &path, &["--auth=off"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut c = kes.client(&app);
        let me = c.get("/v1/identity/self/describe");
        assert_eq!(me.status, 200, "{name}: {}", me.text());
        for &(method, path, status) in requests {
            let body: &[u8] = if path.contains("/generate/") {
                b"{}"
            } else {
                b""
            };
            let resp = c.request(method, path, body);
            assert_eq!(
                resp.status,
                status,
                "{name}: {method} {path}: {}",
                resp.text()
            );
        }
    }
}

#[test]
fn sighup_reloads_policies_without_dropping_the_listener() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let keys = pki.path("keys");
    let body = |rule: &str| {
        format!(
            "admin:\n  identity: {}\npolicy:\n  app:\n    allow: [{rule}]\n    identities: [{}]\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            app.identity,
            keys.display()
        )
    };
    let path = pki.config("config.yml", &body("/v1/status"));
    let kes = Kes::start(&pki, &path, &[]);
    let mut c = kes.client(&app);
    assert_eq!(c.get("/v1/status").status, 200);
    assert_eq!(c.get("/v1/api").status, 403);

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[/v1/status]", "[/v1/api]");
    std::fs::write(&path, text).unwrap();
    kes.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.get("/v1/api").status != 200 {
        assert!(
            Instant::now() < deadline,
            "policy not reloaded: {}",
            kes.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.get("/v1/status").status, 403);

    // A broken config is refused and the running one kept.
    std::fs::write(&path, "admin: [\n").unwrap();
    kes.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.get("/v1/api").status, 200);
    assert!(
        kes.stderr().contains("keeping the running config"),
        "{}",
        kes.stderr()
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_exits_zero() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let mut kes = Kes::start(
        &pki,
        &app_config(&pki, &admin.identity, &"0".repeat(64)),
        &[],
    );
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/none", b"").status, 200);
    // A request whose head has arrived but whose body is still coming.
    let body = br#"{"plaintext":"aGVsbG8="}"#;
    let head = format!(
        "POST /v1/key/encrypt/none HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut in_flight = kes.client(&admin);
    in_flight.write(head.as_bytes()).unwrap();
    in_flight.write(&body[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    kes.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    in_flight.write(&body[5..]).unwrap();
    let resp = in_flight
        .read_response()
        .expect("the request in flight is answered");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.json()["ciphertext"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(resp.header("connection"), Some("close"));
    let status = kes
        .wait_exit(Duration::from_secs(5))
        .expect("kes exits after SIGTERM");
    assert!(status.success(), "{status}: {}", kes.stderr());
    // New connections are refused.
    assert!(std::net::TcpStream::connect(kes.addr).is_err());
}

#[test]
fn dev_mode_serves_with_its_printed_credentials() {
    let addr = common::free_addr();
    let mut cmd = std::process::Command::new(common::KES);
    cmd.args(["server", "--dev", "--addr", &addr.to_string()]);
    let kes = Kes::spawn(cmd, addr, std::path::PathBuf::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kes.stderr().contains("curl") {
        assert!(Instant::now() < deadline, "no banner: {}", kes.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let banner = kes.stderr();
    let dir = banner
        .split_whitespace()
        .find(|w| w.ends_with("/server.cert"))
        .map(|w| w.trim_end_matches("/server.cert").to_string())
        .expect("banner names the files");
    let admin = common::credential(
        &std::path::Path::new(&dir).join("admin.cert"),
        &std::path::Path::new(&dir).join("admin.key"),
    );
    assert!(banner.contains(&admin.identity));
    let mut c = common::Client::new(
        addr,
        &std::path::Path::new(&dir).join("server.cert"),
        Some(&admin),
    );
    assert_eq!(c.get("/v1/status").status, 200);
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[test]
fn auth_on_verifies_client_certificates_against_the_ca() {
    let pki = Pki::new();
    let signed = pki.client_signed("signed");
    let self_signed = pki.client("self-signed");
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\ntls:\n  auth: on\n  ca: {}\nkeystore:\n  fs:\n    path: {}\n",
            signed.identity,
            pki.ca_path.display(),
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &[]);
    assert_eq!(kes.client(&signed).get("/v1/status").status, 200);
    let mut refused = kes.client(&self_signed);
    assert!(
        refused
            .connect()
            .and_then(|_| refused.try_request("GET", "/v1/status", &[]))
            .is_err()
    );
    // The same file with --auth=off accepts any certificate (and its identity decides).
    drop(kes);
    let kes = Kes::start(&pki, &config, &["--auth=off"]);
    assert_eq!(kes.client(&self_signed).get("/v1/status").status, 403);
}

#[test]
fn skip_auth_lets_clients_without_certificate_reach_that_route_only() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\napi:\n  /v1/ready:\n    skip_auth: true\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &[]);
    let mut anonymous = kes.client_without_cert();
    assert_eq!(anonymous.get("/v1/ready").status, 200);
    let r = anonymous.get("/v1/status");
    assert_eq!(
        (r.status, r.message().as_str()),
        (400, "tls: client certificate is required")
    );
    assert_eq!(kes.client(&admin).get("/v1/status").status, 200);
}

#[test]
fn the_shipped_fs_config_loads_and_serves() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let (cert, key) = pki.server();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fs.yml"),
    )
    .unwrap()
    .replace("key: server.key", &format!("key: {}", key.display()))
    .replace("cert: server.cert", &format!("cert: {}", cert.display()));
    let path = pki.path("fs.yml");
    std::fs::write(&path, text).unwrap();
    let addr = common::free_addr();
    let mut cmd = std::process::Command::new(common::KES);
    cmd.args([
        "server",
        "--config",
        path.to_str().unwrap(),
        "--addr",
        &addr.to_string(),
    ])
    .env("ADMIN_IDENTITY", &admin.identity);
    let kes = Kes::spawn(cmd, addr, pki.ca_path.clone()).unwrap();
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/my-app-key", b"").status, 200);
    assert!(
        pki.path("keys").join("my-app-key").exists(),
        "keys land next to the config"
    );
}
