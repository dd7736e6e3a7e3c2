//! Resident-key calls made by the event loops themselves (issue 25): many calls wait for
//! CipherTrust at once without a thread each, their number is bounded, what is over the
//! bound waits in a bounded queue and then gets 503 with `Retry-After`, every request is
//! answered, and a CipherTrust that hangs never holds up keys kes holds. Real binary,
//! real mTLS, the CipherTrust stand-in with injected latency. The tests assert answers
//! and counts, never times.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;
#[path = "common/resident.rs"]
mod resident;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use common::{Client, Kes, Resp, metric};
use ctm_sim::Route;
use resident::{Mode, Setup, decrypt, generate};

in_both_modes!(
    the_loops_hold_many_calls_in_flight_without_the_pool,
    calls_over_the_bound_wait_in_a_bounded_queue_then_get_503,
    a_refused_token_and_a_restarted_ciphertrust_go_the_blocking_way,
    a_hanging_ciphertrust_holds_no_held_key_and_every_request_is_answered,
);

/// kes with resident keys and these server flags; the app may use every key route and
/// read the metrics.
fn start(s: &Setup, flags: &[&str]) -> Kes {
    let config = s.config(
        "config.yml",
        "ciphertrust",
        Some("resident"),
        &["/v1/key/*", "/v1/metrics"],
    );
    s.try_start(&config, flags)
        .unwrap_or_else(|e| panic!("kes did not start: {e}"))
}

fn scrape(c: &mut Client) -> String {
    let r = c.get("/v1/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn generate_request(context: &str) -> Vec<u8> {
    json!({ "context": B64.encode(context) })
        .to_string()
        .into_bytes()
}

/// 40 generates wait for CipherTrust at once (it answers after 1.5 s) although the pool
/// has one worker: the event loops hold them, and the metrics show them in flight.
fn the_loops_hold_many_calls_in_flight_without_the_pool(mode: Mode) {
    let s = Setup::new(mode);
    let kes = Arc::new(start(&s, &["--workers", "1"]));
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (_, sealed) = generate(&mut c, "k", "warm").unwrap();
    assert_eq!(decrypt(&mut c, "k", &sealed, "warm").status, 200);
    // CipherTrust holds every call until all 40 are in flight: however slowly the 40
    // clients and kes's 40 connections to the stand-in get going on a loaded machine.
    s.sim.set_hang(true);
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let (kes, app, sealed) = (Arc::clone(&kes), s.app.clone(), sealed.clone());
            thread::spawn(move || {
                let mut c = kes.client(&app);
                if i % 2 == 0 {
                    generate(&mut c, "k", "ctx")
                        .map(|_| 200)
                        .unwrap_or_else(|r| r.status)
                } else {
                    decrypt(&mut c, "k", &sealed, "warm").status
                }
            })
        })
        .collect();
    // Wait until CipherTrust holds all 40 (the stand-in reads each request, then holds it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0.0;
    while Instant::now() < deadline {
        let scrape = scrape(&mut c);
        seen = metric(&scrape, "kes_ciphertrust_calls_in_flight");
        if seen >= 40.0 {
            // The one pool worker serves this scrape, nothing else.
            assert_eq!(metric(&scrape, "kes_worker_pool_busy"), 1.0, "{scrape}");
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    s.sim.set_hang(false);
    assert_eq!(seen, 40.0, "the event loops held the calls");
    let statuses: Vec<u16> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let scrape = scrape(&mut c);
    assert_eq!(metric(&scrape, "kes_ciphertrust_calls_in_flight"), 0.0);
    assert!(metric(&scrape, "kes_ciphertrust_connections") >= 40.0);
    assert_eq!(metric(&scrape, "kes_ciphertrust_calls_refused_total"), 0.0);
}

/// One loop, two calls in flight, a queue of three that waits at most 300 ms: of 20
/// generates while CipherTrust takes 2 s, two are answered 200, and the 18 others 503
/// with `Retry-After`, at once (queue full) or after the queue's time limit.
fn calls_over_the_bound_wait_in_a_bounded_queue_then_get_503(mode: Mode) {
    let s = Setup::new(mode);
    let kes = Arc::new(start(
        &s,
        &[
            "--loops",
            "1",
            "--cm-calls",
            "2",
            "--cm-connections",
            "2",
            "--cm-queue",
            "3",
            "--cm-queue-timeout",
            "300ms",
        ],
    ));
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    generate(&mut c, "k", "warm").unwrap();
    s.sim.set_latency(Duration::from_millis(2000));
    let barrier = Arc::new(Barrier::new(20));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (kes, app, barrier) = (Arc::clone(&kes), s.app.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut c = kes.client(&app);
                c.connect().unwrap();
                barrier.wait();
                c.post("/v1/key/generate/k", &generate_request("ctx"))
            })
        })
        .collect();
    let answers: Vec<Resp> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Resp> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        (ok, busy.len()),
        (2, 18),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in busy {
        assert_eq!(
            r.message(),
            "too many calls to the keystore are waiting: try again later"
        );
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    s.sim.set_latency(Duration::ZERO);
    let scrape = scrape(&mut c);
    assert_eq!(metric(&scrape, "kes_ciphertrust_calls_refused_total"), 18.0);
    assert_eq!(metric(&scrape, "kes_ciphertrust_calls_queued"), 0.0);
    // Room again: served.
    assert!(generate(&mut c, "k", "after").is_ok());
    // Only the two admitted calls reached CipherTrust (and the warm-up, and this one).
    assert_eq!(s.sim.count(Route::Encrypt), 4);
}

