//! What the `storm` and `flood` scenarios share: their common options, the good
//! client's measured phases, the server's CPU time, and the open-file limit.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use crate::args::{Args, ExtraOption, number, parse_args_with, parse_duration, text};
use crate::conn::Target;
use crate::load::{Report, Work, prepare, run_load};

/// Options of both scenarios, besides the common ones (`--duration` is the length of
/// each measured phase, `--op` the good client's operation).
pub(crate) struct Common {
    /// Keep-alive connections of the good client.
    pub(crate) good_connections: usize,
    /// Time the disturbance runs before the good client is measured under it.
    pub(crate) settle: Duration,
    /// The server's process, to read its CPU time from /proc (Linux).
    pub(crate) server_pid: Option<u32>,
}

/// Everything a scenario needs to run: the parsed options, a keep-alive target, a
/// target that makes every connection a full handshake, and the request to send.
pub(crate) struct Setup {
    pub(crate) a: Args,
    pub(crate) common: Common,
    pub(crate) keep_alive: Arc<Target>,
    pub(crate) fresh: Arc<Target>,
    pub(crate) work: Arc<Work>,
}

/// Parses the common options, the scenario's own (`extra`) and the shared ones
/// (`--good-connections`, `--settle`, `--server-pid`); `Ok(None)` for `--help`.
pub(crate) fn setup(args: Vec<OsString>, extra: ExtraOption) -> Result<Option<Setup>, String> {
    let mut common = Common {
        good_connections: 1,
        settle: Duration::from_secs(1),
        server_pid: None,
    };
    let parsed = parse_args_with(args, &mut |name, p| {
        match name {
            "good-connections" => {
                common.good_connections = number(p, name)?;
                if common.good_connections == 0 {
                    return Err("--good-connections must be at least 1".into());
                }
            }
            "settle" => common.settle = parse_duration(&text(p)?)?,
            "server-pid" => common.server_pid = Some(number(p, name)?),
            _ => return extra(name, p),
        }
        Ok(true)
    })?;
    let Some(a) = parsed else { return Ok(None) };
    if a.requests.is_some() || a.new_connection {
        return Err("--requests and --new-connection do not apply to a scenario".into());
    }
    let keep_alive = Arc::new(Target::new(&a, true)?);
    let fresh = Arc::new(Target::new(&a, false)?);
    let work = Arc::new(prepare(&keep_alive, &a)?);
    Ok(Some(Setup {
        a,
        common,
        keep_alive,
        fresh,
        work,
    }))
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The server's CPU seconds between `start` and now, if known.
pub(crate) fn cpu_since(pid: Option<u32>, start: Option<f64>) -> Option<f64> {
    Some(process_cpu(pid?)? - start?)
}

/// One measured run of the good client, with the server's CPU time meanwhile.
pub(crate) struct Phase {
    pub(crate) report: Report,
    pub(crate) server_cpu_s: Option<f64>,
}

impl Setup {
    /// The good client's keep-alive load for `--duration`.
    pub(crate) fn measure_good(&self) -> Phase {
        let pid = self.common.server_pid;
        let cpu0 = pid.and_then(process_cpu);
        let report = run_load(
            &self.keep_alive,
            &self.work,
            self.common.good_connections,
            self.a.duration,
            None,
            false,
        );
        Phase {
            server_cpu_s: cpu_since(pid, cpu0),
            report,
        }
    }

    /// An unmeasured run of the good client (`--warmup`), to fill caches first.
    pub(crate) fn warm_up(&self) {
        if !self.a.warmup.is_zero() {
            run_load(
                &self.keep_alive,
                &self.work,
                self.common.good_connections,
                self.a.warmup,
                None,
                false,
            );
        }
    }
}

impl Phase {
    pub(crate) fn json(&self) -> serde_json::Value {
        let r = &self.report;
        let secs = r.elapsed.as_secs_f64();
        serde_json::json!({
            "elapsed_s": secs,
            "requests": r.total,
            "ok": r.ok,
            "errors": r.error_count(),
            "errors_by_kind": r.errors_json(),
            "throughput_rps": r.throughput(),
            "latency_ms": r.latency_json(),
            "server_cpu_percent": self.server_cpu_s.map(|c| c / secs * 100.0),
            "server_cpu_us_per_request": self.server_cpu_s.map(|c| c / r.total.max(1) as f64 * 1e6),
        })
    }

    pub(crate) fn p99(&self) -> f64 {
        self.report.percentile(99.0)
    }
}

/// A load that ran beside the good client (the storm, the churn) as JSON.
pub(crate) fn background_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "elapsed_s": r.elapsed.as_secs_f64(),
        "requests": r.total,
        "ok": r.ok,
        "ok_per_s": r.ok as f64 / r.elapsed.as_secs_f64(),
        "errors": r.error_count(),
        "errors_by_kind": r.errors_json(),
        "latency_ms": r.latency_json(),
    })
}

/// The good client's p99 under the disturbance over its p99 alone.
pub(crate) fn ratio(alone: &Phase, under: &Phase) -> f64 {
    let base = alone.p99();
    if base > 0.0 { under.p99() / base } else { 0.0 }
}

/// Raises the soft limit of open files to the hard one; fails when `needed` file
/// descriptors do not fit even then.
pub(crate) fn raise_open_file_limit(needed: usize) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is valid.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    if limit.rlim_max < needed as libc::rlim_t {
        return Err(format!(
            "this needs about {needed} open files, but the hard limit is {} (ulimit -Hn)",
            limit.rlim_max
        ));
    }
    Ok(())
}
