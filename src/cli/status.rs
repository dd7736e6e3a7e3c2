//! `kes status`: server state (`/v1/status`) and, with `--api`, its API list (`/v1/api`).

use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::args::{self, COLOR, INSECURE, JSON};
use super::client::{Client, Method};
use super::output::{self, Paint};
use super::{Exit, Outcome};

const USAGE: &str = "Usage:
    kes status [options]

Options:
    -k, --insecure           Skip TLS certificate validation.
    -s, --short              Print status information in a short summary format.
        --api                List all server APIs.
        --json               Print status information in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes status
    $ kes status --api
    $ kes status --json
";

/// The status response; also the `--json` output (the Go SDK's `State`: zero values
/// are left out).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// Seconds.
    #[serde(
        default,
        skip_serializing_if = "is_zero_f64",
        serialize_with = "whole_or_fraction"
    )]
    pub uptime: f64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_cpu: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_cpu_used: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub mem_heap_used: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub mem_stack_used: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub keystore_latency: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keystore_unreachable: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keystore_unavailable: bool,
    /// Sent by kes servers only (`compat.oldest_reader`); tells them from the Go servers,
    /// which send `keystore_latency` in another unit. Left out of `--json`, which keeps
    /// the SDK's shape.
    #[serde(default, skip_serializing)]
    pub oldest_reader: Option<String>,
}

impl State {
    /// The keystore probe's latency, read in the unit this server generation sends:
    /// kes sends nanoseconds (a Go duration, as both SDKs decode it); the Go servers of
    /// 2023-04 to 2025-03 send whole milliseconds; 2023-02 sends none
    /// (docs/compatibility.md).
    pub fn keystore_latency(&self) -> Option<Duration> {
        match (self.keystore_latency, &self.oldest_reader) {
            (0, _) => None,
            (n, Some(_)) => Some(Duration::from_nanos(n)),
            (n, None) => Some(Duration::from_millis(n)),
        }
    }

    /// The uptime in seconds. The Go servers of 2023 send nanoseconds (a Go duration
    /// rounded to the second), later ones and kes whole seconds. A rounded duration in
    /// nanoseconds is 0 or at least 1e9, and 1e9 seconds would be 31 years.
    pub fn uptime_seconds(&self) -> f64 {
        if self.uptime >= 1e9 {
            (self.uptime / 1e9).round()
        } else {
            self.uptime
        }
    }
}

/// One entry of `/v1/api`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Api {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_body: u64,
    /// Seconds; 0 means none.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub timeout: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// Whole numbers without a fraction (`12`, as Go prints a float64 12), others as floats.
fn whole_or_fraction<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// `kes status`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    let flags = [
        INSECURE,
        JSON,
        COLOR,
        args::switch("short", Some('s')),
        args::switch("api", None),
    ];
    let parsed = args::parse("kes status", USAGE, &flags, raw)?;
    if !parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "too many arguments. See 'kes status --help'".into(),
        ));
    }
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;

    let started = Instant::now();
    let reply = client
        .call(Method::Get, "/v1/status", None)
        .map_err(|e| Exit::Error(e.to_string()))?;
    let latency = started.elapsed();
    let mut state: State = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    state.uptime = state.uptime.round();

    let apis: Vec<Api> = if parsed.has("api") {
        let reply = client
            .call(Method::Get, "/v1/api", None)
            .map_err(|e| Exit::Error(e.to_string()))?;
        let mut apis: Vec<Api> = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
        apis.sort_by(|a, b| a.path.cmp(&b.path));
        apis
    } else {
        Vec::new()
    };

    let short = parsed.has("short");
    if parsed.has("json") || !output::stdout_is_terminal() {
        let pretty = output::stdout_is_terminal() && !short;
        let text = match (parsed.has("api"), pretty) {
            (true, true) => output::json_pretty(&apis),
            (true, false) => output::json_line(&apis),
            (false, true) => output::json_pretty(&state),
            (false, false) => output::json_line(&state),
        };
        return output::print(&text);
    }
    let certificate = if short {
        None
    } else {
        super::server_cert::expiry(&client)
    };
    output::print(&status_text(
        client.endpoint(),
        &state,
        latency,
        certificate,
        &apis,
        short,
        parsed.has("api"),
        paint,
    ))
}