/// What only the blocking calls settle goes there: an API token CipherTrust refuses (a
/// new one is fetched), and connections that a restarted CipherTrust dropped.
fn a_refused_token_and_a_restarted_ciphertrust_go_the_blocking_way(mode: Mode) {
    let s = Setup::new(mode);
    let kes = start(&s, &[]);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let (plain, sealed) = generate(&mut c, "k", "ctx").unwrap();
    let tokens = s.sim.count(Route::Token);
    s.sim.expire_all_tokens();
    let r = decrypt(&mut c, "k", &sealed, "ctx");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], plain.as_str());
    assert_eq!(s.sim.count(Route::Token), tokens + 1);
    // The loops' connections are cut while idle; the next calls still work.
    s.sim.go_down();
    s.sim.come_up();
    for i in 0..5 {
        let (plain, sealed) = generate(&mut c, "k", &format!("after-{i}")).unwrap();
        let r = decrypt(&mut c, "k", &sealed, &format!("after-{i}"));
        assert_eq!(r.json()["plaintext"], plain.as_str());
    }
}

/// CipherTrust hangs: resident calls wait (up to the limits), while a key kes holds (a
/// secret-backed key, cached) is served throughout. When CipherTrust answers again,
/// every waiting request gets its answer; none is left without one.
fn a_hanging_ciphertrust_holds_no_held_key_and_every_request_is_answered(mode: Mode) {
    let s = Setup::new(mode);
    // A key kes holds, made in secrets mode, then kes in resident mode.
    let plain_config = s.config("plain.yml", "ciphertrust", None, resident::ALL_KEY_ROUTES);
    let kes = s.start(&plain_config);
    assert_eq!(
        kes.client(&s.app).post("/v1/key/create/held", b"").status,
        200
    );
    drop(kes);
    let kes = Arc::new(start(&s, &["--cm-calls", "8", "--cm-queue", "8"]));
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/res", b"").status, 200);
    generate(&mut c, "res", "warm").unwrap();
    generate(&mut c, "held", "warm").unwrap();

    s.sim.set_hang(true);
    let waiting: Vec<_> = (0..30)
        .map(|_| {
            let (kes, app) = (Arc::clone(&kes), s.app.clone());
            thread::spawn(move || {
                let mut c = kes.client(&app);
                c.post("/v1/key/generate/res", &generate_request("ctx"))
                    .status
            })
        })
        .collect();
    // The calls that fit are held by CipherTrust; the rest were refused or queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.sim.held(Route::Encrypt) < 8 {
        assert!(Instant::now() < deadline, "CipherTrust never got the calls");
        thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile the held key is served, on every connection asked.
    for i in 0..100 {
        let mut held = kes.client(&s.app);
        let (plain, sealed) = generate(&mut held, "held", &format!("h{i}")).unwrap();
        let r = decrypt(&mut held, "held", &sealed, &format!("h{i}"));
        assert_eq!(r.json()["plaintext"], plain.as_str());
    }
    assert!(
        waiting.iter().any(|t| !t.is_finished()),
        "resident calls still wait"
    );
    s.sim.set_hang(false);
    let statuses: Vec<u16> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
}

/// 2,000 client connections send a generate each at once against a limit of 256 calls
/// (CipherTrust answers after 50 ms): every connection gets exactly one answer, 200 or
/// 503 with `Retry-After`; nothing is left without one, and the server's memory stays
/// bounded.
#[test]
fn two_thousand_connections_against_a_limit_of_256_are_all_answered() {
    raise_fd_limit();
    let s = Setup::new(Mode::Default);
    let kes = start(&s, &["--cm-calls", "256", "--cm-connections", "256"]);
    let mut c = kes.client(&s.app);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    generate(&mut c, "k", "warm").unwrap();
    s.sim.set_latency(Duration::from_millis(50));
    let request = {
        let body = generate_request("ctx");
        let mut raw = format!(
            "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw
    };
    let rss_before = rss_kb(kes.child.id());
    // 8 threads each open 250 connections, sending the request on each as it opens,
    // then read all their answers.
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let mut group: Vec<Client> = (0..250).map(|_| kes.client(&s.app)).collect();
            let request = request.clone();
            thread::spawn(move || {
                for c in &mut group {
                    c.write(&request).unwrap();
                }
                group
                    .iter_mut()
                    .map(|c| {
                        c.read_response()
                            .map(|r| (r.status, r.header("retry-after").map(str::to_string)))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(answers.len(), 2000);
    let mut ok = 0;
    for answer in &answers {
        match answer {
            Ok((200, _)) => ok += 1,
            Ok((503, Some(retry))) => assert_eq!(retry, "1"),
            other => panic!("{other:?}"),
        }
    }
    assert!(ok >= 256, "{ok} answered 200");
    let rss_after = rss_kb(kes.child.id());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    s.sim.set_latency(Duration::ZERO);
    assert!(generate(&mut c, "k", "after").is_ok());
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 2,000 connections need more descriptors than the default soft limit of some systems.
fn raise_fd_limit() {
    // SAFETY: plain syscalls on this process's own limits.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
