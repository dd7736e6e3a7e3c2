//! `kes metric`: scrapes `/v1/metrics` (Prometheus text format) every `--rate`. On a
//! terminal it draws a small dashboard; otherwise it prints one JSON object per scrape
//! in the shape of the Go SDK's `Metric` (durations in nanoseconds).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::args::{self, INSECURE};
use super::client::{Client, Method};
use super::output::{self, Paint};
use super::{Exit, Outcome};

const USAGE: &str = "Usage:
    kes metric [options]

Options:
    --rate <DURATION>        Scrape rate when monitoring metrics. (default: 5s)

    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Examples:
    $ kes metric
    $ kes metric --rate 1s | head -n 3
";

/// One metrics snapshot.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub kes_http_request_success: u64,
    pub kes_http_request_error: u64,
    pub kes_http_request_failure: u64,
    pub kes_http_request_active: u64,
    pub kes_log_audit_events: u64,
    pub kes_log_error_events: u64,
    /// Cumulative response counts by bucket upper bound in nanoseconds (as text, sorted
    /// as text, like Go's JSON encoding of a duration-keyed map).
    pub kes_http_response_time: BTreeMap<String, u64>,
    /// Nanoseconds.
    pub kes_system_up_time: u64,
    pub kes_system_num_cpu: u64,
    pub kes_system_num_cpu_used: u64,
    pub kes_system_num_threads: u64,
    pub kes_system_mem_heap_used: u64,
    pub kes_system_mem_heap_objects: u64,
    pub kes_system_mem_stack_used: u64,
}

impl Metric {
    fn requests(&self) -> u64 {
        self.kes_http_request_success + self.kes_http_request_error + self.kes_http_request_failure
    }

    /// Mean response time estimated from the histogram (each response counted at its
    /// bucket's upper bound).
    fn average_latency(&self) -> Duration {
        let mut buckets: Vec<(u64, u64)> = self
            .kes_http_response_time
            .iter()
            .filter_map(|(bound, count)| Some((bound.parse().ok()?, *count)))
            .collect();
        buckets.sort();
        let (mut previous, mut total, mut weighted) = (0u64, 0u64, 0u128);
        for (bound, cumulative) in buckets {
            let in_bucket = cumulative.saturating_sub(previous);
            previous = cumulative;
            total += in_bucket;
            weighted += u128::from(in_bucket) * u128::from(bound);
        }
        if total == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos((weighted / u128::from(total)) as u64)
        }
    }
}

/// Parses the Prometheus text exposition format into a [`Metric`].
pub fn parse_prometheus(text: &str) -> Metric {
    let mut metric = Metric::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name_and_labels, rest) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (name, rest.trim()),
                None => continue,
            },
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (name_and_labels, ""),
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let count = if value.is_finite() && value > 0.0 {
            value.round() as u64
        } else {
            0
        };
        match name {
            "kes_http_request_success" => metric.kes_http_request_success += count,
            "kes_http_request_error" => metric.kes_http_request_error += count,
            "kes_http_request_failure" => metric.kes_http_request_failure += count,
            "kes_http_request_active" => metric.kes_http_request_active = count,
            "kes_log_audit_events" => metric.kes_log_audit_events = count,
            "kes_log_error_events" => metric.kes_log_error_events = count,
            "kes_http_response_time_bucket" => {
                let bound = labels
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(key, _)| key.trim() == "le")
                    .map(|(_, v)| v.trim().trim_matches('"'));
                if let Some(seconds) = bound
                    .and_then(|b| b.parse::<f64>().ok())
                    .filter(|s| s.is_finite())
                {
                    let nanos = (seconds * 1e9).round() as u64;
                    metric
                        .kes_http_response_time
                        .insert(nanos.to_string(), count);
                }
            }
            "kes_system_up_time" => {
                metric.kes_system_up_time = (value.max(0.0) * 1e9).round() as u64
            }
            "kes_system_num_cpu" => metric.kes_system_num_cpu = count,
            "kes_system_num_cpu_used" => metric.kes_system_num_cpu_used = count,
            "kes_system_num_threads" => metric.kes_system_num_threads = count,
            "kes_system_mem_heap_used" => metric.kes_system_mem_heap_used = count,
            "kes_system_mem_heap_objects" => metric.kes_system_mem_heap_objects = count,
            "kes_system_mem_stack_used" => metric.kes_system_mem_stack_used = count,
            _ => {}
        }
    }
    metric
}

fn scrape(client: &Client) -> Result<Metric, Exit> {
    let reply = client
        .call(Method::Get, "/v1/metrics", None)
        .map_err(|e| Exit::Error(format!("failed to fetch metrics: {e}")))?;
    Ok(parse_prometheus(&String::from_utf8_lossy(&reply.body)))
}

