//! `kes server`: flags, start-up, signals and reload.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Limits, Server};
use crate::config::Config;
use crate::state::{Live, State};
use crate::tls::{self, ClientAuth};

/// `kes server --help`; also read by the man pages and completions (cli::doc).
pub(crate) const USAGE: &str = "\
Usage:
    kes server --config FILE [--addr IP:PORT] [--auth on|off]
    kes server --dev [--addr IP:PORT]

Starts a KES server.

Options:
    --config FILE        Config file (YAML); every generation of the original loads.
    --addr IP:PORT       Address to listen on; overrides 'address' of the config
                         (default 0.0.0.0:7373, with --dev 127.0.0.1:7373).
    --auth on|off        Verify client certificates against 'tls.ca' (on) or accept
                         any client certificate and rely on its identity (off, default).
                         'tls.auth' in the config means the same.
    --dev                Start a throw-away development server: keys in memory, a fresh
                         self-signed certificate and admin credential. Nothing to set up.
    --key FILE, --cert FILE
                         TLS private key and certificate; override the config (2023 form).
    --loops N            Event-loop threads serving connections (default: one per core).
    --handshake-threads N
                         Threads for the TLS handshakes of new connections, at a lower
                         CPU priority than the event loops (default: one per core);
                         0 runs handshakes on the event loops.
    --workers N          Threads for requests that may wait for the keystore (default 4
                         per core, 4 to 64); cached keys are served without them.
    --max-connections N  Open connections at most (default 4096); more are refused.
    --cm-calls N         CipherTrust calls of resident keys in flight at most, all event
                         loops together (default 256); each loop makes its share itself.
    --cm-connections N   Connections the event loops keep to CipherTrust (default 256).
    --cm-queue N         Calls waiting for room at most (default 1024); more get 503.
    --cm-queue-timeout D How long a call may wait for room (default 2s), then 503.
    -h, --help           Show this help.

Signals: SIGHUP reloads the config (policies, identities, TLS certificate);
SIGTERM and SIGINT stop gracefully, finishing requests in flight.

Examples:
    kes server --dev
    kes server --config /etc/kes/config.yml --auth off
";

#[derive(Debug, Default)]
struct Flags {
    config: Option<PathBuf>,
    addr: Option<String>,
    auth: Option<bool>,
    dev: bool,
    key: Option<PathBuf>,
    cert: Option<PathBuf>,
    root: Option<String>,
    limits: Limits,
}

