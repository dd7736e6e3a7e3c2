//! The handshake stage: new connections' TLS handshakes run on threads of their own, at
//! a lower CPU priority than the event loops, and each finished connection is handed to
//! an event loop, with whatever the client sent along with its last handshake flight.
//! `--handshake-threads 0` puts the handshakes back on the event loops.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Credential, Kes, Pki};

/// The threads of process `pid`: (name, nice value).
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the ")" that ends the name: state is the 3rd field, nice the 19th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        found.push((name.trim().to_string(), fields[16].parse().unwrap()));
    }
    found.sort();
    found
}

fn start(pki: &Pki, admin: &Credential, args: &[&str]) -> Kes {
    let config = pki.fs_config(&admin.identity, "");
    Kes::start(pki, &config, args)
}

/// Full and resumed handshakes over both TLS versions, each followed by requests that
/// show who the caller is and that the connection is served.
fn serve_new_connections(kes: &Kes, admin: &Credential) {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut c = kes.client(admin).with_versions(&[version]);
        for round in 0..4 {
            let me = c.get("/v1/identity/self/describe");
            assert_eq!(me.status, 200, "{version:?} round {round}: {}", me.text());
            assert_eq!(me.json()["identity"], admin.identity.as_str());
            let dek = c.post("/v1/key/generate/k", b"{}");
            assert_eq!(dek.status, 200, "{version:?} round {round}: {}", dek.text());
            assert_eq!(dek.json()["plaintext"].as_str().unwrap().len(), 44);
            c = c.reconnected();
        }
    }
}

#[test]
fn handshakes_run_on_threads_of_lower_priority_and_connections_move_to_the_loops() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = start(&pki, &admin, &["--loops", "1", "--handshake-threads", "2"]);
    assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);

    let threads = threads(kes.child.id());
    let of = |name: &str| threads.iter().find(|(n, _)| n == name).map(|t| t.1);
    assert_eq!(of("kes-loop-0"), Some(0), "{threads:?}");
    assert!(of("kes-loop-1").is_none(), "{threads:?}");
    for stage in ["kes-handshake-0", "kes-handshake-1"] {
        let nice = of(stage).unwrap_or_else(|| panic!("no thread {stage}: {threads:?}"));
        assert_eq!(nice, 5, "{stage}: {threads:?}");
    }
    assert!(of("kes-handshake-2").is_none(), "{threads:?}");

    serve_new_connections(&kes, &admin);
}

#[test]
fn without_handshake_threads_the_event_loops_run_the_handshakes() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = start(&pki, &admin, &["--loops", "2", "--handshake-threads", "0"]);
    assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);
    let threads = threads(kes.child.id());
    assert!(
        threads.iter().all(|(n, _)| !n.starts_with("kes-handshake")),
        "{threads:?}"
    );
    assert!(
        threads.iter().any(|(n, _)| n == "kes-loop-1"),
        "{threads:?}"
    );
    serve_new_connections(&kes, &admin);
}

/// Thread counts out of range are refused with the flag's range (`--loops` shares the
/// parser and needs at least one loop).
#[test]
fn a_bad_number_of_handshake_threads_is_refused() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let cases = [
        (
            "--handshake-threads",
            "65",
            "--handshake-threads: a number from 0 to 64",
        ),
        (
            "--handshake-threads",
            "-1",
            "--handshake-threads: a number from 0 to 64",
        ),
        (
            "--handshake-threads",
            "many",
            "--handshake-threads: a number from 0 to 64",
        ),
        ("--loops", "0", "--loops: a number from 1 to 64"),
    ];
    for (flag, bad, message) in cases {
        let err = match Kes::try_start(&pki, &config, &[flag, bad]) {
            Ok(_) => panic!("{flag} {bad} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains(message), "{flag} {bad}: {err}");
    }
}

/// A TLS 1.3 client may send its first request in the same flight as its `Finished`
/// message, and even end its side of the stream right after: the handshake thread reads
/// both, and the event loop it hands the connection to must still answer the request.
#[test]
fn a_request_that_comes_with_the_last_handshake_flight_is_answered() {
    for threads in ["1", "0"] {
        let pki = Pki::new();
        let admin = pki.client("admin");
        let kes = start(
            &pki,
            &admin,
            &["--loops", "1", "--handshake-threads", threads],
        );
        assert_eq!(kes.client(&admin).post("/v1/key/create/k", b"").status, 200);
        for close_after in [false, true] {
            let client = kes.client(&admin).with_versions(&[&rustls::version::TLS13]);
            let mut tls = client.tls_connection();
            let mut sock = TcpStream::connect(kes.addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let connection = if close_after { "close" } else { "keep-alive" };
            let request = format!(
                "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nConnection: {connection}\r\n\
                 Content-Length: 2\r\n\r\n{{}}"
            );
            // Buffered by rustls until the handshake is done, then sent right behind the
            // client's Finished.
            tls.writer().write_all(request.as_bytes()).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut sock).unwrap();
            }
            while tls.wants_write() {
                tls.write_tls(&mut sock).unwrap();
            }
            if close_after {
                sock.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let mut stream = rustls::StreamOwned::new(tls, sock);
            let answer = common::read_response(&mut stream)
                .unwrap_or_else(|e| panic!("threads {threads}, close {close_after}: {e}"));
            assert_eq!(
                answer.status,
                200,
                "threads {threads}, close {close_after}: {}",
                answer.text()
            );
            assert_eq!(answer.json()["plaintext"].as_str().unwrap().len(), 44);
        }
    }
}
