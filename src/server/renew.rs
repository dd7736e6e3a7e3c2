//! Certificates that renew themselves: the server's certificate, key and client CA files
//! are checked every few seconds, and a changed set is loaded as a SIGHUP would load it.
//!
//! Appliances renew certificates with an agent (ACME, an internal CA) that only writes
//! the files; without this, kes would serve the old certificate until someone sent a
//! signal, and past its expiry every client would fail. New connections get the new
//! certificate; connections already open keep theirs. A pair that does not load (half
//! written, key and certificate not yet matching) keeps the running one, with one error
//! in the log per change of the files; the next change is tried again.
//!
//! The same thread warns of certificates close to expiry (`super::expiry`), at start and
//! on every turn, so that a renewal or a SIGHUP that brings a short-lived certificate is
//! warned about within one interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::expiry::{Role, Warner};
use crate::state::State;

/// How often the files are looked at: a `stat` of three files, nothing more.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The stamps of the TLS files the running config names (a missing file: `None`).
fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some(Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: meta.ino(),
            })
        })
        .collect()
}

/// The files whose change reloads TLS: certificate, key, and the client CA file or
/// directory.
fn tls_files(state: &State) -> Vec<PathBuf> {
    let live = state.live();
    let config = &live.config;
    let mut files = vec![config.tls_cert.clone(), config.tls_key.clone()];
    files.extend(config.tls_ca.clone());
    files
}

/// Starts the watcher thread. `build` makes the TLS config from a config, as at startup.
pub fn spawn(
    state: Arc<State>,
    build: fn(&crate::config::Config) -> Result<Arc<rustls::ServerConfig>, String>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kes-cert-watch".into())
        .spawn(move || {
            let mut files = tls_files(&state);
            let mut seen = stamps(&files);
            let mut warner = Warner::default();
            loop {
                warn_of_expiry(&state, &mut warner);
                std::thread::sleep(INTERVAL);
                // A SIGHUP may have named other files.
                let now_files = tls_files(&state);
                if now_files != files {
                    files = now_files;
                    seen = stamps(&files);
                    continue;
                }
                let now = stamps(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                match state.reload_tls(build) {
                    Ok(()) => log::info!(
                        "tls: the certificate files changed; new connections get {}{}",
                        files[0].display(),
                        valid_until(&state)
                    ),
                    Err(e) => log::error!(
                        "tls: the certificate files changed but do not load, keeping the running certificate: {e}"
                    ),
                }
            }
        })
        .map(|_| ())
}

/// Logs the expiry warnings that are due for the certificates in use.
fn warn_of_expiry(state: &State, warner: &mut Warner) {
    let now = crate::timefmt::now().0;
    for (level, message) in warner.check(&state.live().certs, now) {
        log::log!(level, "{message}");
    }
}

/// ", valid until …" for the server certificate now in use.
fn valid_until(state: &State) -> String {
    state
        .live()
        .certs
        .iter()
        .find(|c| c.role == Role::Server)
        .map(|c| {
            format!(
                ", valid until {}",
                crate::timefmt::format_rfc3339(c.not_after, 0)
            )
        })
        .unwrap_or_default()
}
