//! The real `kes` binary in front of the CipherTrust Manager simulator, both on 127.0.0.1:
//! the seed tutorial's setup, token expiry under load, outages (at runtime and at boot),
//! the key cache as seen from the API, startup errors, and the shipped config files.
//!
//! Every test ends by checking that the refresh token never reached kes's output.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use common::{Client, Credential, KES, Kes, Pki, Resp, free_addr, metric};
use ctm_sim::{CtmSim, REFRESH_TOKEN, Route};

const MS: Duration = Duration::from_millis(1);

/// The app policy of the tutorial, plus readiness and status where a test needs them.
fn app_policy(extra_allow: &[&str]) -> String {
    let mut allow = vec![
        "/v1/key/create/my-app*",
        "/v1/key/generate/my-app*",
        "/v1/key/decrypt/my-app*",
    ];
    allow.extend_from_slice(extra_allow);
    let mut text = String::from("policy:\n  my-app:\n    allow:\n");
    for path in allow {
        text.push_str(&format!("    - {path}\n"));
    }
    text.push_str("    identities:\n    - ${APP_IDENTITY}\n");
    text
}

/// The keystore section under `section` (`gemalto.keysecure` or `ciphertrust`), with the
/// refresh token taken from `$CTM_REFRESH_TOKEN`.
fn keystore(sim: &CtmSim, section: &str) -> String {
    let head = match section {
        "ciphertrust" => "keystore:\n  ciphertrust:\n".to_string(),
        _ => "keystore:\n  gemalto:\n    keysecure:\n".to_string(),
    };
    let pad = if section == "ciphertrust" {
        "    "
    } else {
        "      "
    };
    format!(
        "{head}{pad}endpoint: {}\n{pad}credentials:\n{pad}  token: ${{CTM_REFRESH_TOKEN}}\n{pad}  domain: \"\"\n{pad}  retry: 15s\n{pad}tls:\n{pad}  ca: {}\n",
        sim.endpoint(),
        sim.ca_file().display()
    )
}

struct Setup {
    pki: Pki,
    app: Credential,
    sim: CtmSim,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(CtmSim::start())
    }

    fn with(sim: CtmSim) -> Setup {
        let pki = Pki::new();
        let app = pki.client("app");
        Setup { pki, app, sim }
    }

    /// A config: `root: disabled`, the app policy, `extra`, and the keystore.
    fn config(&self, name: &str, section: &str, extra_allow: &[&str], extra: &str) -> PathBuf {
        let body = format!(
            "address: 0.0.0.0:7373\nroot: disabled\n{}{extra}{}",
            app_policy(extra_allow),
            keystore(&self.sim, section)
        );
        self.pki.config(name, &body)
    }

    fn command(&self, config: &Path, addr: std::net::SocketAddr) -> Command {
        let mut cmd = Command::new(KES);
        cmd.arg("server")
            .arg("--config")
            .arg(config)
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--auth=off")
            .env("APP_IDENTITY", &self.app.identity)
            .env("CTM_REFRESH_TOKEN", REFRESH_TOKEN);
        cmd
    }

    fn try_start(&self, config: &Path) -> Result<Kes, String> {
        let addr = free_addr();
        Kes::spawn(self.command(config, addr), addr, self.pki.ca_path.clone())
    }

    fn start(&self, config: &Path) -> Kes {
        self.try_start(config)
            .unwrap_or_else(|e| panic!("kes did not start: {e}"))
    }

    /// Starts kes with extra flags (`--loops`, `--workers`).
    fn start_with(&self, config: &Path, args: &[&str]) -> Kes {
        let addr = free_addr();
        let mut cmd = self.command(config, addr);
        cmd.args(args);
        Kes::spawn(cmd, addr, self.pki.ca_path.clone())
            .unwrap_or_else(|e| panic!("kes did not start: {e}"))
    }
}

/// The refresh token is in neither output stream of `kes`.
fn assert_token_not_leaked(kes: &Kes) {
    let (err, out) = (kes.stderr(), kes.stdout.lock().unwrap().clone());
    assert!(
        !err.contains(REFRESH_TOKEN),
        "refresh token in stderr:\n{err}"
    );
    assert!(
        !out.contains(REFRESH_TOKEN),
        "refresh token in stdout:\n{out}"
    );
}

fn create(c: &mut Client, name: &str) -> Resp {
    c.post(&format!("/v1/key/create/{name}"), b"")
}

/// Generates a data key; (plaintext, ciphertext) as base64, or the error response.
fn generate(c: &mut Client, name: &str) -> Result<(String, String), Resp> {
    let r = c.post(
        &format!("/v1/key/generate/{name}"),
        json!({ "context": B64.encode("ctx") })
            .to_string()
            .as_bytes(),
    );
    if r.status != 200 {
        return Err(r);
    }
    let v = r.json();
    Ok((
        v["plaintext"].as_str().unwrap().to_string(),
        v["ciphertext"].as_str().unwrap().to_string(),
    ))
}

