//! `kes-bench flood`: the good client's latency alone, then while silent and slow
//! connections hold the server and a few clients reconnect in a loop (the scenario of
//! tests/hardening.rs, measured instead of asserted).

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use crate::args::number;
use crate::conn::{Conn, Target};
use crate::load::Background;
use crate::scenario::{self, background_json, cpu_since, process_cpu, ratio};

pub(crate) const USAGE: &str = "\
Usage:
    kes-bench flood --server URL (credentials) [options]
        [--silent N] [--idle-tls N] [--slow N] [--churn N]

Flood: measures the good client (keep-alive, --good-connections, default 1) for
--duration alone, then opens the flood and, after --settle (default 1s), measures the
good client again for --duration under it:
    --silent N    TCP connections that send nothing (default 1000)
    --idle-tls N  connections that complete the mTLS handshake, then send nothing
                  (default 0)
    --slow N      connections that send a real TLS ClientHello one byte a second
                  (default 200)
    --churn N     clients that open a new mTLS connection per request, in a loop
                  (default 2)
A flood connection the server closes (e.g. at its header timeout) is opened again, so
the flood keeps its size. --server-pid PID adds the server's CPU time (Linux).
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Silent,
    IdleTls,
    Slow,
}

struct Held {
    kind: Kind,
    sock: TcpStream,
    /// Slow: bytes of the ClientHello sent so far, and when the next is due.
    sent: usize,
    due: Instant,
}

/// What the flood thread did, by kind: connections reopened after the server closed
/// them, and connects or handshakes that failed.
#[derive(Default)]
struct FloodStats {
    open_at_end: [u64; 3],
    reopened: [u64; 3],
    failed: [u64; 3],
    slow_bytes: u64,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Silent => 0,
        Kind::IdleTls => 1,
        Kind::Slow => 2,
    }
}

