//! The long stress scenario of docs/stress.md: every request gets exactly one answer,
//! within its route's deadline, however its bytes arrive.
//!
//! Ignored in the normal suite (it runs for minutes). Run it with
//! `KES_STRESS_SECS=1800 cargo test --release --test stress -- --ignored --nocapture`.
//!
//! Three servers run side by side: one with `--loops 1` and one with the default loops,
//! in front of the CipherTrust stand-in with latency, and one whose keys are resident in
//! a stand-in of its own (its generates are CipherTrust calls its event loops make). Each client thread owns a
//! connection and sends batches of 1 to 8 pipelined requests: data key generation with
//! bodies from 1 byte to 1.1 MB (valid, invalid JSON, over the limit), chunked or with
//! Content-Length, split at random points into TLS records and again into TCP writes,
//! with and without pauses; describes (no body); creates and deletes (always on the
//! pool). The key cache expires within seconds, so requests for the same keys are
//! answered on the event loop (cached) or handed to the pool and back (loaded).

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Credential, KES, Kes, Pki, free_addr};
use ctm_sim::{CtmSim, REFRESH_TOKEN};

const KEYS: usize = 48;
/// The generate and describe routes' deadline, and what a client may add to it.
const ROUTE_DEADLINE: Duration = Duration::from_secs(15);
const SLACK: Duration = Duration::from_secs(3);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the scenario needs cheap, seedable randomness, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Log-uniform in 1..=max.
    fn size(&mut self, max: usize) -> usize {
        let x = (self.below(1_000_000) as f64) / 1_000_000.0;
        ((max as f64).powf(x) as usize).clamp(1, max)
    }
}

/// One request of a batch and what it may be answered with.
struct Planned {
    raw: Vec<u8>,
    what: String,
    expect: &'static [u16],
    /// The server closes the connection after answering it.
    closes: bool,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    pipelined: AtomicU64,
    chunked: AtomicU64,
    paused: AtomicU64,
    refused: AtomicU64,
    by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, msg: String) {
        eprintln!("FAILURE: {msg}");
        self.failures.lock().unwrap().push(msg);
    }
}

fn body_for(rng: &mut Rng, size: usize, valid: bool) -> Vec<u8> {
    if valid {
        // {"context":"AAAA…"}: valid base64 of about `size` bytes.
        let n = size.saturating_sub(15) / 4 * 4;
        let mut body = b"{\"context\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'A', n));
        body.extend_from_slice(b"\"}");
        body
    } else {
        // Deeply nested JSON, as the probe sent: refused by the handler with 400.
        let unit: &[u8] = if rng.chance(50) { b"{\"a\":" } else { b"[" };
        unit.repeat(size / unit.len() + 1)[..size].to_vec()
    }
}

/// Frames `body` with Content-Length, or chunked with random chunk sizes and extensions.
fn request(
    rng: &mut Rng,
    t: &Tally,
    method: &str,
    path: &str,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    if close {
        raw.extend_from_slice(b"Connection: close\r\n");
    }
    if !body.is_empty() && rng.chance(20) {
        t.chunked.fetch_add(1, Ordering::Relaxed);
        raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        let mut rest = body;
        while !rest.is_empty() {
            let n = rng.size(rest.len().min(256 * 1024));
            // Extensions do not count toward the body limit (the server limits the
            // decoded body), so a body near the limit is served whatever they add.
            let ext = match rng.below(20) {
                0 => ";x=y".to_string(),
                1 => format!(";x={}", "e".repeat(rng.size(200))),
                _ => String::new(),
            };
            raw.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
            raw.extend_from_slice(&rest[..n]);
            raw.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        raw.extend_from_slice(b"0\r\n\r\n");
    } else {
        raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body);
    }
    raw
}

