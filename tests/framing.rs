//! Where a request ends, and how a connection ends: malformed framing is refused and
//! the connection closed (no request hides inside another), and the last answer of a
//! connection reaches the client even when the client is still sending.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Credential, Kes, Pki};

fn server() -> (Pki, Credential, Kes) {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let kes = Kes::start(&pki, &config, &["--loops", "1"]);
    (pki, admin, kes)
}

/// Sends `raw` on a fresh connection and returns the one answer and whether the server
/// then closed the connection (reading more finds its end, not a second answer).
fn exchange(kes: &Kes, who: &Credential, raw: &[u8]) -> (u16, String, bool) {
    let mut c = kes.client(who);
    c.write(raw).unwrap();
    let first = c.read_response().unwrap();
    let closed = match c.read_response() {
        Err(_) => true,
        Ok(second) => panic!(
            "a second answer ({} {}) to {:?}",
            second.status,
            second.text(),
            String::from_utf8_lossy(raw)
        ),
    };
    (first.status, first.message(), closed)
}

const CREATE_AND_DELETE: &str = "PUT /v1/key/create/smuggled HTTP/1.1\r\nHost: x\r\n\r\nDELETE /v1/key/delete/k HTTP/1.1\r\nHost: x\r\n\r\n";

/// The probe's request: `Content-Length: +2` was read as 2, and the create and delete
/// behind it were served as requests of their own.
#[test]
fn a_signed_content_length_hides_no_request() {
    let (_pki, admin, kes) = server();
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let raw = format!(
        "PUT /v1/key/generate/k HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{{}}{CREATE_AND_DELETE}"
    );
    let (status, message, closed) = exchange(&kes, &admin, raw.as_bytes());
    assert_eq!((status, message.as_str()), (400, "invalid Content-Length"));
    assert!(closed);
    let mut c = kes.client(&admin);
    assert_eq!(c.get("/v1/key/describe/k").status, 200, "k was deleted");
    assert_eq!(c.get("/v1/key/describe/smuggled").status, 404);
}

