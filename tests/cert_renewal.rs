//! Certificates that renew themselves: a server certificate and key replaced on disk,
//! as an ACME or CA agent does it, are served to new connections within seconds,
//! without a signal and without a failed request; a broken pair keeps the running one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Kes, Pki};
use rustls::pki_types::CertificateDer;

/// The certificate now in `server.cert`.
fn on_disk(pki: &Pki) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut std::fs::read(pki.path("server.cert")).unwrap().as_slice())
        .next()
        .unwrap()
        .unwrap()
}

/// The certificate a new connection is served.
fn served(c: Client) -> CertificateDer<'static> {
    let mut c = c.reconnected();
    c.connect().unwrap();
    c.stream().conn.peer_certificates().unwrap()[0].clone()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_certificate_swapped_under_load_is_served_to_new_connections_without_a_failure() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let kes = Kes::start(&pki, &config, &[]);
    let first = on_disk(&pki);
    assert_eq!(served(kes.client(&admin)), first);
    let mut before_swap = kes.client(&admin);
    assert_eq!(before_swap.post("/v1/key/create/k", b"").status, 200);

    // Load: keep-alive clients and clients that reconnect every few requests.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            let mut c = kes.client(&admin);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if i % 2 == 1 && n % 5 == 0 {
                        c = c.reconnected();
                    }
                    match c.try_request("POST", "/v1/key/generate/k", b"{}") {
                        Ok(r) if r.status == 200 => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("{:?}", other.map(|r| r.status))),
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("load running", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) > 200
    });

    // The agent writes a new key and certificate, one file after the other.
    let _ = pki.server();
    let second = on_disk(&pki);
    assert_ne!(first, second);
    wait_until(
        "the new certificate served",
        Duration::from_secs(20),
        || served(kes.client(&admin)) == second,
    );
    let served_before = done.load(Ordering::Relaxed);
    wait_until("more load after the swap", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) > served_before + 200
    });
    stop.store(true, Ordering::Relaxed);
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
    // A connection opened before the swap is untouched.
    assert_eq!(before_swap.post("/v1/key/generate/k", b"{}").status, 200);
    assert_eq!(
        before_swap.stream().conn.peer_certificates().unwrap()[0],
        first
    );

    // A half-written certificate keeps the running one, with an error in the log.
    let pem = std::fs::read_to_string(pki.path("server.cert")).unwrap();
    std::fs::write(pki.path("server.cert"), &pem[..pem.len() / 2]).unwrap();
    wait_until(
        "an error about the broken pair",
        Duration::from_secs(20),
        || kes.stderr().contains("keeping the running certificate"),
    );
    assert_eq!(served(kes.client(&admin)), second);
    assert_eq!(
        kes.client(&admin).post("/v1/key/generate/k", b"{}").status,
        200
    );

    // The next complete pair is taken.
    let _ = pki.server();
    let third = on_disk(&pki);
    wait_until(
        "the third certificate served",
        Duration::from_secs(20),
        || served(kes.client(&admin)) == third,
    );
    assert!(
        kes.stderr().contains("new connections get"),
        "{}",
        kes.stderr()
    );
}