fn plan(rng: &mut Rng, t: &Tally, id: usize, last: bool, seq: u64) -> Planned {
    let key = format!("k{}", rng.below(KEYS as u64));
    let close = last && rng.chance(3);
    let (raw, what, expect, refused): (Vec<u8>, String, &'static [u16], bool) = match rng.below(100)
    {
        0..=4 => {
            let path = format!("/v1/key/describe/{key}");
            let raw = request(rng, t, "GET", &path, b"", close);
            (raw, path, &[200], false)
        }
        5..=7 => {
            // A create and, pipelined behind it, the delete of the same new key: both
            // always on the pool (the delete is planned as its own request below).
            let path = format!("/v1/key/create/s{id}-{seq}");
            let raw = request(rng, t, "POST", &path, b"", close);
            (raw, path, &[200], false)
        }
        8..=10 if last => {
            // Over the route's limit: refused before the body is read, then closed.
            let size = 1_000_001 + rng.below(100_000) as usize;
            let body = body_for(rng, size, true);
            let path = format!("/v1/key/generate/{key}");
            let raw = request(rng, t, "POST", &path, &body, false);
            (
                raw,
                format!("{path} ({size} B, over the limit)"),
                &[413],
                true,
            )
        }
        _ => {
            let size = rng.size(1_000_000);
            let valid = rng.chance(70);
            let body = body_for(rng, size, valid);
            let path = format!("/v1/key/generate/{key}");
            let raw = request(rng, t, "POST", &path, &body, close);
            let expect: &[u16] = if valid { &[200] } else { &[400] };
            (raw, format!("{path} ({} B)", body.len()), expect, false)
        }
    };
    if refused {
        t.refused.fetch_add(1, Ordering::Relaxed);
    }
    Planned {
        raw,
        what,
        expect,
        closes: close || refused,
    }
}

/// A client connection that sends exact bytes and reads answers with deadlines.
struct Conn {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    plain: Vec<u8>,
    eof: bool,
    /// Batches sent on this connection before the current one.
    batches: u64,
    opened: Instant,
    /// When the last answer arrived.
    last: Instant,
}

impl Conn {
    fn open(kes: &Kes, who: &Credential) -> std::io::Result<Conn> {
        let mut client = kes.client(who);
        client.connect()?;
        let mut stream = client.into_stream();
        // Whole requests (up to 1.1 MB) are encrypted before they are sent.
        stream.conn.set_buffer_limit(None);
        Ok(Conn {
            sock: stream.sock,
            tls: stream.conn,
            plain: Vec::new(),
            eof: false,
            batches: 0,
            opened: Instant::now(),
            last: Instant::now(),
        })
    }

    /// Sends `raw` split into TLS records at random points, and the records split into
    /// TCP writes at random points, with pauses between pieces if `pause`.
    fn send(&mut self, rng: &mut Rng, raw: &[u8], pause: bool) -> std::io::Result<()> {
        let mut rest = raw;
        while !rest.is_empty() {
            let n = if rng.chance(30) {
                rest.len()
            } else {
                rng.size(rest.len())
            };
            self.tls.writer().write_all(&rest[..n])?;
            rest = &rest[n..];
            let mut records = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut records)?;
            }
            let mut wire = records.as_slice();
            while !wire.is_empty() {
                let m = if rng.chance(50) {
                    wire.len()
                } else {
                    rng.size(wire.len())
                };
                self.sock.write_all(&wire[..m])?;
                wire = &wire[m..];
                if pause && rng.chance(30) {
                    thread::sleep(Duration::from_millis(rng.below(40)));
                }
            }
        }
        Ok(())
    }

    /// Reads one response by `deadline`: its status, and whether it says it closes.
    fn answer(&mut self, deadline: Instant) -> Result<(u16, bool), String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.plain) {
                Ok(httparse::Status::Complete(head)) => {
                    let header = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let closes = header("connection").as_deref() == Some("close");
                    let status = resp.code.unwrap_or(0);
                    if self.plain.len() >= head + len {
                        self.plain.drain(..head + len);
                        self.last = Instant::now();
                        return Ok((status, closes));
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("unparsable answer: {e}")),
            }
            if self.eof {
                return Err(format!(
                    "connection closed without (complete) answer, {} bytes of it",
                    self.plain.len()
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("no answer within the route's deadline".into());
            }
            self.fill(deadline - now)?;
        }
    }

    /// Reads what arrives within `wait` into `plain`.
    fn fill(&mut self, wait: Duration) -> Result<(), String> {
        let _ = self.sock.set_read_timeout(Some(
            wait.clamp(Duration::from_millis(1), Duration::from_secs(1)),
        ));
        match self.tls.read_tls(&mut self.sock) {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
        self.tls
            .process_new_packets()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => {
                    self.eof = true;
                    return Ok(());
                }
            }
        }
    }
}