/// Every framing form that two parsers could read differently gets one refusal, and
/// the connection closes, so nothing after it is served.
#[test]
fn malformed_framing_is_refused_and_closes_the_connection() {
    let (_pki, admin, kes) = server();
    let head = "PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: x\r\n";
    let cases: &[(&str, &str, u16)] = &[
        ("Content-Length: +2\r\n", "{}", 400),
        ("Content-Length: -2\r\n", "{}", 400),
        ("Content-Length: 0x2\r\n", "{}", 400),
        ("Content-Length: 1 1\r\n", "{}", 400),
        ("Content-Length: \r\n", "{}", 400),
        ("Content-Length: 2, 2\r\n", "{}", 400),
        ("Content-Length: 2, 3\r\n", "{}", 400),
        ("Content-Length: 99999999999999999999\r\n", "{}", 400),
        ("Content-Length: 2\r\nContent-Length: 3\r\n", "{}", 400),
        (
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: gzip\r\n", "0\r\n\r\n", 501),
        ("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n", 501),
        (
            "Transfer-Encoding: chunked\r\n",
            "+2\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            "0x2\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            " 2\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: chunked\r\n", "\r\n{}\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "2\n{}\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", "2\r\n{}\n0\r\n\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\n",
            "00000000000000002\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            "ffffffffffffffffff\r\n",
            400,
        ),
    ];
    for (headers, body, expected) in cases {
        let raw = format!("{head}{headers}\r\n{body}{CREATE_AND_DELETE}");
        let (status, message, closed) = exchange(&kes, &admin, raw.as_bytes());
        assert_eq!(status, *expected, "{headers:?} {body:?}: {message}");
        assert!(closed, "{headers:?} {body:?}");
    }
    // A chunk line longer than 4096 bytes (an endless extension) is refused once that
    // many bytes arrived, not buffered up to the body limit.
    let mut raw = format!("{head}Transfer-Encoding: chunked\r\n\r\n2;x=").into_bytes();
    raw.extend(std::iter::repeat_n(b'e', 100_000));
    let (status, message, closed) = exchange(&kes, &admin, &raw);
    assert_eq!(
        (status, message.as_str()),
        (400, "malformed chunked request body")
    );
    assert!(closed);
    let mut c = kes.client(&admin);
    assert_eq!(c.get("/v1/key/describe/smuggled").status, 404);
}

/// The forms the RFC and the original accept still work: identical duplicate lengths,
/// `chunked` in any case, extensions and trailers within the limit.
#[test]
fn well_formed_framing_is_served() {
    let (_pki, admin, kes) = server();
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    let body = r#"{"plaintext":"AAAA"}"#;
    let n = body.len();
    let forms = [
        format!("Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"),
        format!("Content-Length: 0{n}\r\n\r\n{body}"),
        format!(
            "Transfer-Encoding: Chunked\r\n\r\n{n:X};name=value\r\n{body}\r\n0\r\nX-T: 1\r\n\r\n"
        ),
    ];
    for form in forms {
        let raw = format!("PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: x\r\n{form}");
        let r = c.send_raw(raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{form:?}: {}", r.text());
    }
}

/// `body` sent chunked to generate, in chunks of up to 4,000 bytes, each with a
/// 100-byte extension.
fn chunked_generate(body: &[u8]) -> Vec<u8> {
    let mut raw =
        b"POST /v1/key/generate/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let ext = format!(";e={}", "x".repeat(97));
    for chunk in body.chunks(4_000) {
        raw.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    raw
}

/// The route's limit (1,000,000 bytes for generate) is the decoded body's, as in the
/// original: exactly that many body bytes, chunked with 25,000 bytes of extensions and a
/// trailer, are served; one byte more is 413. (Extensions counted toward the limit
/// before, so a valid body near the limit was refused or not depending on its framing.)
#[test]
fn a_chunked_body_at_the_limit_is_served_whatever_its_extensions() {
    let (_pki, admin, kes) = server();
    let mut c = kes.client(&admin);
    assert_eq!(c.post("/v1/key/create/k", b"").status, 200);
    // {"context":"AAAA…"} and two spaces: valid JSON of exactly 1,000,000 bytes.
    let mut body = b"{\"context\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'A', 999_984));
    body.extend_from_slice(b"\"}  ");
    assert_eq!(body.len(), 1_000_000);
    let r = c.send_raw(&chunked_generate(&body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["ciphertext"].is_string());

    body.push(b' ');
    let (status, message, closed) = exchange(&kes, &admin, &chunked_generate(&body));
    assert_eq!((status, message.as_str()), (413, "request body too large"));
    assert!(closed);
}

/// Extensions and trailers have a bound of their own (64 KiB together), whatever the
/// body's size: a small body behind 70,000 bytes of extensions is refused with its own
/// message, and the connection closed.
#[test]
fn chunk_extensions_have_a_bound_of_their_own() {
    let (_pki, admin, kes) = server();
    let mut raw =
        b"PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let ext = format!(";{}", "e".repeat(3_999));
    for _ in 0..(70_000 / 4_000) + 1 {
        raw.extend_from_slice(format!("1{ext}\r\n \r\n").as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (status, message, closed) = exchange(&kes, &admin, &raw);
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "chunk extensions and trailers of the request body exceed 65536 bytes"
    );
    assert!(closed);
}

/// After answering a `Connection: close` request the server closed its socket at once,
/// while the client was still sending: the kernel answered those bytes with a reset,
/// which destroyed the answer before the client read it. It now lingers, discarding
/// what arrives, until the client closes.
#[test]
fn the_answer_to_connection_close_survives_bytes_that_follow_it() {
    let (_pki, admin, kes) = server();
    for _ in 0..3 {
        let mut c = kes.client(&admin);
        c.write(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The client goes on sending (a pipelined request) after the server answered.
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..4 {
            c.write(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = c.read_response().expect("the answer, not a reset");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.read_response().is_err(), "nothing after the last answer");
    }
}

/// A request over the body limit is refused at its head. A client that goes on sending
/// its body for longer than the server used to discard it (2 s) got a reset instead of
/// the refusal; the server now discards while the body keeps coming.
#[test]
fn a_refusal_survives_a_body_that_keeps_coming_for_seconds() {
    let (_pki, admin, kes) = server();
    let mut c: Client = kes.client(&admin);
    c.write(b"PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000001\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let piece = vec![b' '; 16 * 1024];
    while started.elapsed() < Duration::from_secs(3) {
        let stream = c.stream();
        stream
            .write_all(&piece)
            .expect("the server reads and discards");
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.read_response().expect("the refusal, not a reset");
    assert_eq!(r.status, 413);
    assert_eq!(r.message(), "request body too large");
}