fn parse_flags(args: Vec<OsString>) -> Result<Option<Flags>, String> {
    use lexopt::prelude::*;
    let mut flags = Flags::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let text = |parser: &mut lexopt::Parser| -> Result<String, String> {
            parser
                .value()
                .map_err(|e| e.to_string())?
                .into_string()
                .map_err(|_| "argument is not valid text".to_string())
        };
        match arg {
            Long("config") => flags.config = Some(text(&mut parser)?.into()),
            Long("addr") => flags.addr = Some(text(&mut parser)?),
            Long("auth") => {
                let value = text(&mut parser)?;
                flags.auth = Some(
                    value
                        .parse::<crate::config::AuthMode>()
                        .map_err(|e| format!("--auth: {e}"))?
                        .0,
                );
            }
            Long("dev") => flags.dev = true,
            Long("key") => flags.key = Some(text(&mut parser)?.into()),
            Long("cert") => flags.cert = Some(text(&mut parser)?.into()),
            Long("root") => flags.root = Some(text(&mut parser)?),
            // Memory is always locked where permitted; the old flag is accepted.
            Long("mlock") => {}
            Long("loops") => {
                flags.limits.loops = thread_count(&text(&mut parser)?, "loops", 1)?;
            }
            Long("handshake-threads") => {
                flags.limits.handshakers =
                    thread_count(&text(&mut parser)?, "handshake-threads", 0)?;
            }
            Long("workers") => {
                flags.limits.workers = text(&mut parser)?
                    .parse()
                    .map_err(|_| "--workers: not a number")?;
            }
            Long("max-connections") => {
                flags.limits.max_connections = text(&mut parser)?
                    .parse()
                    .map_err(|_| "--max-connections: not a number")?;
            }
            Long("cm-calls") => {
                flags.limits.cm_calls = bounded(&text(&mut parser)?, "cm-calls", 1, 65_536)?;
            }
            Long("cm-connections") => {
                flags.limits.cm_connections =
                    bounded(&text(&mut parser)?, "cm-connections", 1, 65_536)?;
            }
            Long("cm-queue") => {
                flags.limits.cm_queue = bounded(&text(&mut parser)?, "cm-queue", 0, 1 << 20)?;
            }
            Long("cm-queue-timeout") => {
                let value = text(&mut parser)?;
                flags.limits.cm_queue_timeout = value
                    .parse::<crate::config::GoDuration>()
                    .ok()
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero() && *d <= std::time::Duration::from_secs(60))
                    .ok_or_else(|| {
                        format!("--cm-queue-timeout: a duration from 1ms to 60s, such as 2s or 500ms, not '{value}'")
                    })?;
            }
            Short('h') | Long("help") => return Ok(None),
            Value(v) => {
                return Err(format!(
                    "unexpected argument '{}': the stateful 'kes server <dir>' of 2023 is not supported; use --config FILE",
                    v.to_string_lossy()
                ));
            }
            other => return Err(format!("{}; see 'kes server --help'", other.unexpected())),
        }
    }
    if flags.dev && flags.config.is_some() {
        return Err("--dev and --config cannot be used together".into());
    }
    if !flags.dev && flags.config.is_none() {
        return Err(
            "no config file: use --config FILE, or --dev for a throw-away development server"
                .into(),
        );
    }
    Ok(Some(flags))
}

/// Runs `kes server` with the arguments after `server`; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let flags = match parse_flags(args) {
        Ok(Some(flags)) => flags,
        Ok(None) => {
            eprint!("{USAGE}");
            return 2;
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    match run(flags) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

fn run(flags: Flags) -> Result<(), String> {
    let dev = if flags.dev {
        Some(super::dev::Dev::create()?)
    } else {
        None
    };
    let mut config = match &dev {
        Some(dev) => dev.config(),
        None => Config::load(flags.config.as_deref().unwrap_or(Path::new("")))
            .map_err(|e| e.to_string())?,
    };
    apply_flags(&mut config, &flags);
    crate::logging::init(&config.log);
    crate::memory::harden();

    let keystore = crate::keystore::open(&config.keystore)?;
    let intermediate = match &config.keystore {
        crate::config::KeyStoreConfig::CipherTrust(settings) => settings.intermediate_key,
        _ => None,
    };
    let keys = crate::keys::Keys::new(keystore, config.cache, intermediate);
    create_listed_keys(&keys, &config.keys, config.oldest_reader)?;
    let tls_config = build_tls(&config)?;
    let addr = flags
        .addr
        .clone()
        .or_else(|| config.address.clone())
        .unwrap_or_else(|| {
            if dev.is_some() {
                "127.0.0.1:7373".into()
            } else {
                "0.0.0.0:7373".into()
            }
        });
    let addr = parse_addr(&addr)?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    widen_backlog(&listener);
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let state = Arc::new(State::new(Live::new(config, tls_config), keys));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let server = Server::start(listener, state.clone(), flags.limits).map_err(|e| e.to_string())?;

    match &dev {
        Some(dev) => dev.print_banner(local),
        None => {
            super::renew::spawn(state.clone(), build_tls)
                .map_err(|e| format!("cannot start the certificate watcher: {e}"))?;
            print_banner(&state, local);
        }
    }
    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&state, &flags),
            _ => {
                log::info!("stopping: finishing requests in flight");
                break;
            }
        }
    }
    server.shutdown();
    drop(dev);
    Ok(())
}