fn decrypt(c: &mut Client, name: &str, ciphertext: &str) -> Resp {
    c.post(
        &format!("/v1/key/decrypt/{name}"),
        json!({ "ciphertext": ciphertext, "context": B64.encode("ctx") })
            .to_string()
            .as_bytes(),
    )
}

/// A generate → decrypt round trip that must succeed.
fn round_trip(c: &mut Client, name: &str) {
    let (plain, cipher) =
        generate(c, name).unwrap_or_else(|r| panic!("generate {name}: {} {}", r.status, r.text()));
    let r = decrypt(c, name, &cipher);
    assert_eq!(r.status, 200, "decrypt {name}: {}", r.text());
    assert_eq!(r.json()["plaintext"], plain.as_str());
}

/// A keystore failure as the API must report it: 502 or 504 with a JSON `message`.
fn assert_gateway_error(r: &Resp, what: &str) {
    assert!(
        r.status == 502 || r.status == 504,
        "{what}: expected 502/504, got {} {}",
        r.status,
        r.text()
    );
    assert!(
        !r.message().is_empty(),
        "{what}: no JSON message: {}",
        r.text()
    );
}

/// Polls `check` every 50 ms until it holds; false if `limit` passes first.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(50 * MS);
    }
    check()
}

fn list_names(c: &mut Client, pattern: &str) -> Vec<String> {
    let r = c.get(&format!("/v1/key/list/{pattern}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tutorial
// ---------------------------------------------------------------------------------------

/// The seed tutorial, step 4-6, literally: the token is written into the file, as the
/// tutorial does.
#[test]
fn seed_tutorial_config_serves_the_app() {
    let s = Setup::new();
    let body = format!(
        "address: 0.0.0.0:7373\nroot: disabled\n{}keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH_TOKEN}\n        domain: \"\"\n        retry: 15s\n      tls:\n        ca: {}\n",
        app_policy(&[]),
        s.sim.endpoint(),
        s.sim.ca_file().display()
    );
    let config = s.pki.config("server-config.yml", &body);
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);

    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");
    // The key is a CipherTrust secret of type seed, holding the stored key value.
    assert_eq!(s.sim.secret_type("my-app-key").as_deref(), Some("seed"));
    let material = s.sim.secret("my-app-key").unwrap();
    assert!(kes::crypto::KeyVersion::parse(material.as_bytes()).is_ok());
    // The policy holds: other names and other routes are refused.
    assert_eq!(create(&mut c, "other-key").status, 403);
    assert_eq!(c.get("/v1/key/list/*").status, 403);
    assert_eq!(s.sim.secret_count(), 1);
    assert_token_not_leaked(&kes);
}

#[test]
fn ciphertrust_section_name_works_the_same() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "ciphertrust",
        &["/v1/key/delete/my-app*", "/v1/key/describe/my-app*"],
        "",
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");
    assert_eq!(s.sim.secret_type("my-app-key").as_deref(), Some("seed"));
    let again = create(&mut c, "my-app-key");
    assert_eq!(
        (again.status, again.message().as_str()),
        (400, "key already exists")
    );
    // Deleting removes the secret, and the key is gone from the cache as well.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/my-app-key", b"").status,
        200
    );
    assert_eq!(s.sim.secret("my-app-key"), None);
    assert_eq!(c.get("/v1/key/describe/my-app-key").status, 404);
    let gone = generate(&mut c, "my-app-key").expect_err("a deleted key still generates");
    assert_eq!(gone.status, 404);
    assert_token_not_leaked(&kes);
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// API tokens live one second; 2,000 requests that all reach CipherTrust (creates, and
/// generates/decrypts with a cache of 50 ms) never fail.
#[test]
fn tokens_expiring_every_second_fail_no_request() {
    let s = Setup::new();
    s.sim.set_token_secs(1);
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &[],
        "cache:\n  expiry:\n    any: 50ms\n    unused: 50ms\nlog:\n  error: DEBUG\n",
    );
    let kes = Arc::new(s.start(&config));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (kes, app, failed, done) = (
                Arc::clone(&kes),
                s.app.clone(),
                Arc::clone(&failed),
                Arc::clone(&done),
            );
            thread::spawn(move || {
                let mut c = kes.client(&app);
                let check = |ok: bool, what: &str| {
                    done.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        eprintln!("request failed: {what}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                };
                // 125 rounds × (create, generate, decrypt, generate) = 500 requests.
                for i in 0..125 {
                    let name = format!("my-app-{w}-{i}");
                    let r = create(&mut c, &name);
                    check(r.status == 200, &format!("create {name}: {}", r.text()));
                    match generate(&mut c, &name) {
                        Ok((plain, cipher)) => {
                            check(true, "");
                            let r = decrypt(&mut c, &name, &cipher);
                            check(
                                r.status == 200 && r.json()["plaintext"] == plain.as_str(),
                                &format!("decrypt {name}: {}", r.text()),
                            );
                        }
                        Err(r) => check(false, &format!("generate {name}: {}", r.text())),
                    }
                    if i % 10 == 0 {
                        // Let a token or two expire between requests.
                        thread::sleep(20 * MS);
                    }
                    let r = generate(&mut c, &name);
                    check(r.is_ok(), &format!("generate {name} again"));
                }
            })
        })
        .collect();
    // Besides expiring on their own, tokens are revoked now and then, so that requests
    // also meet 401s that no timely renewal avoids.
    let revocations = AtomicUsize::new(0);
    let running = AtomicBool::new(true);
    thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(100 * MS);
            while running.load(Ordering::SeqCst) {
                s.sim.expire_all_tokens();
                revocations.fetch_add(1, Ordering::SeqCst);
                thread::sleep(250 * MS);
            }
        });
        for w in workers {
            w.join().unwrap();
        }
        running.store(false, Ordering::SeqCst);
    });
    let tokens = s.sim.count(Route::Token);
    eprintln!(
        "2,000 requests in {:?}: {tokens} token requests, tokens revoked {} times",
        started.elapsed(),
        revocations.load(Ordering::SeqCst)
    );
    assert_eq!(done.load(Ordering::SeqCst), 2000);
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert_eq!(s.sim.secret_count(), 500);
    assert!(revocations.load(Ordering::SeqCst) >= 1);
    assert!(tokens >= 2, "{tokens} token requests");
    assert_token_not_leaked(&kes);
}

