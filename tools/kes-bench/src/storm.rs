//! `kes-bench storm`: the good client's latency alone, then while clients open new
//! full mTLS connections (no session resumption) as fast as they can, one request each.

use std::ffi::OsString;
use std::thread;

use crate::args::number;
use crate::load::Background;
use crate::scenario::{self, background_json, cpu_since, process_cpu, ratio};

pub(crate) const USAGE: &str = "\
Usage:
    kes-bench storm --server URL (credentials) [options] [--storm-clients N]

Handshake storm: measures the good client (keep-alive, --good-connections, default 1)
for --duration alone, then starts --storm-clients (default 8) clients that each open a
new TCP connection with a full mTLS handshake (no session resumption) per request, as
fast as they can; after --settle (default 1s) measures the good client again for
--duration while the storm goes on. Prints both p50/p99, the p99 ratio, and the
storm's handshakes/s and errors. --server-pid PID adds the server's CPU time (Linux).
";

/// Runs the scenario; the number of failed requests, or why it could not run.
pub(crate) fn run(args: Vec<OsString>) -> Result<u64, String> {
    let mut storm_clients: usize = 8;
    let setup = scenario::setup(args, &mut |name, p| {
        if name != "storm-clients" {
            return Ok(false);
        }
        storm_clients = number(p, name)?;
        Ok(true)
    })?;
    let Some(s) = setup else {
        print!("{USAGE}");
        return Ok(0);
    };
    scenario::raise_open_file_limit(256 + 2 * storm_clients)?;
    s.warm_up();
    let alone = s.measure_good();

    let pid = s.common.server_pid;
    let storm_cpu0 = pid.and_then(process_cpu);
    let storm = Background::start(&s.fresh, &s.work, storm_clients, true);
    thread::sleep(s.common.settle);
    let under = s.measure_good();
    let storm = storm.stop();
    let storm_cpu = cpu_since(pid, storm_cpu0);

    // The server's CPU per storm request (handshake + one request): its CPU during the
    // storm, less what the good client's requests cost it when alone.
    let per_good = alone
        .server_cpu_s
        .map(|c| c / alone.report.total.max(1) as f64);
    let per_handshake_us = match (storm_cpu, per_good) {
        (Some(total), Some(per_good)) => {
            let own = total - per_good * under.report.total as f64;
            Some(own.max(0.0) / storm.total.max(1) as f64 * 1e6)
        }
        _ => None,
    };
    let mut storm_json = background_json(&storm);
    storm_json["clients"] = storm_clients.into();
    storm_json["server_cpu_percent"] = storm_cpu
        .map(|c| c / storm.elapsed.as_secs_f64() * 100.0)
        .into();
    storm_json["server_cpu_us_per_handshake"] = per_handshake_us.into();

    let errors = alone.report.error_count() + under.report.error_count() + storm.error_count();
    let out = serde_json::json!({
        "scenario": "storm",
        "server": s.a.server,
        "op": s.a.op.name(),
        "good_connections": s.common.good_connections,
        "alone": alone.json(),
        "under_storm": under.json(),
        "p99_ratio": ratio(&alone, &under),
        "storm": storm_json,
    });
    if s.a.json {
        println!("{out}");
    } else {
        println!(
            "kes-bench storm: {} on {}, {} good connection(s), {} storm clients",
            s.a.op.name(),
            s.a.server,
            s.common.good_connections,
            storm_clients
        );
        println!(
            "  good alone:       p50 {:.3} ms  p99 {:.3} ms  ({} requests, {} errors)",
            alone.report.percentile(50.0),
            alone.p99(),
            alone.report.total,
            alone.report.error_count()
        );
        println!(
            "  good under storm: p50 {:.3} ms  p99 {:.3} ms  ({} requests, {} errors)  p99 ratio {:.2}",
            under.report.percentile(50.0),
            under.p99(),
            under.report.total,
            under.report.error_count(),
            ratio(&alone, &under)
        );
        println!(
            "  storm:            {:.0} handshakes/s ({} ok, {} errors)",
            storm.ok as f64 / storm.elapsed.as_secs_f64(),
            storm.ok,
            storm.error_count()
        );
        for (kind, n) in &storm.errors {
            println!("  storm error:      {n} × {kind}");
        }
    }
    Ok(errors)
}
