//! `kes log`: follows the server's audit (default) or error log until interrupted.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde::Deserialize;

use super::args::{self, INSECURE, JSON};
use super::client::Client;
use super::output::{self, Paint};
use super::{Exit, Outcome};

const USAGE: &str = "Usage:
    kes log [options]

Commands:
    trace                    The same for releases up to v0.18: 'kes log trace --type error'.

Options:
    --audit                  Print audit logs. (default)
    --error                  Print error logs.
    --json                   Print log events as JSON (the default when not on a terminal).

    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Prints events as they happen until interrupted with Ctrl-C.

Examples:
    $ kes log
    $ kes log --error
    $ kes log --json > audit.ndjson
";

/// One audit event. `response.time` is read as nanoseconds, like the Go SDK does.
#[derive(Debug, Default, Deserialize)]
struct AuditEvent {
    #[serde(default)]
    time: String,
    #[serde(default)]
    request: AuditRequest,
    #[serde(default)]
    response: AuditResponse,
}

#[derive(Debug, Default, Deserialize)]
struct AuditRequest {
    #[serde(default)]
    ip: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    identity: String,
}

#[derive(Debug, Default, Deserialize)]
struct AuditResponse {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    time: u64,
}

const TRACE_USAGE: &str = "Usage:
    kes log trace [options]

Options:
    --type {audit|error|metric}   The log event type. (default: audit)
    --json                        Print log events as JSON.
    -k, --insecure                Skip TLS certificate validation.
    -h, --help                    Print command line options.

The form of releases up to v0.18; the same as 'kes log --audit', 'kes log --error'
and 'kes metric'.

Examples:
    $ kes log trace
    $ kes log trace --type error
";

/// `kes log trace --type …` of releases ≤ v0.18.
fn trace(raw: Vec<OsString>) -> Outcome {
    let flags = [INSECURE, JSON, args::option("type", None)];
    let parsed = args::parse("kes log trace", TRACE_USAGE, &flags, raw)?;
    if !parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "too many arguments. See 'kes log trace --help'".into(),
        ));
    }
    let mut forwarded: Vec<OsString> = Vec::new();
    if parsed.has("insecure") {
        forwarded.push("--insecure".into());
    }
    match parsed.value("type").unwrap_or("audit") {
        "metric" => return super::metric::run(forwarded),
        "audit" => forwarded.push("--audit".into()),
        "error" => forwarded.push("--error".into()),
        other => {
            return Err(Exit::Error(format!(
                "invalid log type --type: {other:?}: use audit, error or metric"
            )));
        }
    }
    if parsed.has("json") {
        forwarded.push("--json".into());
    }
    run(forwarded)
}

/// `kes log`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    if raw.first().is_some_and(|a| a == "trace") {
        return trace(raw[1..].to_vec());
    }
    let flags = [
        INSECURE,
        JSON,
        args::switch("audit", None),
        args::switch("error", None),
    ];
    let parsed = args::parse("kes log", USAGE, &flags, raw)?;
    if !parsed.positionals.is_empty() {
        return Err(Exit::Error(
            "too many arguments. See 'kes log --help'".into(),
        ));
    }
    if parsed.has("audit") && parsed.has("error") {
        return Err(Exit::Error(
            "cannot display audit and error logs at the same time".into(),
        ));
    }
    let audit = !parsed.has("error");
    let client = Client::for_command(&parsed)?;
    let path = if audit {
        "/v1/log/audit"
    } else {
        "/v1/log/error"
    };
    let which = if audit { "audit" } else { "error" };
    let stream = client
        .stream(path)
        .map_err(|e| Exit::Error(format!("failed to connect to {which} log: {e}")))?;
    let raw_json = parsed.has("json") || !output::stdout_is_terminal();
    let paint = Paint {
        enabled: output::colorize(None)?,
    };

    if audit && !raw_json {
        output::print(&format!(
            "{}\n",
            paint.bold(&paint.underline(&audit_line([
                "Time", "Status", "Identity", "IP", "API", "Latency"
            ])))
        ))?;
    }
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => {
                return Err(Exit::Error(format!(
                    "the server closed the {which} log stream"
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(Exit::Error(format!("reading the {which} log stream: {e}"))),
        }
        let event = line.trim_end_matches(['\r', '\n']);
        if event.trim().is_empty() {
            continue;
        }
        let text = if raw_json {
            format!("{event}\n")
        } else if audit {
            format_audit_event(event, paint)
        } else {
            format_error_event(event)
        };
        output::print(&text)?;
    }
}

fn audit_line(cells: [&str; 6]) -> String {
    let identity: String = cells[2].chars().take(20).collect();
    format!(
        "{:<8}  {:<6}  {:<20}  {:<15}  {:<30}  {}",
        cells[0], cells[1], identity, cells[3], cells[4], cells[5]
    )
}

fn format_audit_event(line: &str, paint: Paint) -> String {
    let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
        return format!("{line}\n");
    };
    let clock = event.time.get(11..19).unwrap_or("--:--:--").to_owned();
    let ip = if event.request.ip.is_empty() {
        "<unknown>".to_owned()
    } else {
        event.request.ip
    };
    let latency = output::format_duration(Duration::from_nanos(event.response.time));
    let status = event.response.code.to_string();
    let row = audit_line([
        &clock,
        &status,
        &event.request.identity,
        &ip,
        &event.request.path,
        &latency,
    ]);
    if !paint.enabled {
        return format!("{row}\n");
    }
    // Colour the status column (it starts after the 8-character time and two spaces).
    let (head, tail) = row.split_at(10);
    let (status_cell, rest) = tail.split_at(6);
    let status_cell = if event.response.code == 200 {
        paint.green(status_cell)
    } else {
        paint.red(status_cell)
    };
    format!("{head}{status_cell}{rest}\n")
}

fn format_error_event(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => match value.get("message").and_then(|m| m.as_str()) {
            Some(message) => format!("{message}\n"),
            None => format!("{line}\n"),
        },
        Err(_) => format!("{line}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows() {
        let line = r#"{"time":"2024-03-01T10:11:12.5Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/k","identity":"0123456789abcdef0123456789abcdef"},"response":{"code":200,"time":1500000}}"#;
        let row = format_audit_event(line, Paint { enabled: false });
        assert!(
            row.starts_with(
                "10:11:12  200     0123456789abcdef0123  127.0.0.1        /v1/key/create/k"
            ),
            "{row}"
        );
        assert!(row.trim_end().ends_with("1.5ms"), "{row}");
    }

    #[test]
    fn error_rows() {
        assert_eq!(format_error_event(r#"{"message":"boom"}"#), "boom\n");
        assert_eq!(format_error_event("not json"), "not json\n");
    }

    #[test]
    fn old_trace_form_is_checked() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(
            matches!(run(args(&["trace", "--type", "nope"])), Err(Exit::Error(m)) if m.contains("invalid log type"))
        );
        assert!(matches!(
            run(args(&["trace", "-h"])),
            Err(Exit::Help(TRACE_USAGE))
        ));
    }

    #[test]
    fn both_streams_at_once_is_an_error() {
        let args = ["--audit", "--error"].iter().map(OsString::from).collect();
        assert!(matches!(run(args), Err(Exit::Error(m)) if m.contains("same time")));
    }
}