#[test]
fn wrong_refresh_token_is_a_clear_startup_error_without_the_token() {
    let s = Setup::new();
    let wrong = "wrong-refresh-token-5f3a9c7e1d";
    let config = s.config("config.yml", "gemalto.keysecure", &[], "");
    let addr = free_addr();
    let mut cmd = s.command(&config, addr);
    cmd.env("CTM_REFRESH_TOKEN", wrong);
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "kes started with a wrong token");
    assert!(
        stderr.contains("refresh token was rejected"),
        "message does not name the problem: {stderr}"
    );
    assert!(stderr.contains(&s.sim.endpoint()), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(wrong), "the token is printed: {text}");
        assert!(!text.contains(REFRESH_TOKEN));
    }
}

/// CipherTrust's certificate names its address only in the Common Name: kes refuses it
/// at startup, saying what is wrong with the certificate.
#[test]
fn certificate_without_san_is_a_clear_startup_error() {
    let s = Setup::with(CtmSim::start_without_san());
    let config = s.config("config.yml", "gemalto.keysecure", &[], "");
    let err = match s.try_start(&config) {
        Ok(_) => panic!("kes accepted a certificate without subject alternative names"),
        Err(err) => err,
    };
    assert!(err.contains("exited with"), "{err}");
    assert!(err.contains("not valid for"), "{err}");
    assert!(err.contains("Subject Alternative Names"), "{err}");
    assert!(!err.contains(REFRESH_TOKEN), "{err}");
}

/// The refresh token is revoked while kes runs: readiness says so, with the reason.
#[test]
fn refresh_token_revoked_after_start_shows_in_readiness() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &["/v1/ready", "/v1/status", "/v1/metrics"],
        "log:\n  error: DEBUG\n",
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(c.get("/v1/ready").status, 200);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    let token_failures = |c: &mut Client| {
        metric(
            &c.get("/v1/metrics").text(),
            "kes_ciphertrust_token_failures_total",
        )
    };
    assert_eq!(token_failures(&mut c), 0.0);

    s.sim
        .set_refresh_token("a-new-refresh-token-kes-does-not-know");
    s.sim.expire_all_tokens();
    // The next call meets a 401, asks for a new token and is refused.
    let r = create(&mut c, "my-app-key-2");
    assert_gateway_error(&r, "create with a revoked refresh token");
    let ready = c.get("/v1/ready");
    assert_eq!(ready.status, 502, "{}", ready.text());
    assert!(
        ready.message().contains("refresh token was rejected"),
        "readiness does not say why: {}",
        ready.text()
    );
    assert!(!ready.text().contains(REFRESH_TOKEN));
    assert!(
        kes.stderr().contains("refresh token was rejected"),
        "{}",
        kes.stderr()
    );
    // Counted for the KesCipherTrustTokenRefreshFailing alert.
    assert!(token_failures(&mut c) >= 1.0);
    assert_token_not_leaked(&kes);
}