/// The server certificate's line: when it expires and how long that is from now;
/// yellow within 30 days, red within 7 and once expired.
fn certificate_text(not_after: i64, now: i64, paint: Paint) -> String {
    let at = output::short_date(&crate::timefmt::format_rfc3339(not_after, 0));
    let left = not_after - now;
    let days = left / 86_400;
    let text = if left <= 0 {
        format!("expired {at} UTC")
    } else {
        format!("expires {at} UTC ({})", crate::expiry::time_left(left))
    };
    match days {
        _ if left <= 0 || days < 7 => paint.red(&text),
        0..30 => paint.yellow(&text),
        _ => text,
    }
}

fn uptime_text(seconds: f64) -> String {
    let hours = seconds / 3600.0;
    if seconds > 24.0 * 3600.0 {
        format!(
            "{:.0} days {:.0} hours",
            (hours / 24.0).floor(),
            hours % 24.0
        )
    } else if seconds > 3600.0 {
        format!("{hours:.0} hours")
    } else if seconds > 60.0 {
        format!("{:.0} minutes", seconds / 60.0)
    } else {
        format!("{seconds:.0} seconds")
    }
}

#[allow(clippy::too_many_arguments)]
fn status_text(
    endpoint: &str,
    state: &State,
    latency: Duration,
    certificate: Option<i64>,
    apis: &[Api],
    short: bool,
    show_apis: bool,
    paint: Paint,
) -> String {
    let label = |text: &str| paint.faint(&format!("  {text:<8}"));
    let mut out = format!(
        "{} {}\n",
        paint.green("●"),
        paint.cyan(&paint.bold(endpoint))
    );
    if !short {
        out.push_str(&format!("{} {}\n", label("Version"), state.version));
        out.push_str(&format!(
            "{} {}\n",
            label("Uptime"),
            uptime_text(state.uptime_seconds())
        ));
        let latency = Duration::from_millis(latency.as_millis() as u64);
        out.push_str(&format!(
            "{} {}\n",
            label("Latency"),
            output::format_duration(latency)
        ));
        out.push_str(&format!("{} {}\n", label("OS"), state.os));
        out.push_str(&format!(
            "{} {} {}\n",
            label("CPUs"),
            state.num_cpu_used,
            state.arch
        ));
        out.push_str(&format!("{}\n", paint.faint("  Memory")));
        out.push_str(&format!(
            "{} {}\n",
            paint.faint(&format!("{:>3} {:<6}", "·", "Heap")),
            output::format_size(state.mem_heap_used)
        ));
        out.push_str(&format!(
            "{} {}\n",
            paint.faint(&format!("{:>3} {:<6}", "·", "Stack")),
            output::format_size(state.mem_stack_used)
        ));
        if state.keystore_unreachable || state.keystore_unavailable {
            out.push_str(&format!(
                "{} {}\n",
                label("KeyStore"),
                paint.red("unreachable")
            ));
        } else if let Some(latency) = state.keystore_latency() {
            out.push_str(&format!(
                "{} {} latency\n",
                label("KeyStore"),
                output::format_duration(latency)
            ));
        }
        if let Some(not_after) = certificate {
            out.push_str(&format!(
                "{} {}\n",
                label("TLS cert"),
                certificate_text(not_after, crate::timefmt::now().0, paint)
            ));
        }
    }
    if show_apis {
        out.push('\n');
        let rows: Vec<Vec<String>> = apis
            .iter()
            .map(|api| {
                let timeout = if api.timeout > 0 {
                    output::format_duration(Duration::from_secs(api.timeout))
                } else {
                    "Inf".to_owned()
                };
                vec![api.method.clone(), api.path.clone(), timeout]
            })
            .collect();
        for line in output::table(&["Method", "API", "Timeout"], &rows, paint).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_leaves_out_zero_values() {
        let state: State = serde_json::from_str(
            r#"{"version":"v1","os":"linux","arch":"amd64","uptime":12,"num_cpu":2,"num_cpu_used":2,"mem_heap_used":10,"mem_stack_used":5,"keystore_latency":0}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            r#"{"version":"v1","os":"linux","arch":"amd64","uptime":12,"num_cpu":2,"num_cpu_used":2,"mem_heap_used":10,"mem_stack_used":5}"#
        );
    }

    /// The probe latency in each generation's unit (docs/compatibility.md): kes sends
    /// nanoseconds and `oldest_reader`; the Go servers of 2023-04…2025-03 milliseconds;
    /// 2023-02 nothing.
    #[test]
    fn keystore_latency_is_read_in_the_unit_each_generation_sends() {
        let kes: State = serde_json::from_str(
            r#"{"version":"0.1.0","uptime":5,"keystore_latency":204000,"oldest_reader":"current"}"#,
        )
        .unwrap();
        assert_eq!(kes.keystore_latency(), Some(Duration::from_micros(204)));
        let go_2025: State = serde_json::from_str(
            r#"{"version":"2025-03-12T09-35-18Z","uptime":5,"keystore_latency":3}"#,
        )
        .unwrap();
        assert_eq!(go_2025.keystore_latency(), Some(Duration::from_millis(3)));
        let go_2023_02: State =
            serde_json::from_str(r#"{"version":"2023-02-15T14-54-37Z","uptime":5000000000}"#)
                .unwrap();
        assert_eq!(go_2023_02.keystore_latency(), None);
        let text = |state: &State| {
            status_text(
                "h:1",
                state,
                Duration::ZERO,
                None,
                &[],
                false,
                false,
                Paint { enabled: false },
            )
        };
        assert!(
            text(&kes).contains("KeyStore 204µs latency\n"),
            "{}",
            text(&kes)
        );
        assert!(text(&go_2025).contains("KeyStore 3ms latency\n"));
        assert!(!text(&go_2023_02).contains("KeyStore"));
        // The 2023 servers' uptime is a Go duration in nanoseconds.
        assert_eq!(go_2023_02.uptime_seconds(), 5.0);
        assert!(text(&go_2023_02).contains("Uptime   5 seconds"));
        assert_eq!(go_2025.uptime_seconds(), 5.0);
        // --json keeps the SDK's shape: no oldest_reader.
        assert!(
            !serde_json::to_string(&kes)
                .unwrap()
                .contains("oldest_reader")
        );
    }

    #[test]
    fn certificate_line_says_when_and_how_soon() {
        let plain = Paint { enabled: false };
        let now = 1_700_000_000;
        assert_eq!(
            certificate_text(now + 40 * 86_400, now, plain),
            "expires 2023-12-24 22:13:20 UTC (in 40 days)"
        );
        assert_eq!(
            certificate_text(now + 5 * 3600 + 10, now, plain),
            "expires 2023-11-15 03:13:30 UTC (in 5 hours)"
        );
        assert_eq!(
            certificate_text(now - 1, now, plain),
            "expired 2023-11-14 22:13:19 UTC"
        );
        let colour = Paint { enabled: true };
        assert!(certificate_text(now + 20 * 86_400, now, colour).starts_with("\x1b[33m"));
        assert!(certificate_text(now + 3 * 86_400, now, colour).starts_with("\x1b[31m"));
        assert!(!certificate_text(now + 90 * 86_400, now, colour).contains('\x1b'));
    }

    #[test]
    fn text_has_every_line() {
        let state = State {
            version: "v1".into(),
            os: "linux".into(),
            uptime: 90.0,
            ..Default::default()
        };
        let apis = vec![Api {
            method: "GET".into(),
            path: "/v1/status".into(),
            max_body: 0,
            timeout: 15,
        }];
        let text = status_text(
            "127.0.0.1:7373",
            &state,
            Duration::from_millis(3),
            None,
            &apis,
            false,
            true,
            Paint { enabled: false },
        );
        for needle in [
            "● 127.0.0.1:7373",
            "Version  v1",
            "Uptime   2 minutes",
            "Latency  3ms",
            "Heap",
            "GET     /v1/status  15s",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }
}
