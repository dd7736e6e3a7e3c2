//! Audit events, log streams and metrics through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{Credential, Kes, Pki};

fn start(pki: &Pki, admin: &Credential, app: &Credential, extra: &str) -> Kes {
    let config = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\npolicy:\n  app:\n    allow: [/v1/key/generate/app*, /v1/status]\n    identities: [{}]\nkeystore:\n  fs:\n    path: {}\n{extra}",
            admin.identity,
            app.identity,
            pki.path("keys").display()
        ),
    );
    Kes::start(pki, &config, &[])
}

/// Parses a scrape and sums the samples of `family` whose labels match `code_prefix`.
fn counter(scrape: &prometheus_parse::Scrape, family: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == family)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn scrape(c: &mut common::Client) -> prometheus_parse::Scrape {
    let resp = c.get("/v1/metrics");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let lines = resp
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid Prometheus text")
}

#[test]
fn metrics_count_every_request_by_status_class() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = start(&pki, &admin, &app, "");
    let mut a = kes.client(&admin);
    assert_eq!(a.post("/v1/key/create/app-key", b"").status, 200);

    let before = scrape(&mut a);
    let mut p = kes.client(&app);
    for _ in 0..25 {
        assert_eq!(p.post("/v1/key/generate/app-key", b"{}").status, 200);
    }
    for _ in 0..7 {
        assert_eq!(p.get("/v1/api").status, 403);
    }
    for _ in 0..3 {
        assert_eq!(a.get("/v1/key/describe/missing").status, 404);
    }
    let after = scrape(&mut a);
    // The first scrape itself is one more 2xx.
    let delta = |family: &str| counter(&after, family) - counter(&before, family);
    assert_eq!(delta("kes_http_request_success"), 25.0 + 1.0);
    assert_eq!(delta("kes_http_request_error"), 10.0);
    assert_eq!(delta("kes_http_request_failure"), 0.0);
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "kes_http_response_time"),
        "the latency histogram is there"
    );
    for family in [
        "kes_system_up_time",
        "kes_cache_hits",
        "kes_http_connections_open",
        "kes_worker_pool_size",
    ] {
        assert!(
            after.samples.iter().any(|s| s.metric == family),
            "missing {family}"
        );
    }
    assert!(
        counter(&after, "kes_cache_hits") >= 24.0,
        "generates after the first hit the cache"
    );
}

#[test]
fn an_audit_subscriber_sees_every_request_in_order() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = start(&pki, &admin, &app, "");
    let mut a = kes.client(&admin);
    assert_eq!(a.post("/v1/key/create/app-key", b"").status, 200);

    let mut sub = kes.client(&admin);
    sub.write(b"GET /v1/log/audit HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(sub.into_stream());
    let mut head = String::new();
    while reader.read_line(&mut head).unwrap() > 2 {
        if head.ends_with("\r\n\r\n") {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/x-ndjson"));

    let mut p = kes.client(&app);
    let mut expected = Vec::new();
    for i in 0..500 {
        if i % 5 == 4 {
            assert_eq!(p.get("/v1/api").status, 403);
            expected.push(("/v1/api".to_string(), 403, app.identity.clone()));
        } else {
            assert_eq!(p.post("/v1/key/generate/app-key", b"{}").status, 200);
            expected.push((
                "/v1/key/generate/app-key".to_string(),
                200,
                app.identity.clone(),
            ));
        }
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut crlf = String::new();
        reader.read_line(&mut crlf).unwrap();
        let event: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        if event["request"]["path"] == "/v1/log/audit" {
            // The subscription itself is audited too.
            continue;
        }
        seen.push((
            event["request"]["path"].as_str().unwrap().to_string(),
            event["response"]["code"].as_u64().unwrap() as u16,
            event["request"]["identity"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
        assert!(
            event["response"]["time"].is_u64(),
            "response.time is integer nanoseconds"
        );
        assert_eq!(event["request"]["ip"], "127.0.0.1");
        let text = line.to_ascii_lowercase();
        assert!(
            !text.contains("plaintext") && !text.contains("ciphertext"),
            "{line}"
        );
    }
    assert_eq!(seen, expected);
}

#[test]
fn a_stalled_subscriber_loses_events_and_does_not_slow_requests() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = start(&pki, &admin, &app, "");
    let mut a = kes.client(&admin);
    assert_eq!(a.post("/v1/key/create/app-key", b"").status, 200);
    // Subscribes and never reads, with a small receive window so the server's buffers fill.
    let mut stalled = kes.client(&admin);
    stalled.connect().unwrap();
    stalled.shrink_receive_buffer();
    stalled
        .write(b"GET /v1/log/audit HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let mut p = kes.client(&app);
    let started = Instant::now();
    for _ in 0..5000 {
        assert_eq!(p.post("/v1/key/generate/app-key", b"{}").status, 200);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "requests were held up: {elapsed:?}"
    );
    let after = scrape(&mut a);
    assert!(
        counter(&after, "kes_log_events_dropped") > 0.0,
        "drops are counted"
    );
}

#[test]
fn the_error_stream_delivers_error_events() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = start(&pki, &admin, &app, "log:\n  error: DEBUG\n");
    let mut sub = kes.client(&admin);
    sub.write(b"GET /v1/log/error HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(sub.into_stream());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
    // A denied request is logged at DEBUG.
    assert_eq!(kes.client(&app).get("/v1/api").status, 403);
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let mut event = String::new();
    reader.read_line(&mut event).unwrap();
    let event: serde_json::Value = serde_json::from_str(event.trim_end()).unwrap();
    assert!(
        event["message"].as_str().unwrap().contains("denied"),
        "{event}"
    );
}

#[test]
fn console_audit_writes_json_lines_to_stdout_when_enabled() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = start(&pki, &admin, &app, "log:\n  audit: on\n");
    assert_eq!(kes.client(&app).get("/v1/status").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = kes.stdout.lock().unwrap().clone();
        if let Some(line) = out.lines().find(|l| l.contains("/v1/status")) {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["request"]["identity"], app.identity.as_str());
            assert_eq!(event["response"]["code"], 200);
            break;
        }
        assert!(Instant::now() < deadline, "no audit line on stdout: {out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