// ---------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------

/// CipherTrust goes away: cached keys keep decrypting for `offline`, then fail with a
/// gateway error; uncached keys and creates fail at once, leaving nothing behind; when
/// CipherTrust is back, service resumes without a restart.
#[test]
fn outage_cached_keys_serve_for_the_offline_window_then_fail_and_service_resumes() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &[
            "/v1/ready",
            "/v1/status",
            "/v1/key/describe/*",
            "/v1/metrics",
        ],
        "cache:\n  expiry:\n    any: 1m\n    unused: 1s\n    offline: 3s\nlog:\n  error: DEBUG\n",
    );
    // (kes_keystore_up, kes_cache_offline): what the alerts watch.
    let health = |c: &mut Client| {
        let scrape = c.get("/v1/metrics").text();
        (
            metric(&scrape, "kes_keystore_up"),
            metric(&scrape, "kes_cache_offline"),
        )
    };
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    for name in ["my-app-cached", "my-app-uncached"] {
        assert_eq!(create(&mut c, name).status, 200);
    }
    let (plain, cipher) = generate(&mut c, "my-app-cached").unwrap();
    let (_, uncached_cipher) = generate(&mut c, "my-app-uncached").unwrap();
    assert_eq!(health(&mut c), (1.0, 0.0));
    // Let the uncached key fall out of the cache (unused 1 s) while the other stays in use.
    let idle_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < idle_until {
        assert_eq!(decrypt(&mut c, "my-app-cached", &cipher).status, 200);
        thread::sleep(100 * MS);
    }

    s.sim.go_down();
    let down = Instant::now();
    // A key not in the cache: a clean gateway error at once, no waiting.
    let r = decrypt(&mut c, "my-app-uncached", &uncached_cipher);
    assert_gateway_error(&r, "decrypt with an uncached key");
    assert!(
        down.elapsed() < Duration::from_secs(2),
        "{:?}",
        down.elapsed()
    );
    // Creating fails cleanly too.
    let r = create(&mut c, "my-app-new");
    assert_gateway_error(&r, "create while CipherTrust is down");
    assert!(
        down.elapsed() < Duration::from_secs(3),
        "{:?}",
        down.elapsed()
    );
    let r = c.get("/v1/ready");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(c.get("/v1/status").json()["keystore_unreachable"], true);
    assert_eq!(health(&mut c), (0.0, 1.0), "serving from the offline cache");

    // The cached key keeps working for the offline window, although in use…
    let mut last_ok = down;
    let mut first_failure = None;
    while down.elapsed() < Duration::from_secs(8) {
        let r = decrypt(&mut c, "my-app-cached", &cipher);
        if r.status == 200 {
            assert!(first_failure.is_none(), "served again after failing");
            assert_eq!(r.json()["plaintext"], plain.as_str());
            last_ok = Instant::now();
        } else {
            assert_gateway_error(&r, "decrypt after the offline window");
            first_failure.get_or_insert(Instant::now());
        }
        thread::sleep(100 * MS);
    }
    // …then stops.
    let served = last_ok - down;
    assert!(
        served >= Duration::from_millis(2500),
        "cached key served only {served:?} into the outage"
    );
    let failed_at = first_failure.expect("the cached key never stopped working") - down;
    assert!(
        failed_at <= Duration::from_millis(4500),
        "cached key still served {failed_at:?} into the outage (offline: 3s)"
    );

    // Back: everything works again without a restart, and the failed create left nothing.
    s.sim.come_up();
    assert!(
        eventually(Duration::from_secs(15), || c.get("/v1/ready").status == 200),
        "not ready again"
    );
    assert_eq!(s.sim.secret("my-app-new"), None);
    assert_eq!(c.get("/v1/key/describe/my-app-new").status, 404);
    for name in ["my-app-cached", "my-app-uncached"] {
        assert_eq!(
            decrypt(
                &mut c,
                name,
                if name == "my-app-cached" {
                    &cipher
                } else {
                    &uncached_cipher
                }
            )
            .status,
            200
        );
    }
    assert_eq!(create(&mut c, "my-app-new").status, 200);
    round_trip(&mut c, "my-app-new");
    assert_eq!(
        c.get("/v1/status").json()["keystore_unreachable"],
        json!(null)
    );
    assert_eq!(health(&mut c), (1.0, 0.0));
    assert_token_not_leaked(&kes);
}

