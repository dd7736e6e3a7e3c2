//! The Prometheus metrics: request counters and latency, and the gauges the server's
//! parts report when `/v1/metrics` is scraped (docs/metrics.md).

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Histogram bucket bounds of `kes_http_response_time`, in seconds (the original's).
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

/// Request counters and the latency histogram.
pub struct Metrics {
    started: Instant,
    /// Responses by status code 100..=599.
    by_code: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    pub active: AtomicU64,
    pub audit_events: AtomicU64,
    pub error_events: AtomicU64,
    /// CipherTrust API token requests that failed (renewals and first tokens).
    pub token_failures: AtomicU64,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        started: Instant::now(),
        by_code: (100..600).map(|_| AtomicU64::new(0)).collect(),
        buckets: Default::default(),
        count: AtomicU64::new(0),
        sum_nanos: AtomicU64::new(0),
        active: AtomicU64::new(0),
        audit_events: AtomicU64::new(0),
        error_events: AtomicU64::new(0),
        token_failures: AtomicU64::new(0),
    })
}

/// Upper bounds, in seconds, of the latency histogram of a backend's remote calls.
pub const CALL_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a keystore that calls a remote service (CipherTrust) counted of its calls, per
/// route, for `/v1/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallStatsSnapshot {
    pub routes: Vec<RouteCalls>,
}

/// One route's calls: each HTTP exchange, retries included.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCalls {
    pub route: &'static str,
    /// Exchanges per [`CALL_BUCKETS`] bucket (not cumulative); slower ones are only in
    /// `count`.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: Duration,
    /// Error answers by status (`"404"`, `"503"`, …), and `"none"` for exchanges that got
    /// no answer (network, TLS, timeout).
    pub errors: Vec<(String, u64)>,
}

/// Counts a CipherTrust API token request that failed (`kes_ciphertrust_token_failures_total`).
pub fn ciphertrust_token_failed() {
    metrics().token_failures.fetch_add(1, Ordering::Relaxed);
}

/// What the intermediate keys of resident keys count (docs/metrics.md), when they are on.
/// "Seal": IKs that seal new data keys; "open": IKs that open envelopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IkStats {
    /// IKs kept now, by side.
    pub live_seal: u64,
    pub live_open: u64,
    /// Uses served by a kept IK (each would have been a keystore call), by side.
    pub hits_seal: u64,
    pub hits_open: u64,
    /// Uses that needed a wrap or an unwrap, by side.
    pub misses_seal: u64,
    pub misses_open: u64,
    /// Whether the IKs' memory is locked (mlock).
    pub locked: bool,
}

/// Gauges owned by other parts of the server, read when metrics are rendered.
pub struct Gauges {
    /// Log events the audit and error streams' subscribers (and the console) did not get.
    pub log_events_dropped: u64,
    pub open_connections: u64,
    pub refused_connections: u64,
    pub busy_workers: u64,
    pub workers: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub keystore_latency: Option<Duration>,
    /// The key cache serves in offline mode: the keystore was last found unreachable and
    /// `cache.expiry.offline` keeps cached keys in use.
    pub cache_offline: bool,
    /// The keystore's remote calls (CipherTrust), if it makes any.
    pub keystore_calls: Option<CallStatsSnapshot>,
    /// Intermediate keys of resident keys, when they are on.
    pub intermediate_keys: Option<IkStats>,
    /// The calls to CipherTrust the event loops make (resident keys), if any.
    pub upstream: Option<UpstreamGauges>,
}

/// The event loops' calls to CipherTrust now (`server::upstream`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamGauges {
    pub in_flight: u64,
    pub queued: u64,
    /// Refused since start: the queue was full, or a call waited past its time limit.
    pub refused: u64,
    pub connections: u64,
}

