//! Command line: the options shared by every mode.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const USAGE: &str = "\
Usage:
    kes-bench --server URL (--cert FILE --key FILE | --api-key KEY) [options]
    kes-bench storm (options as above) [--storm-clients N]
    kes-bench flood (options as above) [--silent N] [--idle-tls N] [--slow N] [--churn N]
    kes-bench certs DIR
    kes-bench ready-time --server URL (credentials as above) -- COMMAND [ARGS...]

Load generator for any KES-compatible server (KES API over mTLS).

Options:
    --server URL          https://HOST:PORT of the server (default https://127.0.0.1:7373)
    --cert FILE --key FILE
                          Client certificate and private key (PEM)
    --api-key KEY         A kes:v1:... API key instead of --cert/--key
    --cacert FILE         CA certificate(s) to verify the server with (PEM)
    -k, --insecure        Do not verify the server's certificate
    --key-name NAME       Master key to use (default kes-bench); created if missing
    --existing-key        The key exists: do not ask the server to create it (a create
                          is a keystore call, which a server with a hanging keystore
                          cannot answer)
    --op OP               generate | decrypt | create-delete (default generate)
    --connections N       Concurrent connections, a thread each unless --event-loop
                          (default 8)
    --duration D          Run for D (e.g. 10s, 500ms, 1m; default 10s)
    --requests N          Stop after N requests in total instead
    --warmup D            Unmeasured run before the measured one (default 0s)
    --new-connection      A fresh TCP connection and full TLS handshake per request
                          (no session resumption): measures handshakes per second
    --event-loop          Drive the keep-alive connections from one thread's event
                          loop instead of a thread each, all opened before the clock
                          starts (generate and decrypt): lighter on a machine that
                          the server shares
    --stagger D           With --event-loop: the connections' first requests leave
                          spread evenly over D (default 50ms), not all at once
    --context TEXT        Context (associated data) for generate and decrypt
    --json                Print the result as JSON
    -h, --help            Show this help

`kes-bench storm` and `kes-bench flood` measure a keep-alive client's latency alone
and then under a handshake storm or a flood of silent and slow connections; see
`kes-bench storm --help`, `kes-bench flood --help`. They also take --good-connections N
(default 1), --settle D (default 1s) and --server-pid PID (server CPU from /proc).

`kes-bench certs DIR` writes a throw-away CA-less test PKI for benchmarks:
server.cert/server.key (localhost, 127.0.0.1) and client.cert/client.key, and
prints the client's identity.

`kes-bench ready-time ... -- COMMAND` starts COMMAND (a server), polls
GET /v1/status on a fresh TLS connection every millisecond until it answers 200,
prints the milliseconds from start to ready, then stops the server (SIGTERM).
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Generate,
    Decrypt,
    CreateDelete,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Generate => "generate",
            Op::Decrypt => "decrypt",
            Op::CreateDelete => "create-delete",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) server: String,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) api_key: Option<String>,
    pub(crate) cacert: Option<PathBuf>,
    pub(crate) insecure: bool,
    pub(crate) key_name: String,
    /// Skip the create before the run (`--existing-key`).
    pub(crate) existing_key: bool,
    pub(crate) op: Op,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    pub(crate) requests: Option<u64>,
    pub(crate) warmup: Duration,
    pub(crate) new_connection: bool,
    pub(crate) event_loop: bool,
    pub(crate) stagger: Duration,
    pub(crate) context: Option<String>,
    pub(crate) json: bool,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{s}' (e.g. 10s, 500ms, 1m)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// An option a mode adds to the common ones: called with the option's long name; takes
/// its value from the parser and returns true if it knows the option.
pub(crate) type ExtraOption<'a> =
    &'a mut dyn FnMut(&str, &mut lexopt::Parser) -> Result<bool, String>;

/// The value of the option just read, as text.
pub(crate) fn text(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| "argument is not valid text".to_string())
}

/// The value of option `--name` just read, parsed.
pub(crate) fn number<T: std::str::FromStr>(
    p: &mut lexopt::Parser,
    name: &str,
) -> Result<T, String> {
    text(p)?
        .parse()
        .map_err(|_| format!("--{name}: not a number"))
}

pub(crate) fn parse_args(args: Vec<OsString>) -> Result<Option<Args>, String> {
    parse_args_with(args, &mut |_, _| Ok(false))
}

pub(crate) fn parse_args_with(
    args: Vec<OsString>,
    extra: ExtraOption,
) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        server: "https://127.0.0.1:7373".into(),
        cert: None,
        key: None,
        api_key: None,
        cacert: None,
        insecure: false,
        key_name: "kes-bench".into(),
        existing_key: false,
        op: Op::Generate,
        connections: 8,
        duration: Duration::from_secs(10),
        requests: None,
        warmup: Duration::ZERO,
        new_connection: false,
        event_loop: false,
        stagger: Duration::from_millis(50),
        context: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("server") => a.server = text(&mut p)?,
            Long("cert") => a.cert = Some(text(&mut p)?.into()),
            Long("key") => a.key = Some(text(&mut p)?.into()),
            Long("api-key") => a.api_key = Some(text(&mut p)?),
            Long("cacert") => a.cacert = Some(text(&mut p)?.into()),
            Short('k') | Long("insecure") => a.insecure = true,
            Long("key-name") => a.key_name = text(&mut p)?,
            Long("existing-key") => a.existing_key = true,
            Long("op") => {
                a.op = match text(&mut p)?.as_str() {
                    "generate" => Op::Generate,
                    "decrypt" => Op::Decrypt,
                    "create-delete" => Op::CreateDelete,
                    other => return Err(format!("--op: unknown operation '{other}'")),
                }
            }
            Long("connections") | Short('c') => {
                a.connections = text(&mut p)?
                    .parse()
                    .map_err(|_| "--connections: not a number")?;
                if a.connections == 0 {
                    return Err("--connections must be at least 1".into());
                }
            }
            Long("duration") | Short('z') => a.duration = parse_duration(&text(&mut p)?)?,
            Long("requests") | Short('n') => {
                a.requests = Some(
                    text(&mut p)?
                        .parse()
                        .map_err(|_| "--requests: not a number")?,
                )
            }
            Long("warmup") => a.warmup = parse_duration(&text(&mut p)?)?,
            Long("new-connection") => a.new_connection = true,
            Long("event-loop") => a.event_loop = true,
            Long("stagger") => a.stagger = parse_duration(&text(&mut p)?)?,
            Long("context") => a.context = Some(text(&mut p)?),
            Long("json") => a.json = true,
            Short('h') | Long("help") => return Ok(None),
            other => {
                let long = match &other {
                    Long(name) => Some(name.to_string()),
                    _ => None,
                };
                let unexpected = other.unexpected().to_string();
                match long {
                    Some(name) if extra(&name, &mut p)? => {}
                    _ => return Err(unexpected),
                }
            }
        }
    }
    if a.event_loop && (a.new_connection || a.op == Op::CreateDelete) {
        return Err("--event-loop drives keep-alive generate or decrypt only".into());
    }
    if a.api_key.is_none() && (a.cert.is_none() || a.key.is_none()) {
        return Err("a client credential is needed: --cert FILE --key FILE, or --api-key".into());
    }
    if a.cacert.is_none() && !a.insecure {
        return Err("use --cacert FILE to verify the server, or -k/--insecure".into());
    }
    Ok(Some(a))
}

/// Host, port and the name to verify, from `https://host:port`.
pub(crate) fn parse_server(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("--server '{url}': must start with https://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| format!("--server '{url}': bad port"))?,
        ),
        _ => (rest, 7373),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}