/// CipherTrust answers with 5xx: a create fails with a gateway error and leaves no key.
#[test]
fn create_failing_with_5xx_leaves_nothing_behind() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &["/v1/key/describe/*"],
        "",
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    s.sim.fail_route_with(Route::Create, Some(500));
    let r = create(&mut c, "my-app-key");
    assert_gateway_error(&r, "create answered 500");
    s.sim.fail_route_with(Route::Create, None);
    assert_eq!(s.sim.secret_count(), 0);
    assert_eq!(c.get("/v1/key/describe/my-app-key").status, 404);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");
    assert_token_not_leaked(&kes);
}

/// A CipherTrust that accepts connections but never answers: requests end with a gateway
/// error before the route timeout (15 s), never hang.
#[test]
fn silent_ciphertrust_never_hangs_a_request_past_the_route_timeout() {
    let s = Setup::new();
    let config = s.config("config.yml", "gemalto.keysecure", &[], "");
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    s.sim.set_hang(true);
    let started = Instant::now();
    let r = generate(&mut c, "my-app-key").expect_err("served a key nobody could load");
    assert_gateway_error(&r, "generate with a silent CipherTrust");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    s.sim.set_hang(false);
    assert_token_not_leaked(&kes);
}

/// One event loop, two pool workers, and a CipherTrust that stops answering while six
/// creates wait for it (two on the workers, four queued behind them): a key in the cache
/// still serves generate → decrypt round trips at once, on a new connection of the same
/// loop. Once CipherTrust answers again, every create ends (created, or a gateway error)
/// well before the route timeout, and kes serves as before.
#[test]
fn a_hanging_ciphertrust_does_not_hold_up_cached_keys() {
    const STUCK: usize = 6;
    let s = Setup::new();
    let config = s.config("config.yml", "gemalto.keysecure", &[], "");
    let kes = s.start_with(&config, &["--loops", "1", "--workers", "2"]);
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-cached").status, 200);
    round_trip(&mut c, "my-app-cached");

    s.sim.set_hang(true);
    let hung = Instant::now();
    let finished = Arc::new(AtomicUsize::new(0));
    let stuck: Vec<_> = (0..STUCK)
        .map(|i| {
            let (mut c, finished) = (kes.client(&s.app), Arc::clone(&finished));
            thread::spawn(move || {
                let started = Instant::now();
                let r = c.try_request("POST", &format!("/v1/key/create/my-app-stuck-{i}"), b"");
                finished.fetch_add(1, Ordering::SeqCst);
                (r, started.elapsed())
            })
        })
        .collect();
    // Both workers wait for CipherTrust; the other creates queue for them.
    assert!(
        eventually(Duration::from_secs(5), || s.sim.held(Route::Create) >= 2),
        "the creates never reached CipherTrust (held: {})",
        s.sim.held(Route::Create)
    );

    // Round trips on a new connection, for two seconds of the hang.
    let mut cached = kes.client(&s.app);
    let mut rounds = 0;
    while rounds < 10 || hung.elapsed() < Duration::from_secs(2) {
        rounds += 1;
        let started = Instant::now();
        round_trip(&mut cached, "my-app-cached");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a cached round trip took {took:?} while CipherTrust hangs"
        );
    }
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a create ended although CipherTrust never answered"
    );
    assert_eq!(
        s.sim.held(Route::Create),
        2,
        "two workers, two creates at CipherTrust: the others wait in the queue"
    );
    eprintln!(
        "{rounds} cached round trips in {:?} of hang",
        hung.elapsed()
    );

    s.sim.set_hang(false);
    let mut created = 0;
    for (i, t) in stuck.into_iter().enumerate() {
        let (r, took) = t.join().unwrap();
        let r = r.unwrap_or_else(|e| panic!("create {i}: no response: {e}"));
        if r.status == 200 {
            created += 1;
            assert!(s.sim.secret(&format!("my-app-stuck-{i}")).is_some());
        } else {
            assert_gateway_error(&r, &format!("create {i} after the hang"));
        }
        assert!(took < Duration::from_secs(15), "create {i} took {took:?}");
    }
    eprintln!("{created} of {STUCK} stuck creates succeeded");
    // Still serving: the pool is free again and CipherTrust answers.
    assert_eq!(create(&mut c, "my-app-after").status, 200);
    round_trip(&mut c, "my-app-after");
    round_trip(&mut cached, "my-app-cached");
    assert_token_not_leaked(&kes);
}