fn open(t: &Target, kind: Kind) -> std::io::Result<TcpStream> {
    let sock = match kind {
        Kind::IdleTls => Conn::open(t)?.into_socket(),
        _ => TcpStream::connect_timeout(&t.addr, Duration::from_secs(5))?,
    };
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// True while the server keeps the connection open; reads and drops what it sent
/// (session tickets, alerts).
fn still_open(sock: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Opens the flood, tells `ready` once every connection had its first try, and holds
/// it until `stop`: every 100 ms it reopens what the server closed and sends the slow
/// connections their next byte when due.
fn hold(
    t: &Target,
    counts: [(Kind, usize); 3],
    hello: &[u8],
    ready: mpsc::Sender<()>,
    stop: &AtomicBool,
) -> FloodStats {
    let mut stats = FloodStats::default();
    let mut held: Vec<Held> = Vec::new();
    let mut missing: Vec<Kind> = Vec::new();
    let start = Instant::now();
    for (kind, n) in counts {
        for i in 0..n {
            match open(t, kind) {
                Ok(sock) => held.push(Held {
                    kind,
                    sock,
                    sent: 0,
                    // Spread the slow writes over the second.
                    due: start + Duration::from_millis((i as u64 * 1000) / n.max(1) as u64),
                }),
                Err(_) => {
                    stats.failed[index(kind)] += 1;
                    missing.push(kind);
                }
            }
        }
    }
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            let h = &mut held[i];
            let mut open_now = still_open(&mut h.sock);
            if open_now && h.kind == Kind::Slow && now >= h.due {
                let byte = hello[h.sent % hello.len()];
                open_now = matches!(h.sock.write(&[byte]), Ok(1));
                h.sent += 1;
                h.due += Duration::from_secs(1);
                stats.slow_bytes += 1;
            }
            if open_now {
                i += 1;
            } else {
                let kind = h.kind;
                held.swap_remove(i);
                stats.reopened[index(kind)] += 1;
                missing.push(kind);
            }
        }
        for kind in std::mem::take(&mut missing) {
            match open(t, kind) {
                Ok(sock) => held.push(Held {
                    kind,
                    sock,
                    sent: 0,
                    due: Instant::now() + Duration::from_secs(1),
                }),
                Err(_) => {
                    stats.failed[index(kind)] += 1;
                    missing.push(kind);
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    for h in &held {
        stats.open_at_end[index(h.kind)] += 1;
    }
    stats
}

/// The first flight of a real TLS client, for the slow connections to trickle.
fn client_hello(t: &Target) -> Result<Vec<u8>, String> {
    let mut conn =
        ClientConnection::new(t.tls.clone(), t.server_name.clone()).map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).map_err(|e| e.to_string())?;
    Ok(hello)
}

/// Runs the scenario; the number of failed requests (good client and churn), or why
/// it could not run.
pub(crate) fn run(args: Vec<OsString>) -> Result<u64, String> {
    let (mut silent, mut idle_tls, mut slow, mut churn) = (1000usize, 0usize, 200usize, 2usize);
    let setup = scenario::setup(args, &mut |name, p| {
        match name {
            "silent" => silent = number(p, name)?,
            "idle-tls" => idle_tls = number(p, name)?,
            "slow" => slow = number(p, name)?,
            "churn" => churn = number(p, name)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some(s) = setup else {
        print!("{USAGE}");
        return Ok(0);
    };
    scenario::raise_open_file_limit(256 + silent + idle_tls + slow + 2 * churn)?;
    let hello = client_hello(&s.fresh)?;
    s.warm_up();
    let alone = s.measure_good();

    let pid = s.common.server_pid;
    let cpu0 = pid.and_then(process_cpu);
    let flood_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let holder = {
        let (t, stop) = (s.fresh.clone(), stop.clone());
        let counts = [
            (Kind::Silent, silent),
            (Kind::IdleTls, idle_tls),
            (Kind::Slow, slow),
        ];
        thread::Builder::new()
            .name("flood".into())
            .spawn(move || hold(&t, counts, &hello, ready_tx, &stop))
            .map_err(|e| format!("cannot start a thread: {e}"))?
    };
    let _ = ready_rx.recv();
    let opened_in = flood_start.elapsed();
    let churners = (churn > 0).then(|| Background::start(&s.fresh, &s.work, churn, true));
    thread::sleep(s.common.settle);
    let under = s.measure_good();
    let churn_report = churners.map(Background::stop);
    stop.store(true, Ordering::Relaxed);
    let stats = holder.join().map_err(|_| "the flood thread panicked")?;
    let flood_cpu = cpu_since(pid, cpu0);
    let flood_secs = flood_start.elapsed().as_secs_f64();

    let kinds = [("silent", silent), ("idle_tls", idle_tls), ("slow", slow)];
    let mut flood_json = serde_json::json!({
        "opened_in_s": opened_in.as_secs_f64(),
        "elapsed_s": flood_secs,
        "slow_bytes_sent": stats.slow_bytes,
        "server_cpu_percent": flood_cpu.map(|c| c / flood_secs * 100.0),
    });
    for (i, (name, n)) in kinds.iter().enumerate() {
        flood_json[*name] = serde_json::json!({
            "wanted": n,
            "open_at_end": stats.open_at_end[i],
            "reopened": stats.reopened[i],
            "failed_opens": stats.failed[i],
        });
    }
    let churn_json = match &churn_report {
        Some(r) => {
            let mut j = background_json(r);
            j["clients"] = churn.into();
            j
        }
        None => serde_json::json!({ "clients": 0 }),
    };
    let churn_errors = churn_report.as_ref().map_or(0, |r| r.error_count());
    let errors = alone.report.error_count() + under.report.error_count() + churn_errors;
    let out = serde_json::json!({
        "scenario": "flood",
        "server": s.a.server,
        "op": s.a.op.name(),
        "good_connections": s.common.good_connections,
        "alone": alone.json(),
        "under_flood": under.json(),
        "p99_ratio": ratio(&alone, &under),
        "flood": flood_json,
        "churn": churn_json,
    });
    if s.a.json {
        println!("{out}");
        return Ok(errors);
    }
    println!(
        "kes-bench flood: {} on {}, {} good connection(s); flood: {silent} silent, \
         {idle_tls} idle TLS, {slow} slow, {churn} churning",
        s.a.op.name(),
        s.a.server,
        s.common.good_connections
    );
    for (name, p) in [("alone", &alone), ("under flood", &under)] {
        println!(
            "  good {name:12} p50 {:.3} ms  p99 {:.3} ms  ({} requests, {} errors)",
            p.report.percentile(50.0),
            p.p99(),
            p.report.total,
            p.report.error_count()
        );
    }
    println!("  p99 ratio:        {:.2}", ratio(&alone, &under));
    for (i, (name, n)) in kinds.iter().enumerate() {
        println!(
            "  {name:9} {n} wanted, {} open at the end, {} reopened, {} failed opens",
            stats.open_at_end[i], stats.reopened[i], stats.failed[i]
        );
    }
    if let Some(r) = &churn_report {
        println!(
            "  churn:    {:.0} new connections/s ({} ok, {} errors)",
            r.ok as f64 / r.elapsed.as_secs_f64(),
            r.ok,
            r.error_count()
        );
    }
    Ok(errors)
}