/// `kes metric`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes metric",
        USAGE,
        &[INSECURE, args::option("rate", None)],
        raw,
    )?;
    if !parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "too many arguments. See 'kes metric --help'".into(),
        ));
    }
    let rate = match parsed.value("rate") {
        Some(text) => args::parse_duration(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Exit::Error(format!(
                    "invalid --rate {text:?}: use a duration such as 5s. See 'kes metric --help'"
                ))
            })?,
        None => Duration::from_secs(5),
    };
    let client = Client::for_command(&parsed)?;
    let terminal = output::stdout_is_terminal();
    let paint = Paint {
        enabled: terminal && !output::no_color_requested(),
    };
    let mut previous: Option<(Metric, Instant)> = None;
    let mut drawn_lines = 0;
    loop {
        let started = Instant::now();
        let metric = match scrape(&client) {
            Ok(metric) => metric,
            Err(e) => {
                if terminal && drawn_lines > 0 {
                    let _ = output::print("\x1b[?25h"); // the dashboard hid the cursor
                }
                return Err(e);
            }
        };
        if terminal {
            let rate = previous
                .as_ref()
                .map(|(before, at)| {
                    let seconds = at.elapsed().as_secs_f64().max(1e-3);
                    metric.requests().saturating_sub(before.requests()) as f64 / seconds
                })
                .unwrap_or(0.0);
            let text = dashboard(&metric, rate, paint);
            // Move up over the previous drawing and replace it.
            let rewind = if drawn_lines > 0 {
                format!("\x1b[{drawn_lines}F\x1b[J")
            } else {
                "\x1b[?25l".to_owned()
            };
            drawn_lines = text.lines().count();
            output::print(&format!("{rewind}{text}"))?;
        } else {
            output::print(&output::json_line(&metric))?;
        }
        previous = Some((metric, Instant::now()));
        std::thread::sleep(rate.saturating_sub(started.elapsed()));
    }
}

fn dashboard(metric: &Metric, requests_per_second: f64, paint: Paint) -> String {
    let total = metric.requests().max(1) as f64;
    let percent = |n: u64| format!("{:.2}%", 100.0 * n as f64 / total);
    let header = |text: &str| paint.faint(&paint.bold(text));
    let mut out = String::new();
    out.push_str(&header(
        "Request    OK [2xx]       Err [4xx]       Err [5xx]      Req/s        Latency",
    ));
    out.push('\n');
    out.push_str(&format!(
        "{}{}{}{:>11.2}{:>15}\n",
        paint.green(&format!("{:>19}", metric.kes_http_request_success)),
        paint.yellow(&format!("{:>16}", metric.kes_http_request_error)),
        paint.red(&format!("{:>16}", metric.kes_http_request_failure)),
        requests_per_second,
        output::format_duration(metric.average_latency()),
    ));
    out.push_str(&format!(
        "{}{}{}\n\n",
        paint.green(&format!("{:>19}", percent(metric.kes_http_request_success))),
        paint.yellow(&format!("{:>16}", percent(metric.kes_http_request_error))),
        paint.red(&format!("{:>16}", percent(metric.kes_http_request_failure))),
    ));
    out.push_str(&header(
        "System       UpTime            Heap           Stack       CPUs        Threads",
    ));
    out.push('\n');
    out.push_str(&format!(
        "{:>19}{:>16}{:>16}{:>11}{:>15}\n",
        output::format_duration(Duration::from_secs(
            metric.kes_system_up_time / 1_000_000_000
        )),
        output::format_size(metric.kes_system_mem_heap_used),
        output::format_size(metric.kes_system_mem_stack_used),
        metric.kes_system_num_cpu_used,
        metric.kes_system_num_threads,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP kes_http_request_success Number of requests that have been served successfully.
# TYPE kes_http_request_success counter
kes_http_request_success{code="200"} 7
kes_http_request_error{code="403"} 2
kes_http_request_error{code="404"} 1
kes_http_request_failure{code="502"} 1
kes_http_request_active 0
kes_http_response_time_bucket{le="0.01"} 8
kes_http_response_time_bucket{le="0.05"} 10
kes_http_response_time_bucket{le="+Inf"} 11
kes_http_response_time_sum 0.2
kes_http_response_time_count 11
kes_log_audit_events 3
kes_log_error_events 0
kes_system_up_time 12.5
kes_system_num_cpu 2
kes_system_num_cpu_used 2
kes_system_num_threads 9
kes_system_mem_heap_used 1.2e+06
kes_system_mem_heap_objects 100
kes_system_mem_stack_used 65536
"#;

    #[test]
    fn prometheus_text_becomes_the_sdk_shape() {
        let metric = parse_prometheus(SAMPLE);
        assert_eq!(metric.kes_http_request_success, 7);
        assert_eq!(metric.kes_http_request_error, 3);
        assert_eq!(metric.kes_http_request_failure, 1);
        assert_eq!(metric.kes_system_up_time, 12_500_000_000);
        assert_eq!(metric.kes_system_mem_heap_used, 1_200_000);
        assert_eq!(metric.kes_http_response_time.get("10000000"), Some(&8));
        assert_eq!(metric.kes_http_response_time.get("50000000"), Some(&10));
        assert_eq!(metric.kes_http_response_time.len(), 2);
        let json = serde_json::to_string(&metric).unwrap();
        assert!(
            json.starts_with(r#"{"kes_http_request_success":7,"kes_http_request_error":3,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""kes_http_response_time":{"10000000":8,"50000000":10}"#),
            "{json}"
        );
        // 8 responses at ≤10ms, 2 at ≤50ms: (8·10 + 2·50) / 10 = 18ms.
        assert_eq!(metric.average_latency(), Duration::from_millis(18));
    }

    #[test]
    fn dashboard_shows_counts() {
        let text = dashboard(&parse_prometheus(SAMPLE), 1.5, Paint { enabled: false });
        assert!(text.contains("Req/s"));
        assert!(text.contains("1.50"));
    }
}