/// Requests that queue for the pool while CipherTrust hangs and outlive their route
/// timeout there are answered with the original's timeout error when a worker gets to
/// them, and never reach CipherTrust.
#[test]
fn requests_queued_past_their_deadline_get_the_timeout_error_without_reaching_ciphertrust() {
    let s = Setup::new();
    let api = "api:\n  /v1/key/create/:\n    timeout: 2s\n";
    let config = s.config("config.yml", "gemalto.keysecure", &[], api);
    let kes = s.start_with(&config, &["--workers", "1"]);
    s.sim.set_hang(true);
    let (mut first, mut queued) = (kes.client(&s.app), kes.client(&s.app));
    let head = thread::spawn(move || first.try_request("POST", "/v1/key/create/my-app-first", b""));
    assert!(
        eventually(Duration::from_secs(5), || s.sim.held(Route::Create) == 1),
        "the first create never reached CipherTrust"
    );
    let behind = thread::spawn(move || {
        let started = Instant::now();
        let r = queued.try_request("POST", "/v1/key/create/my-app-queued", b"");
        (r, started.elapsed())
    });
    // The queued create outlives its 2 s while the only worker waits for CipherTrust.
    thread::sleep(Duration::from_secs(3));
    s.sim.set_hang(false);
    let (r, took) = behind.join().unwrap();
    let r = r.expect("an answer to the queued create");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["message"], "request timeout exceeded");
    assert!(
        took < Duration::from_secs(15),
        "the queued create took {took:?}"
    );
    assert!(s.sim.secret("my-app-queued").is_none());
    let first = head.join().unwrap().expect("an answer to the first create");
    assert!(
        first.status == 200 || first.status >= 500,
        "{}",
        first.text()
    );
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-after").status, 200);
}

/// A request of about 200 KB arrives while the connection's previous request waits for
/// CipherTrust, and its last bytes come a moment later (as over a real network, where
/// the end of a TLS record can trail its start): kes answers both. The hang only keeps
/// the connection away from its socket while the first 98 KB arrive, so that kes reads
/// them at once, as it would after any busy moment.
#[test]
fn a_large_request_whose_end_trails_is_answered_after_a_keystore_wait() {
    let s = Setup::new();
    let config = s.config("config.yml", "gemalto.keysecure", &[], "");
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");

    s.sim.set_hang(true);
    c.write(
        b"POST /v1/key/create/my-app-new HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || s.sim.held(Route::Create) == 1),
        "the create never reached CipherTrust"
    );

    // A generate with a large context, as TLS records of 16 KiB each.
    let body = json!({ "context": B64.encode(vec![7u8; 150_000]) }).to_string();
    let request = format!(
        "POST /v1/key/generate/my-app-key HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let stream = c.stream();
    let mut records = Vec::new();
    for chunk in request.as_bytes().chunks(16 * 1024) {
        stream.conn.writer().write_all(chunk).unwrap();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut records).unwrap();
        }
    }
    // Record boundaries: a 5-byte header whose last two bytes are the length.
    let mut ends = Vec::new();
    let mut at = 0;
    while at < records.len() {
        at += 5 + usize::from(u16::from_be_bytes([records[at + 3], records[at + 4]]));
        ends.push(at);
    }
    assert!(ends.len() > 6, "{} records", ends.len());
    // Five whole records (80 KiB of request) and the sixth but for its last 100 bytes.
    let split = ends[5] - 100;
    stream.sock.write_all(&records[..split]).unwrap();
    s.sim.set_hang(false);

    let r = c.read_response().expect("the create is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    thread::sleep(200 * MS);
    let rest = c.stream().sock.write_all(&records[split..]);
    let r = c.read_response().unwrap_or_else(|e| {
        panic!(
            "kes closed the connection instead of waiting for the rest of the request \
             (writing the rest: {rest:?}): {e}"
        )
    });
    assert_eq!(r.status, 200, "{}", r.text());
    let cipher = r.json()["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(
        c.post(
            "/v1/key/decrypt/my-app-key",
            json!({ "ciphertext": cipher, "context": B64.encode(vec![7u8; 150_000]) })
                .to_string()
                .as_bytes()
        )
        .json()["plaintext"],
        r.json()["plaintext"]
    );
    assert_token_not_leaked(&kes);
}

/// kes boots while CipherTrust is down: it starts, reports the keystore unreachable, and
/// becomes ready on its own once CipherTrust is up.
#[test]
fn boot_while_ciphertrust_is_down_then_ready_by_itself() {
    let s = Setup::new();
    s.sim.go_down();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &["/v1/ready", "/v1/status"],
        "log:\n  error: DEBUG\n",
    );
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    let r = c.get("/v1/ready");
    assert_eq!(r.status, 504, "{}", r.text());
    let status = c.get("/v1/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["keystore_unreachable"], true);
    assert_gateway_error(
        &create(&mut c, "my-app-key"),
        "create before CipherTrust is up",
    );

    s.sim.come_up();
    let up = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || c.get("/v1/ready").status == 200),
        "not ready 10 s after CipherTrust came up"
    );
    eprintln!("ready {:?} after CipherTrust came up", up.elapsed());
    // Ready means usable: the very next request works.
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");
    assert_eq!(
        c.get("/v1/status").json()["keystore_unreachable"],
        json!(null)
    );
    assert_token_not_leaked(&kes);
}