/// One client thread: batches on one connection (a new one when the server closes it,
/// and now and then anyway) until `stop`.
fn client(
    kes: &Kes,
    who: &Credential,
    label: &str,
    id: usize,
    seed: u64,
    t: &Tally,
    stop: &AtomicBool,
) {
    let mut rng = Rng(seed | 1);
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // The batch is made before a connection is opened for it: a new connection
        // has 5 s for its first request, and making a 1 MB body is slow in a debug build.
        let n = if rng.chance(20) {
            2 + rng.below(7) as usize
        } else {
            1
        };
        let mut batch = Vec::new();
        for i in 0..n {
            seq += 1;
            let p = plan(&mut rng, t, id, i + 1 == n, seq);
            let create = p.what.starts_with("/v1/key/create/") && !p.closes;
            let name = p.what.trim_start_matches("/v1/key/create/").to_string();
            batch.push(p);
            if create {
                let path = format!("/v1/key/delete/{name}");
                let raw = request(&mut rng, t, "DELETE", &path, b"", false);
                batch.push(Planned {
                    raw,
                    what: path,
                    expect: &[200],
                    closes: false,
                });
            }
            if batch.last().unwrap().closes {
                break;
            }
        }
        let raw: Vec<u8> = batch.iter().flat_map(|p| p.raw.iter().copied()).collect();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(kes, who) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    t.fail(format!("{label}: cannot connect: {e}"));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let big = raw.len() > 1_000_000;
        let pause = !big && rng.chance(15);
        t.batches.fetch_add(1, Ordering::Relaxed);
        t.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        t.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        if batch.len() > 1 {
            t.pipelined.fetch_add(1, Ordering::Relaxed);
        }
        if pause {
            t.paused.fetch_add(1, Ordering::Relaxed);
        }
        let port = c.sock.local_addr().map_or(0, |a| a.port());
        let label = format!(
            "{label} port {port} batch {} age {} ms idle {} ms",
            c.batches,
            c.opened.elapsed().as_millis(),
            c.last.elapsed().as_millis()
        );
        let label = label.as_str();
        c.batches += 1;
        if !c.plain.is_empty() {
            t.fail(format!(
                "{label}: {} bytes arrived that answer nothing",
                c.plain.len()
            ));
        }
        if let Err(e) = c.send(&mut rng, &raw, pause) {
            t.fail(format!(
                "{label}: sending {} ({} B) failed: {e}",
                batch[0].what,
                raw.len()
            ));
            conn = None;
            continue;
        }
        let mut closed = false;
        for p in &batch {
            // The server reads a pipelined request's head once it has answered the one
            // before: each answer is due within the route's deadline of the last one.
            let deadline = Instant::now() + ROUTE_DEADLINE + SLACK;
            match c.answer(deadline) {
                Ok((status, closes)) => {
                    *t.by_status.lock().unwrap().entry(status).or_default() += 1;
                    if !p.expect.contains(&status) {
                        t.fail(format!(
                            "{label}: {} answered {status}, expected {:?}",
                            p.what, p.expect
                        ));
                    }
                    if closes != p.closes {
                        t.fail(format!(
                            "{label}: {} answered with close = {closes}",
                            p.what
                        ));
                    }
                    if closes {
                        closed = true;
                        break;
                    }
                }
                Err(e) => {
                    // Late or never? Wait past the server's idle timeout (90 s) to tell a
                    // slow server from a request nobody will read.
                    let late = if e.starts_with("no answer") {
                        let waited = Instant::now();
                        match c.answer(waited + Duration::from_secs(100)) {
                            Ok((status, _)) => format!(
                                "; answered {status} {} ms later",
                                waited.elapsed().as_millis()
                            ),
                            Err(e) => format!("; then {} s later: {e}", waited.elapsed().as_secs()),
                        }
                    } else {
                        String::new()
                    };
                    t.fail(format!(
                        "{label}: {} (batch of {}, {} B, pause {pause}): {e}{late}",
                        p.what,
                        batch.len(),
                        raw.len()
                    ));
                    closed = true;
                    break;
                }
            }
        }
        if closed || rng.chance(3) {
            conn = None;
        }
    }
}