impl Metrics {
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(counter) = self.by_code.get(usize::from(status).wrapping_sub(100)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, range) in [
            (
                "kes_http_request_success",
                "Number of requests answered with 2xx.",
                200..300,
            ),
            (
                "kes_http_request_error",
                "Number of requests answered with 4xx.",
                400..500,
            ),
            (
                "kes_http_request_failure",
                "Number of requests answered with 5xx.",
                500..600,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let mut any = false;
            for code in range {
                let n = self.by_code[code - 100].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
                    any = true;
                }
            }
            if !any {
                let _ = writeln!(out, "{name}{{code=\"{}\"}} 0", range_start_code(name));
            }
        }
        gauge(
            &mut out,
            "kes_http_request_active",
            "Number of requests being served.",
            self.active.load(Ordering::Relaxed) as f64,
        );

        let name = "kes_http_response_time";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a request, in seconds.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, counter) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += counter.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");

        counter(
            &mut out,
            "kes_log_error_events",
            "Number of error log events.",
            self.error_events.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "kes_log_audit_events",
            "Number of audit log events.",
            self.audit_events.load(Ordering::Relaxed),
        );
        let uptime = (self.started.elapsed().as_millis() / 10) as f64 / 100.0;
        gauge(
            &mut out,
            "kes_system_up_time",
            "Time since the server started, in seconds.",
            uptime,
        );
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        gauge(
            &mut out,
            "kes_system_num_cpu",
            "Number of logical CPUs.",
            cpus,
        );
        gauge(
            &mut out,
            "kes_system_num_cpu_used",
            "Number of CPUs the server may use.",
            cpus,
        );
        let (threads, rss) = process_stats();
        gauge(
            &mut out,
            "kes_system_num_threads",
            "Number of threads of the server.",
            threads as f64,
        );
        gauge(
            &mut out,
            "kes_system_mem_heap_used",
            "Resident memory in bytes.",
            rss as f64,
        );
        gauge(
            &mut out,
            "kes_system_mem_heap_objects",
            "Not tracked by kes; always 0.",
            0.0,
        );
        gauge(
            &mut out,
            "kes_system_mem_stack_used",
            "Not tracked by kes; always 0.",
            0.0,
        );

        gauge(
            &mut out,
            "kes_http_connections_open",
            "Open client connections.",
            gauges.open_connections as f64,
        );
        counter(
            &mut out,
            "kes_http_connections_refused",
            "Connections refused for exceeding the connection limit.",
            gauges.refused_connections,
        );
        gauge(
            &mut out,
            "kes_worker_pool_busy",
            "Pool workers serving a request that may wait for the keystore.",
            gauges.busy_workers as f64,
        );
        gauge(
            &mut out,
            "kes_worker_pool_size",
            "Worker threads.",
            gauges.workers as f64,
        );
        counter(
            &mut out,
            "kes_cache_hits",
            "Key lookups answered by the key cache.",
            gauges.cache_hits,
        );
        counter(
            &mut out,
            "kes_cache_misses",
            "Key lookups that went to the keystore.",
            gauges.cache_misses,
        );
        counter(
            &mut out,
            "kes_log_events_dropped",
            "Log events a slow subscriber or console did not get.",
            gauges.log_events_dropped,
        );
        if let Some(latency) = gauges.keystore_latency {
            gauge(
                &mut out,
                "kes_keystore_latency_seconds",
                "Time of the last keystore status check.",
                latency.as_secs_f64(),
            );
        }
        if let Some(calls) = &gauges.keystore_calls {
            render_keystore_calls(&mut out, calls);
        }
        if let Some(upstream) = gauges.upstream {
            gauge(
                &mut out,
                "kes_ciphertrust_calls_in_flight",
                "Calls to CipherTrust Manager the event loops have in flight (resident keys).",
                upstream.in_flight as f64,
            );
            gauge(
                &mut out,
                "kes_ciphertrust_calls_queued",
                "Calls to CipherTrust Manager waiting for room under --cm-calls and --cm-connections.",
                upstream.queued as f64,
            );
            counter(
                &mut out,
                "kes_ciphertrust_calls_refused_total",
                "Requests answered 503 because calls to CipherTrust Manager were at their limit (queue full, or waited past --cm-queue-timeout).",
                upstream.refused,
            );
            gauge(
                &mut out,
                "kes_ciphertrust_connections",
                "Connections the event loops keep to CipherTrust Manager.",
                upstream.connections as f64,
            );
        }
        gauge(
            &mut out,
            "kes_keystore_up",
            "1 when the keystore status check made for this scrape succeeded, else 0.",
            f64::from(u8::from(gauges.keystore_latency.is_some())),
        );
        gauge(
            &mut out,
            "kes_cache_offline",
            "1 while the key cache serves in offline mode (keystore unreachable, cache.expiry.offline set).",
            f64::from(u8::from(gauges.cache_offline)),
        );
        counter(
            &mut out,
            "kes_ciphertrust_token_failures_total",
            "CipherTrust API token requests that failed; 0 with other keystores.",
            self.token_failures.load(Ordering::Relaxed),
        );
        if let Some(iks) = &gauges.intermediate_keys {
            render_intermediate_keys(&mut out, iks);
        }
        out
    }
}