// ---------------------------------------------------------------------------------------
// Sharing, listing, the cache
// ---------------------------------------------------------------------------------------

#[test]
fn two_kes_processes_on_one_ciphertrust_see_each_others_keys() {
    let s = Setup::new();
    let one = s.start(&s.config("one.yml", "gemalto.keysecure", &[], ""));
    let two = s.start(&s.config("two.yml", "ciphertrust", &[], ""));
    let (mut c1, mut c2) = (one.client(&s.app), two.client(&s.app));
    assert_eq!(create(&mut c1, "my-app-one").status, 200);
    assert_eq!(create(&mut c2, "my-app-two").status, 200);
    // Each decrypts what the other encrypted.
    let (p1, x1) = generate(&mut c1, "my-app-two").unwrap();
    let (p2, x2) = generate(&mut c2, "my-app-one").unwrap();
    assert_eq!(
        decrypt(&mut c2, "my-app-two", &x1).json()["plaintext"],
        p1.as_str()
    );
    assert_eq!(
        decrypt(&mut c1, "my-app-one", &x2).json()["plaintext"],
        p2.as_str()
    );
    // And one cannot create what the other created.
    assert_eq!(create(&mut c2, "my-app-one").status, 400);
    assert_token_not_leaked(&one);
    assert_token_not_leaked(&two);
}

#[test]
fn listing_2500_keys_is_complete() {
    let s = Setup::new();
    let config = s.config("config.yml", "gemalto.keysecure", &["/v1/key/list/*"], "");
    let kes = s.start(&config);
    let mut c = kes.client(&s.app);
    // A few through the API, the rest as another CipherTrust client would.
    for i in 0..5 {
        assert_eq!(create(&mut c, &format!("my-app-{i:04}")).status, 200);
    }
    for i in 5..2500 {
        s.sim
            .insert_secret(&format!("my-app-{i:04}"), "not-a-kes-key");
    }
    s.sim.insert_secret("other-0001", "not-a-kes-key");
    let before = s.sim.count(Route::List);
    let names = list_names(&mut c, "my-app-*");
    // One pass over CipherTrust's pages of 200: 13 requests for 2,501 secrets.
    assert_eq!(s.sim.count(Route::List) - before, 13);
    let expected: Vec<String> = (0..2500).map(|i| format!("my-app-{i:04}")).collect();
    assert_eq!(names.len(), 2500);
    assert_eq!(
        names, expected,
        "listed sorted, complete, without duplicates"
    );
    assert_eq!(list_names(&mut c, "*").len(), 2501);
    assert_eq!(list_names(&mut c, "my-app-24*").len(), 100);
    assert_token_not_leaked(&kes);
}