#[test]
#[ignore = "runs for minutes: see docs/stress.md"]
fn every_request_gets_exactly_one_answer_within_its_deadline() {
    let secs = env_u64("KES_STRESS_SECS", 120);
    let per_server = env_u64("KES_STRESS_CLIENTS", 12) as usize;
    let latency = env_u64("KES_STRESS_CTM_LATENCY_MS", 10);
    let seed = env_u64("KES_STRESS_SEED", 0x5eed_0018);
    let level = std::env::var("KES_STRESS_LOG").unwrap_or("info".into());
    let sim = CtmSim::start();
    sim.set_latency(Duration::from_millis(latency));
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config_for = |name: &str, sim: &CtmSim, extra: &str| {
        pki.config(
            name,
            &format!(
                "admin:\n  identity: {}\nlog:\n  error: {level}\ncache:\n  expiry:\n    any: 3s\n    unused: 1s\nkeystore:\n  ciphertrust:\n    endpoint: {}\n    credentials:\n      token: {REFRESH_TOKEN}\n      domain: \"\"\n    tls:\n      ca: {}\n{extra}",
                admin.identity,
                sim.endpoint(),
                sim.ca_file().display()
            ),
        )
    };
    let config = config_for("config.yml", &sim, "");
    // A third server keeps its keys resident in a stand-in of its own: its generates are
    // CipherTrust calls its event loops make (issue 25).
    let resident_sim = CtmSim::start();
    resident_sim.set_latency(Duration::from_millis(latency));
    let resident_config = config_for("resident.yml", &resident_sim, "    master_keys: resident\n");
    let start = |loops: Option<&str>, config: &std::path::Path| {
        let addr = free_addr();
        // KES_STRESS_BIN: another build of kes (a release build, or a copy that later
        // builds do not replace while the scenario runs).
        let bin = std::env::var("KES_STRESS_BIN").unwrap_or(KES.to_string());
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("server")
            .arg("--config")
            .arg(config)
            .arg("--addr")
            .arg(addr.to_string());
        if let Some(n) = loops {
            cmd.args(["--loops", n]);
        }
        Kes::spawn(cmd, addr, pki.ca_path.clone()).unwrap_or_else(|e| panic!("kes: {e}"))
    };
    let servers = [
        ("loops=1", start(Some("1"), &config)),
        ("loops=default", start(None, &config)),
        ("resident", start(None, &resident_config)),
    ];
    for server in [&servers[0].1, &servers[2].1] {
        let mut setup = server.client(&admin);
        for k in 0..KEYS {
            let r = setup.post(&format!("/v1/key/create/k{k}"), b"");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    println!(
        "stress: {secs} s, {per_server} clients per server, CipherTrust latency {latency} ms, seed {seed:#x}"
    );
    let tallies: Vec<Arc<Tally>> = servers.iter().map(|_| Arc::new(Tally::default())).collect();
    let stop = AtomicBool::new(false);
    let began = Instant::now();
    thread::scope(|s| {
        for (si, (label, kes)) in servers.iter().enumerate() {
            for id in 0..per_server {
                let (t, stop, admin) = (&tallies[si], &stop, &admin);
                let seed = seed ^ ((si * 1000 + id) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                s.spawn(move || client(kes, admin, label, si * 1000 + id, seed, t, stop));
            }
        }
        let end = began + Duration::from_secs(secs);
        let mut last_report = Instant::now();
        while Instant::now() < end {
            thread::sleep(Duration::from_millis(200));
            if last_report.elapsed() >= Duration::from_secs(60) {
                last_report = Instant::now();
                for ((label, _), t) in servers.iter().zip(&tallies) {
                    println!(
                        "[{:>5} s] {label}: {} requests, {} failures",
                        began.elapsed().as_secs(),
                        t.requests.load(Ordering::Relaxed),
                        t.failures.lock().unwrap().len()
                    );
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut failures = 0;
    for ((label, kes), t) in servers.iter().zip(&tallies) {
        let f = t.failures.lock().unwrap();
        failures += f.len();
        println!(
            "{label}: {} requests in {} batches ({} pipelined, {} paused, {} chunked, {} refused over the limit), {} MB sent, statuses {:?}, {} failures",
            t.requests.load(Ordering::Relaxed),
            t.batches.load(Ordering::Relaxed),
            t.pipelined.load(Ordering::Relaxed),
            t.paused.load(Ordering::Relaxed),
            t.chunked.load(Ordering::Relaxed),
            t.refused.load(Ordering::Relaxed),
            t.bytes.load(Ordering::Relaxed) / 1_000_000,
            t.by_status.lock().unwrap(),
            f.len()
        );
        if !f.is_empty() {
            let log = kes.stderr();
            for failure in f.iter() {
                if let Some(port) = failure
                    .split(" port ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                {
                    let needle = format!(":{port}:");
                    for line in log.lines().filter(|l| l.contains(&needle)) {
                        println!("  server on port {port}: {line}");
                    }
                }
            }
            println!("{label} server log (tail):\n{}", tail(&log, 10));
        }
    }
    println!("CipherTrust stand-in calls: {}", sim.total_count());
    assert_eq!(failures, 0, "requests without exactly one timely answer");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