fn apply_flags(config: &mut Config, flags: &Flags) {
    if let Some(auth) = flags.auth {
        config.tls_auth = Some(auth);
    }
    if let Some(key) = &flags.key {
        config.tls_key = key.clone();
    }
    if let Some(cert) = &flags.cert {
        config.tls_cert = cert.clone();
    }
    if let Some(root) = &flags.root {
        config.admin = crate::identity::is_identity(root).then(|| root.to_ascii_lowercase());
    }
}

fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .map_err(|_| format!("invalid address '{addr}': use IP:PORT, e.g. 127.0.0.1:7373"))
}

fn build_tls(config: &Config) -> Result<Arc<rustls::ServerConfig>, String> {
    let client = ClientAuth {
        verify: config.tls_auth.unwrap_or(false),
        ca: config.tls_ca.clone(),
        optional: config.api.values().any(|o| o.skip_auth),
    };
    tls::server_config(&config.tls_cert, &config.tls_key, &client)
}

/// Creates the keys listed under `keys:` that do not exist yet.
fn create_listed_keys(
    keys: &crate::keys::Keys,
    names: &[String],
    reader: crate::crypto::OldestReader,
) -> Result<(), String> {
    for name in names {
        keys.ensure_key(name, reader)
            .map_err(|e| format!("cannot create key '{name}' listed under 'keys:': {e}"))?;
    }
    Ok(())
}

fn reload(state: &State, flags: &Flags) {
    let Some(path) = flags.config.as_deref() else {
        log::info!("SIGHUP: --dev has no config file to reload");
        return;
    };
    let _reloading = crate::sync::lock(&state.reloading);
    let result = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|mut config| {
            apply_flags(&mut config, flags);
            if config.keystore != state.live().config.keystore {
                log::warn!("SIGHUP: the keystore section changed; restart kes to switch keystores");
            }
            let tls = build_tls(&config)?;
            Ok(Live::new(config, tls))
        });
    match result {
        Ok(live) => {
            let (before, after) = (state.live().config.oldest_reader, live.config.oldest_reader);
            state.replace_live(live);
            if before != after {
                log::info!(
                    "SIGHUP: compat.oldest_reader is now {after} (was {before}): writing {}",
                    after.forms()
                );
            }
            log::info!("SIGHUP: reloaded {}", path.display());
        }
        Err(e) => log::error!("SIGHUP: keeping the running config: {e}"),
    }
}

fn print_banner(state: &State, local: SocketAddr) {
    let live = state.live();
    let admin = live
        .config
        .admin
        .clone()
        .unwrap_or_else(|| "disabled".into());
    eprintln!(
        "kes {} listening on https://{local}",
        crate::api::sys::VERSION
    );
    eprintln!("  keystore: {}", state.keys.describe_store());
    eprintln!("  admin:    {admin}");
    let reader = live.config.oldest_reader;
    eprintln!(
        "  oldest reader: {reader} (compat.oldest_reader; writes {})",
        reader.forms()
    );
    eprintln!(
        "  client certificates: {}",
        if live.config.tls_auth.unwrap_or(false) {
            "verified against tls.ca (auth on)"
        } else {
            "any, identified by public key (auth off)"
        }
    );
}

/// Lets the kernel queue as many not-yet-accepted connections as it allows (the
/// `net.core.somaxconn` cap, 4096 on current kernels), as Go's listener does. The
/// standard library listens with a backlog of 128, which a burst of new connections (MinIO
/// nodes restarting together) overflows: each dropped SYN costs its client a 1 s
/// retransmission. Calling `listen` again on a listening socket only changes its backlog.
fn widen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` on a socket this function borrows; no memory is passed.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), libc::c_int::MAX) };
    if rc != 0 {
        log::debug!(
            "cannot widen the listen backlog: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A number of threads for `--flag`, from `min` to 64.
/// A number from `min` to `max` for `--flag`.
fn bounded(value: &str, flag: &str, min: usize, max: usize) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("--{flag}: a number from {min} to {max}"))
}

fn thread_count(value: &str, flag: &str, min: usize) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (min..=64).contains(n))
        .ok_or_else(|| format!("--{flag}: a number from {min} to 64"))
}