/// 1,000 generates on one key from 8 connections: one export while the key stays cached;
/// after it went unused past `unused`, one more.
#[test]
fn one_export_per_cache_period() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &[],
        "cache:\n  expiry:\n    any: 10m\n    unused: 1s\n",
    );
    let kes = Arc::new(s.start(&config));
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    assert_eq!(
        s.sim.count(Route::Export),
        0,
        "create does not fill the cache"
    );

    let burst = || {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (kes, app) = (Arc::clone(&kes), s.app.clone());
                thread::spawn(move || {
                    let mut c = kes.client(&app);
                    for _ in 0..125 {
                        generate(&mut c, "my-app-key").expect("generate");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    };
    burst();
    assert_eq!(s.sim.count(Route::Export), 1, "1,000 generates, one export");
    thread::sleep(Duration::from_millis(1600));
    burst();
    assert_eq!(
        s.sim.count(Route::Export),
        2,
        "unused for longer than `unused`: exactly one more export"
    );
    assert_token_not_leaked(&kes);
}

// ---------------------------------------------------------------------------------------
// The `keys:` section
// ---------------------------------------------------------------------------------------

#[test]
fn keys_section_creates_keys_in_ciphertrust_and_a_failure_stops_startup() {
    let s = Setup::new();
    let config = s.config(
        "config.yml",
        "gemalto.keysecure",
        &[],
        "keys:\n- name: my-app-listed\n",
    );
    let kes = s.start(&config);
    assert_eq!(s.sim.secret_type("my-app-listed").as_deref(), Some("seed"));
    round_trip(&mut kes.client(&s.app), "my-app-listed");
    assert_token_not_leaked(&kes);
    drop(kes);

    let config = s.config(
        "failing.yml",
        "gemalto.keysecure",
        &[],
        "keys:\n- name: my-app-doomed\n",
    );
    s.sim.fail_route_with(Route::Create, Some(503));
    let started = Instant::now();
    let err = match s.try_start(&config) {
        Ok(_) => panic!("kes started although a listed key could not be created"),
        Err(err) => err,
    };
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(err.contains("exited with"), "{err}");
    assert!(
        err.contains("'my-app-doomed'"),
        "message does not name the key: {err}"
    );
    assert!(!err.contains(REFRESH_TOKEN), "{err}");
    assert_eq!(s.sim.secret("my-app-doomed"), None);

    // With CipherTrust down at boot, a listed key cannot be created either: kes says so
    // and exits rather than serving without it.
    s.sim.fail_route_with(Route::Create, None);
    s.sim.go_down();
    let err = match s.try_start(&config) {
        Ok(_) => panic!("kes started although a listed key could not be created"),
        Err(err) => err,
    };
    assert!(
        err.contains("'my-app-doomed'"),
        "message does not name the key: {err}"
    );
    assert!(err.contains("not reachable"), "{err}");
    assert!(!err.contains(REFRESH_TOKEN), "{err}");
}

// ---------------------------------------------------------------------------------------
// The shipped config files
// ---------------------------------------------------------------------------------------

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `config/ciphertrust.yml` with the test's certificate paths, started against the simulator
/// with the environment variables it documents.
#[test]
fn shipped_ciphertrust_yml_loads_and_serves() {
    let s = Setup::new();
    let (cert, key) = s.pki.server();
    let text = repo_file("config/ciphertrust.yml")
        .replace("/etc/kes/server.key", &key.display().to_string())
        .replace("/etc/kes/server.cert", &cert.display().to_string())
        .replace(
            "/etc/kes/ciphertrust-ca.pem",
            &s.sim.ca_file().display().to_string(),
        );
    let config = s.pki.path("ciphertrust.yml");
    std::fs::write(&config, text).unwrap();

    let addr = free_addr();
    let mut cmd = Command::new(KES);
    cmd.arg("server")
        .arg("--config")
        .arg(&config)
        .arg("--addr")
        .arg(addr.to_string())
        .env("APP_IDENTITY", &s.app.identity)
        .env("CIPHERTRUST_ENDPOINT", s.sim.endpoint())
        .env("CIPHERTRUST_REFRESH_TOKEN", REFRESH_TOKEN)
        .env("CIPHERTRUST_DOMAIN", "");
    let kes = Kes::spawn(cmd, addr, s.pki.ca_path.clone())
        .unwrap_or_else(|e| panic!("kes did not start with config/ciphertrust.yml: {e}"));
    let mut c = kes.client(&s.app);
    assert_eq!(create(&mut c, "my-app-key").status, 200);
    round_trip(&mut c, "my-app-key");
    assert_eq!(s.sim.secret_type("my-app-key").as_deref(), Some("seed"));
    assert_eq!(create(&mut c, "not-my-app").status, 403);
    assert_token_not_leaked(&kes);
}

/// `config/minio-policy.yml`: the MinIO policy section merged into a config for the
/// simulator; a MinIO identity can do what MinIO does, and nothing else.
#[test]
fn shipped_minio_policy_yml_loads_and_serves() {
    let s = Setup::new();
    let minio = s.pki.client("minio");
    let policy = repo_file("config/minio-policy.yml");
    let body = format!(
        "root: disabled\n{policy}\n{}",
        keystore(&s.sim, "ciphertrust")
    );
    let config = s.pki.config("minio.yml", &body);
    let addr = free_addr();
    let mut cmd = s.command(&config, addr);
    cmd.env("MINIO_IDENTITY", &minio.identity);
    let kes = Kes::spawn(cmd, addr, s.pki.ca_path.clone())
        .unwrap_or_else(|e| panic!("kes did not start with config/minio-policy.yml: {e}"));
    let mut c = kes.client(&minio);

    assert_eq!(create(&mut c, "minio-key").status, 200);
    let (plain, cipher) = generate(&mut c, "minio-key").unwrap();
    assert_eq!(
        decrypt(&mut c, "minio-key", &cipher).json()["plaintext"],
        plain.as_str()
    );
    let bulk = c.post(
        "/v1/key/bulk/decrypt/minio-key",
        json!([{ "ciphertext": cipher, "context": B64.encode("ctx") }])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(bulk.status, 200, "{}", bulk.text());
    assert_eq!(list_names(&mut c, "*"), vec!["minio-key".to_string()]);
    assert_eq!(c.get("/v1/status").status, 200);
    // Allowed by the policy (the metrics route itself may not be finished: not a 403).
    assert_ne!(c.get("/v1/metrics").status, 403);
    // Not MinIO's business: deleting keys, reading policies.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/minio-key", b"").status,
        403
    );
    assert_eq!(c.get("/v1/policy/list/*").status, 403);
    assert_token_not_leaked(&kes);
}