/// The intermediate keys of resident keys, by purpose: `encrypt` (IKs that seal new data
/// keys) and `decrypt` (IKs that open envelopes).
fn render_intermediate_keys(out: &mut String, iks: &IkStats) {
    for (name, kind, help, [encrypt, decrypt]) in [
        (
            "kes_intermediate_keys_live",
            "gauge",
            "Intermediate keys kept in memory now, by purpose.",
            [iks.live_seal, iks.live_open],
        ),
        (
            "kes_intermediate_key_cache_hits_total",
            "counter",
            "Data keys sealed or opened under a kept intermediate key, by purpose.",
            [iks.hits_seal, iks.hits_open],
        ),
        (
            "kes_intermediate_key_cache_misses_total",
            "counter",
            "Data keys that needed CipherTrust to wrap (encrypt) or unwrap (decrypt) an intermediate key, by purpose.",
            [iks.misses_seal, iks.misses_open],
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{purpose=\"encrypt\"}} {encrypt}\n{name}{{purpose=\"decrypt\"}} {decrypt}"
        );
    }
    counter(
        out,
        "kes_intermediate_key_ciphertrust_calls_saved_total",
        "CipherTrust calls that intermediate keys saved: each cache hit is a data key that would have been one call.",
        iks.hits_seal + iks.hits_open,
    );
    gauge(
        out,
        "kes_intermediate_keys_locked",
        "1 when the intermediate keys' memory is locked (never swapped), 0 when the memlock limit refused it.",
        f64::from(u8::from(iks.locked)),
    );
}

/// The CipherTrust call histogram and error answers, per route (docs/metrics.md).
fn render_keystore_calls(out: &mut String, calls: &CallStatsSnapshot) {
    if calls.routes.is_empty() {
        return;
    }
    let name = "kes_ciphertrust_call_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time of each CipherTrust Manager call (each attempt of a retried call), by route.\n# TYPE {name} histogram"
    );
    for route in &calls.routes {
        let label = route.route;
        let mut cumulative = 0;
        for (bound, n) in CALL_BUCKETS.iter().zip(&route.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{label}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{label}\",le=\"+Inf\"}} {}\n{name}_sum{{route=\"{label}\"}} {}\n{name}_count{{route=\"{label}\"}} {}",
            route.count,
            route.sum.as_secs_f64(),
            route.count
        );
    }
    // The family is announced even before its first error, so that it is there for
    // dashboards and the metrics doc from the first call on.
    let name = "kes_ciphertrust_call_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} CipherTrust Manager answers with status 400 to 599, and calls without an answer (status \"none\"), by route.\n# TYPE {name} counter"
    );
    for route in &calls.routes {
        for (status, n) in &route.errors {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",status=\"{status}\"}} {n}",
                route.route
            );
        }
    }
}

fn range_start_code(name: &str) -> u16 {
    match name {
        "kes_http_request_success" => 200,
        "kes_http_request_error" => 400,
        _ => 500,
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// A family whose samples carry labels: `# HELP`, `# TYPE`, then one line per sample.
/// A family without samples is left out.
pub fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels: Vec<String> = labels
            .iter()
            .map(|(label, text)| format!("{label}=\"{}\"", escape_label(text)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// A label value as the text exposition format writes it.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// (threads, resident bytes) of this process, from /proc.
pub fn process_stats() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}
