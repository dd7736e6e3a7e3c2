//! kes-bench: a load generator for any KES-compatible server.
//!
//! Plain std threads, one keep-alive mTLS connection per thread (rustls + httparse),
//! only the public KES key API (create, generate, decrypt, delete), so the numbers
//! compare the Rust and the Go server alike. See docs/BENCHMARKS.md.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use args::{Args, USAGE, parse_args};
use conn::{Conn, Target, build_request};
use load::{Report, prepare, run_load};
use tls::write_certs;

mod args;
mod conn;
mod evload;
mod flood;
mod load;
mod scenario;
mod storm;
mod tls;

fn print_report(a: &Args, r: &Report) {
    let errors = r.error_count();
    if a.json {
        let out = serde_json::json!({
            "server": a.server,
            "op": a.op.name(),
            "key_name": a.key_name,
            "connections": a.connections,
            "new_connection": a.new_connection,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "requests": r.total,
            "ok": r.ok,
            "errors": errors,
            "errors_by_kind": r.errors_json(),
            "throughput_rps": r.throughput(),
            "latency_ms": r.latency_json(),
        });
        println!("{out}");
        return;
    }
    let what = if a.new_connection {
        " (new TLS connection per request)"
    } else {
        ""
    };
    println!(
        "kes-bench: {} on {} with key '{}', {} connection(s){what}",
        a.op.name(),
        a.server,
        a.key_name,
        a.connections
    );
    println!(
        "  requests:    {} in {:.2} s: {} ok, {} errors",
        r.total,
        r.elapsed.as_secs_f64(),
        r.ok,
        errors
    );
    println!("  throughput:  {:.0} req/s", r.throughput());
    println!(
        "  latency ms:  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        r.mean_ms(),
        r.percentile(50.0),
        r.percentile(90.0),
        r.percentile(99.0),
        r.percentile(99.9),
        r.percentile(100.0)
    );
    for (kind, n) in &r.errors {
        println!("  error:       {n} × {kind}");
    }
}

fn run(a: Args) -> Result<u64, String> {
    let setup = Target::new(&a, true)?;
    let work = Arc::new(prepare(&setup, &a)?);
    let target = Arc::new(if a.new_connection {
        Target::new(&a, false)?
    } else {
        setup
    });
    if a.event_loop {
        if !a.warmup.is_zero() {
            evload::run(&target, &work, a.connections, a.warmup, None, a.stagger)?;
        }
        let report = evload::run(
            &target,
            &work,
            a.connections,
            a.duration,
            a.requests,
            a.stagger,
        )?;
        print_report(&a, &report);
        return Ok(report.errors.values().sum());
    }
    if !a.warmup.is_zero() {
        run_load(
            &target,
            &work,
            a.connections,
            a.warmup,
            None,
            a.new_connection,
        );
    }
    let report = run_load(
        &target,
        &work,
        a.connections,
        a.duration,
        a.requests,
        a.new_connection,
    );
    print_report(&a, &report);
    Ok(report.errors.values().sum())
}

/// `kes-bench ready-time`: milliseconds from spawning a server to its first 200
/// answer to `GET /v1/status`.
fn ready_time(mut args: Vec<OsString>) -> Result<(), String> {
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or("ready-time: put the server command after --")?;
    let command = args.split_off(sep + 1);
    args.pop();
    let a = parse_args(args)?.ok_or("ready-time: see --help")?;
    let (program, rest) = command
        .split_first()
        .ok_or("ready-time: no command after --")?;
    let t = Target::new(&a, false)?;
    let request = build_request(&t, "GET", "/v1/status", b"", true);
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(rest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "the server exited with {status} before it was ready"
            ));
        }
        if start.elapsed() > Duration::from_secs(10) {
            break Err("the server was not ready within 10 s".into());
        }
        if let Ok(mut c) = Conn::open(&t)
            && let Ok(resp) = c.request(&request)
            && resp.status == 200
        {
            break Ok(start.elapsed());
        }
        thread::sleep(Duration::from_millis(1));
    };
    // The child has not been reaped yet, so its pid is still ours.
    kill_term(child.id());
    let _ = child.wait();
    let elapsed = result?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "ready_ms": elapsed.as_secs_f64() * 1e3 })
        );
    } else {
        println!("ready after {:.1} ms", elapsed.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Asks our child to stop gracefully; `kill` on failure.
fn kill_term(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: could not send SIGTERM to {pid}");
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().and_then(|a| a.to_str()) == Some("ready-time") {
        return match ready_time(args.split_off(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match args.first().and_then(|a| a.to_str()) {
        Some("storm") => return exit(storm::run(args.split_off(1))),
        Some("flood") => return exit(flood::run(args.split_off(1))),
        _ => {}
    }
    if args.first().and_then(|a| a.to_str()) == Some("certs") {
        let Some(dir) = args.get(1) else {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        };
        return match write_certs(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = match parse_args(std::mem::take(&mut args)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("Error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    exit(run(a))
}

/// The exit status of a load run: 1 if requests failed (reported in the output), 2 if
/// it could not run.
fn exit(result: Result<u64, String>) -> ExitCode {
    match result {
        Ok(0) => ExitCode::SUCCESS,
        // Errors during the load are reported above; exit 1 so scripts notice.
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
