//! The server under abuse, reload and shutdown, through the real binary.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Credential, Kes, Pki, metric};

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer; then a valid limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn config(pki: &Pki, admin: &Credential, app: &Credential, allow: &str) -> std::path::PathBuf {
    config_with(pki, admin, app, allow, "")
}

/// [`config`] with `extra` sections (e.g. `api:`).
fn config_with(
    pki: &Pki,
    admin: &Credential,
    app: &Credential,
    allow: &str,
    extra: &str,
) -> std::path::PathBuf {
    pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\npolicy:\n  app:\n    allow: [{allow}]\n    identities: [{}]\n{extra}keystore:\n  fs:\n    path: {}\n",
            admin.identity,
            app.identity,
            pki.path("keys").display()
        ),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

/// 1,000 silent connections and 200 that send a byte a second, while a good client makes
/// 1,000 generate calls: every good call succeeds. The latency is printed (and bounded
/// loosely: this is a correctness test, the figures are in docs/BENCHMARKS.md).
#[test]
fn floods_of_silent_and_slow_clients_do_not_starve_a_good_one() {
    raise_fd_limit();
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let kes = Kes::start(&pki, &config(&pki, &admin, &app, "/v1/key/generate/*"), &[]);
    assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);

    let silent: Vec<_> = (0..1000)
        .map(|_| std::net::TcpStream::connect(kes.addr).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let slow_threads: Vec<_> = (0..200)
        .map(|_| {
            let stop = stop.clone();
            let mut sock = std::net::TcpStream::connect(kes.addr).unwrap();
            std::thread::spawn(move || {
                // A TLS ClientHello, one byte a second.
                let hello = [
                    0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ];
                for byte in hello.iter().cycle() {
                    if stop.load(Ordering::Relaxed) || sock.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();

    let mut good = kes.client(&app);
    let mut latencies = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        let r = good.post("/v1/key/generate/k", b"{}");
        latencies.push(started.elapsed());
        assert_eq!(r.status, 200);
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!("good client under flood: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    stop.store(true, Ordering::Relaxed);
    drop(silent);
    for t in slow_threads {
        let _ = t.join();
    }
}

/// A client pipelines key listings on one connection and never reads a response. With one
/// event loop and one pool worker, a good client (generate: on the loop, list: on the
/// pool) is served normally meanwhile; the server stops reading from the non-reader once
/// its responses back up, holds no thread and little memory for it, and closes it when
/// the route deadline passes (6 s here, set in `api:`).
#[test]
fn a_client_that_never_reads_holds_no_thread_and_is_cut_at_the_deadline() {
    // Listings run on the pool: the non-reader must not keep the only worker.
    non_reading_client(b"GET /v1/key/list/* HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

/// The same with requests served on the event loop (generate with a cached key): the
/// non-reader gets its turn among the loop's connections and then waits, parked.
#[test]
fn a_client_pipelining_cached_key_requests_without_reading_does_not_hold_the_loop() {
    non_reading_client(
        b"POST /v1/key/generate/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
    );
}

fn non_reading_client(flood_request: &'static [u8]) {
    const DEADLINE: Duration = Duration::from_secs(6);
    const ANSWERED: &str = "kes_http_request_success{code=\"200\"}";
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let config = config_with(
        &pki,
        &admin,
        &app,
        "/v1/key/generate/*, /v1/key/list/*",
        "api:\n  /v1/key/generate/:\n    timeout: 6s\n  /v1/key/list/:\n    timeout: 6s\n",
    );
    let kes = Kes::start(&pki, &config, &["--loops", "1", "--workers", "1"]);
    let mut scraper = kes.client(&admin);
    assert_eq!(scraper.post("/v1/key/create/k", b"").status, 200);
    // 200 more keys, so that a listing costs the server some work and answers 5 KB.
    let keys = pki.path("keys");
    for i in 0..200 {
        std::fs::copy(keys.join("k"), keys.join(format!("filler-{i:03}"))).unwrap();
    }
    let mut good = kes.client(&app);
    assert_eq!(good.post("/v1/key/generate/k", b"{}").status, 200);
    let scrape = |c: &mut common::Client| {
        let r = c.get("/v1/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    };
    let open = |c: &mut common::Client| metric(&scrape(c), "kes_http_connections_open");
    // The scraper and the good client (once the start-up probe is gone).
    let deadline = Instant::now() + Duration::from_secs(6);
    while open(&mut scraper) != 2.0 {
        assert!(Instant::now() < deadline, "{} open", open(&mut scraper));
        std::thread::sleep(Duration::from_millis(50));
    }
    let memory_before = metric(&scrape(&mut scraper), "kes_system_mem_heap_used");

    // Requests are written as TLS records straight to the socket: a TLS stream reads
    // while it cannot write, and this client reads nothing.
    let mut flood = kes.client(&app);
    flood.connect().unwrap();
    flood.shrink_send_buffer();
    let mut flood = flood.into_stream();
    flood
        .sock
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let batch = flood_request.repeat(50);
            let started = Instant::now();
            let mut sent = 0usize;
            // Until told to stop or cut off; a write may wait (once the server has stopped
            // reading), and is retried until then.
            let outcome = 'write: loop {
                flood.conn.writer().write_all(&batch).unwrap();
                while flood.conn.wants_write() {
                    match flood.conn.write_tls(&mut flood.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if stop.load(Ordering::Relaxed) {
                                break 'write Ok(());
                            }
                        }
                        Err(e) => break 'write Err(e),
                    }
                }
                sent += batch.len();
                if stop.load(Ordering::Relaxed) {
                    break Ok(());
                }
            };
            (flood, sent, outcome, started.elapsed())
        }
    });

    // Meanwhile, on the same loop and the same worker, a good client: 200 requests over
    // two seconds or more. (Should one of them wait for a thread that the non-reader
    // holds, the flood stops after 5 s so that the request, and the test, can end.)
    let good_done = Arc::new(AtomicBool::new(false));
    let good_client = std::thread::spawn({
        let good_done = good_done.clone();
        move || {
            let mut latencies = Vec::with_capacity(200);
            for i in 0..200 {
                let list = i % 4 == 3;
                let at = Instant::now();
                let r = if list {
                    good.get("/v1/key/list/*")
                } else {
                    good.post("/v1/key/generate/k", b"{}")
                };
                latencies.push((at.elapsed(), list));
                assert_eq!(r.status, 200, "request {i}: {}", r.text());
                std::thread::sleep(Duration::from_millis(10));
            }
            good_done.store(true, Ordering::Relaxed);
            (good, latencies)
        }
    });
    let good_started = Instant::now();
    while !good_done.load(Ordering::Relaxed) && good_started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !good_done.load(Ordering::Relaxed) {
        stop.store(true, Ordering::Relaxed);
    }
    let (mut good, mut latencies) = good_client.join().unwrap();
    latencies.sort();
    let p50 = percentile(&latencies.iter().map(|l| l.0).collect::<Vec<_>>(), 0.5);
    let (slowest, slowest_is_list) = latencies[latencies.len() - 1];
    println!(
        "good client beside the non-reading one: p50 {p50:?}, slowest {slowest:?} ({})",
        if slowest_is_list {
            "list, on the pool"
        } else {
            "generate, on the loop"
        }
    );
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");

    // The server stops answering the client that reads nothing, though it keeps sending:
    // between two scrapes, only the first scrape is answered.
    let since = Instant::now();
    let stalled_at = loop {
        let before = metric(&scrape(&mut scraper), ANSWERED);
        std::thread::sleep(Duration::from_millis(300));
        if metric(&scrape(&mut scraper), ANSWERED) == before + 1.0 {
            break Instant::now();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the server keeps answering a client that reads nothing"
        );
    };
    stop.store(true, Ordering::Relaxed);
    let (mut flood, sent, outcome, took) = writer.join().unwrap();
    if let Err(e) = outcome {
        panic!(
            "the server cut the non-reading connection within {took:?} of its first request \
             ({sent} bytes of requests written), before any deadline could pass: {e}"
        );
    }
    println!("the non-reading client wrote {sent} bytes of requests in {took:?}");
    let after = scrape(&mut scraper);
    assert_eq!(
        metric(&after, "kes_http_connections_open"),
        3.0,
        "the non-reading connection is parked, not closed yet"
    );
    let grown = metric(&after, "kes_system_mem_heap_used") - memory_before;
    println!("resident memory grew by {:.1} MB", grown / 1e6);

    // Closed once the deadline of its last answered request has passed. The kernel may
    // still take more of the answers after the stall was seen (the server's send buffer
    // grows with the connection's use), and the server then answers more of the queued
    // requests, each with a deadline of its own: the bound counts from the last one.
    let first_stall = stalled_at;
    let mut stalled_at = stalled_at;
    let mut answered = metric(&scrape(&mut scraper), ANSWERED);
    loop {
        assert!(
            first_stall.elapsed() < Duration::from_secs(60),
            "the server goes on answering a client that reads nothing"
        );
        let now = scrape(&mut scraper);
        if metric(&now, "kes_http_connections_open") == 2.0 {
            break;
        }
        let answered_now = metric(&now, ANSWERED);
        // Each scrape is one answer of its own.
        if answered_now > answered + 1.0 {
            stalled_at = Instant::now();
        }
        answered = answered_now;
        assert!(
            stalled_at.elapsed() < DEADLINE + Duration::from_secs(5),
            "the non-reading connection is still open {:?} after its last answer",
            stalled_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("closed {:?} after it stalled", stalled_at.elapsed());
    // What reached the client's buffer (and what the kernel still had to send) can be
    // read; then the connection ends.
    flood
        .sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut sink = vec![0u8; 64 * 1024];
    let reading = Instant::now();
    let ended = loop {
        assert!(
            reading.elapsed() < Duration::from_secs(10),
            "the closed connection still delivers data after 10 s"
        );
        match std::io::Read::read(&mut flood.sock, &mut sink) {
            Ok(0) => break "EOF".to_string(),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the connection is still open")
            }
            Err(e) => break e.to_string(),
        }
    };
    println!("the non-reading client then read until: {ended}");
    assert_eq!(good.post("/v1/key/generate/k", b"{}").status, 200);
    assert_eq!(good.get("/v1/key/list/*").status, 200);
    // Checked last, so that the checks above run whatever the outcome.
    let mut problems = Vec::new();
    if slowest >= Duration::from_secs(2) {
        problems.push(format!(
            "a good {} waited {slowest:?}: the connection that reads nothing holds the {}",
            if slowest_is_list { "list" } else { "generate" },
            if slowest_is_list {
                "only pool worker"
            } else {
                "event loop"
            }
        ));
    }
    if grown >= 64e6 {
        problems.push(format!(
            "resident memory grew by {:.1} MB for one connection",
            grown / 1e6
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// A connection limit refuses excess connections quickly and keeps serving, whether
/// the handshake stage accepts (the default) or a thread of its own does.
#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    for stage in ["2", "0"] {
        let pki = Pki::new();
        let (admin, app) = (pki.client("admin"), pki.client("app"));
        let kes = Kes::start(
            &pki,
            &config(&pki, &admin, &app, "/v1/status"),
            &["--max-connections", "20", "--handshake-threads", stage],
        );
        let mut good = kes.client(&admin);
        good.connect().unwrap();
        let held: Vec<_> = (0..40)
            .map(|_| std::net::TcpStream::connect(kes.addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            good.get("/v1/status").status,
            200,
            "an established client keeps working (handshake threads {stage})"
        );
        let scrape = good.get("/v1/metrics").text();
        let refused = metric(&scrape, "kes_http_connections_refused");
        assert!(
            refused >= 19.0,
            "refused {refused} (handshake threads {stage})"
        );
        // The ones held open count up to the limit, no more.
        let open = metric(&scrape, "kes_http_connections_open");
        assert!(open <= 20.0, "{open} open (handshake threads {stage})");
        drop(held);
    }
}

/// SIGHUP with a new policy and a new TLS certificate in the middle of 5,000 requests:
/// none fails, and afterwards the new policy is in force.
#[test]
fn sighup_under_load_fails_no_request() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let path = config(&pki, &admin, &app, "/v1/key/generate/*, /v1/status");
    let kes = Kes::start(&pki, &path, &[]);
    assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);

    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (done, failures) = (done.clone(), failures.clone());
            let mut c = kes.client(&app);
            std::thread::spawn(move || {
                for n in 0..1250 {
                    // Some requests on fresh connections, so new handshakes meet the reload.
                    if n % 50 == 0 {
                        c = c.reconnected();
                    }
                    match c.try_request("POST", "/v1/key/generate/k", b"{}") {
                        Ok(r) if r.status == 200 => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("worker {i}: {:?}", other.map(|r| r.status))),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 1500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // New certificate (same CA) and a policy that also allows /v1/api.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("/v1/status]", "/v1/status, /v1/api]");
    let _ = pki.server();
    std::fs::write(&path, text).unwrap();
    kes.signal(libc::SIGHUP);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(done.load(Ordering::Relaxed), 5000);
    let mut fresh = kes.client(&app);
    assert_eq!(
        fresh.get("/v1/api").status,
        200,
        "the new policy is in force"
    );
    assert!(kes.stderr().contains("reloaded"), "{}", kes.stderr());
    // New connections are served the new certificate.
    let served = fresh.stream().conn.peer_certificates().unwrap()[0].clone();
    let written =
        rustls_pemfile::certs(&mut std::fs::read(pki.path("server.cert")).unwrap().as_slice())
            .next()
            .unwrap()
            .unwrap();
    assert_eq!(
        served, written,
        "new connections get the reloaded certificate"
    );
}

/// SIGTERM in the middle of a run: requests in flight complete, new connections are
/// refused, the process exits 0.
#[test]
fn sigterm_under_load_completes_requests_in_flight() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let mut kes = Kes::start(&pki, &config(&pki, &admin, &app, "/v1/key/generate/*"), &[]);
    assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);
    let ok = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (ok, broken) = (ok.clone(), broken.clone());
            let mut c = kes.client(&app);
            std::thread::spawn(move || {
                loop {
                    match c.try_request("POST", "/v1/key/generate/k", b"{}") {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") == Some("close") {
                                return;
                            }
                        }
                        // A response that started must never be cut (read_response says
                        // InvalidData then, for a cut head or body alike); a refused or
                        // closed connection after shutdown is expected.
                        Ok(r) => panic!("unexpected status {}", r.status),
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            broken.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    while ok.load(Ordering::Relaxed) < 500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    kes.signal(libc::SIGTERM);
    for w in workers {
        w.join().unwrap();
    }
    let status = kes
        .wait_exit(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert!(status.success(), "{status}");
    assert_eq!(broken.load(Ordering::Relaxed), 0);
    assert!(
        std::net::TcpStream::connect(kes.addr).is_err(),
        "new connections are refused"
    );
}

/// The whole key flow with debug logging and console audit on: no log line, error body
/// or audit event contains a key, a data key, a plaintext or a ciphertext.
#[test]
fn no_secret_reaches_a_log_or_an_error() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let path = pki.config(
        "config.yml",
        &format!(
            "admin:\n  identity: {}\nlog:\n  error: DEBUG\n  audit: on\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &path, &[]);
    let mut c = kes.client(&admin);
    let raw_master = b"kes-test-master-key-0123456789ab";
    let master = B64.encode(raw_master);
    let marker = B64.encode(b"a plaintext nobody may see");
    // The key as imported, as its raw bytes (ASCII here) and as hex in either case.
    let mut secrets = vec![
        master.clone(),
        marker.clone(),
        String::from_utf8(raw_master.to_vec()).unwrap(),
        kes::identity::hex(raw_master),
        kes::identity::hex(raw_master).to_ascii_uppercase(),
    ];
    assert_eq!(
        c.post(
            "/v1/key/import/imported",
            format!(r#"{{"key":"{master}","cipher":"AES256"}}"#).as_bytes()
        )
        .status,
        200
    );
    assert_eq!(c.post("/v1/key/create/created", b"").status, 200);
    for name in ["imported", "created"] {
        let dek = c.post(&format!("/v1/key/generate/{name}"), b"{}").json();
        let plaintext = dek["plaintext"].as_str().unwrap().to_string();
        let dek_hex = kes::identity::hex(&B64.decode(&plaintext).unwrap());
        secrets.push(plaintext);
        secrets.push(dek_hex.to_ascii_uppercase());
        secrets.push(dek_hex);
        secrets.push(dek["ciphertext"].as_str().unwrap().to_string());
        let ct = c
            .post(
                &format!("/v1/key/encrypt/{name}"),
                format!(r#"{{"plaintext":"{marker}"}}"#).as_bytes(),
            )
            .json();
        let ct = ct["ciphertext"].as_str().unwrap().to_string();
        secrets.push(ct.clone());
        // Failures too: wrong context, tampered ciphertext, bad body.
        for body in [
            format!(r#"{{"ciphertext":"{ct}","context":"eA=="}}"#),
            format!(r#"{{"ciphertext":"A{ct}"}}"#),
            format!(r#"{{"ciphertext":"{ct}""#),
        ] {
            let r = c.post(&format!("/v1/key/decrypt/{name}"), body.as_bytes());
            assert_eq!(r.status, 400);
            for secret in &secrets {
                assert!(
                    !r.text().contains(secret.as_str()),
                    "error body leaks: {}",
                    r.text()
                );
            }
        }
    }
    let stored = std::fs::read_to_string(pki.path("keys").join("created")).unwrap();
    secrets.push(stored);
    assert_eq!(kes.client(&app).get("/v1/status").status, 403);
    // Wait for the audit line of that last request: every earlier line is out by then.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kes
        .stdout
        .lock()
        .unwrap()
        .lines()
        .any(|l| l.contains(&app.identity) && l.contains("/v1/status"))
    {
        assert!(
            Instant::now() < deadline,
            "no audit line for the last request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, err) = (kes.stdout.lock().unwrap().clone(), kes.stderr());
    assert!(
        out.lines().count() >= 10,
        "audit lines expected on stdout: {out}"
    );
    assert!(
        err.contains("DEBUG") || err.contains("denied"),
        "debug log expected: {err}"
    );
    for secret in &secrets {
        assert!(!out.contains(secret.as_str()), "stdout leaks a secret");
        assert!(!err.contains(secret.as_str()), "stderr leaks a secret");
    }
}

/// A client whose last request and TCP close (FIN, no TLS close_notify) arrive together
/// gets its answer and the connection is closed at once, not left half-closed until the
/// idle timeout. (Edge-triggered readiness reports the close once, with the data.)
#[test]
fn a_close_that_arrives_with_the_last_request_closes_the_connection() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let config = config_with(&pki, &admin, &app, "/v1/key/generate/*", "");
    let kes = Kes::start(&pki, &config, &["--loops", "1"]);
    let mut scraper = kes.client(&admin);
    assert_eq!(scraper.post("/v1/key/create/k", b"").status, 200);
    let open = |c: &mut common::Client| {
        let r = c.get("/v1/metrics");
        metric(&r.text(), "kes_http_connections_open")
    };
    let baseline = open(&mut scraper);
    for _ in 0..3 {
        let mut client = kes.client(&app);
        client.connect().unwrap();
        // Request and FIN leave in one segment.
        client.cork();
        let mut stream = client.into_stream();
        common::send_records(
            &mut stream,
            b"POST /v1/key/generate/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        );
        stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let r = common::read_response(&mut stream).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while open(&mut scraper) > baseline {
        assert!(
            Instant::now() < deadline,
            "half-closed connections stay open: {} open, {baseline} before",
            open(&mut scraper)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chunked body of one-byte chunks, trickled a record at a time, costs the server work
/// in proportion to its size: each read decodes only the chunks that arrived (it used to
/// decode the whole body again after every read, seconds of CPU for one client).
#[test]
fn a_trickled_body_of_tiny_chunks_is_decoded_once() {
    let pki = Pki::new();
    let (admin, app) = (pki.client("admin"), pki.client("app"));
    let config = config_with(&pki, &admin, &app, "/v1/key/decrypt/*", "");
    let kes = Kes::start(&pki, &config, &["--loops", "1"]);
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", kes.child.id())).unwrap();
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Duration::from_secs_f64((fields[0] + fields[1]) as f64 / ticks)
    };
    let mut client = kes.client(&app);
    client.connect().unwrap();
    let mut stream = client.into_stream();
    stream
        .conn
        .writer()
        .write_all(b"POST /v1/key/decrypt/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let before = cpu();
    let mut send = |bytes: &[u8]| common::send_records(&mut stream, bytes);
    // 150,000 one-byte chunks (`1\r\n \r\n`, 900 KB) at once, then 1,000 more one TLS
    // record at a time, each read by the server on its own.
    send(&b"1\r\n \r\n".repeat(150_000));
    for _ in 0..1000 {
        send(b"1\r\n \r\n");
        std::thread::sleep(Duration::from_millis(1));
    }
    send(b"0\r\n\r\n");
    let r = common::read_response(&mut stream).unwrap();
    // A body of spaces is not a JSON object: the handler's refusal proves the whole body
    // was decoded and reached it.
    assert_eq!(r.status, 400, "{}", r.text());
    let spent = cpu() - before;
    // Decoding once takes ~0.1 s of CPU in a debug build; decoding the buffered body
    // again after each of the 1,000 reads took ~1.2 s.
    println!("server CPU for 151,000 one-byte chunks: {spent:?}");
    assert!(
        spent < Duration::from_millis(600),
        "decoding a 151,000-chunk body took {spent:?} of server CPU"
    );
}
