//! When the certificates the server depends on stop being valid: its own certificate and
//! the `tls.ca` certificates that client certificates are verified against.
//!
//! An expired server certificate is the most common way a key server goes dark, and with
//! it every object store behind it. So the not-after times are exported as metrics (an
//! alert can watch them), and the error log warns 30, 14, 7 and 1 days ahead: once per
//! threshold and certificate, at start for the threshold already crossed, and again for a
//! renewed certificate that is itself short-lived. The certificate watcher
//! (`crate::server::renew`) calls [`Warner::check`] every few seconds, so a certificate picked up
//! on renewal or SIGHUP is looked at within one interval.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Days before expiry at which the log warns, widest first.
pub const THRESHOLD_DAYS: [i64; 4] = [30, 14, 7, 1];

const SECS_PER_DAY: i64 = 86_400;

/// What a certificate is to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The certificate the server presents (the first of `tls.cert`).
    Server,
    /// A certificate of `tls.ca`.
    Ca,
}

impl Role {
    /// The `role` label of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Ca => "ca",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Role::Server => "the server certificate",
            Role::Ca => "the tls.ca certificate",
        }
    }

    /// What stops working when it expires, and what to do.
    fn consequence(self) -> &'static str {
        match self {
            Role::Server => "clients refuse an expired server certificate: renew it",
            Role::Ca => {
                "client certificates it issued stop being accepted when it expires: replace it"
            }
        }
    }
}

/// One certificate and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    pub role: Role,
    /// The subject as RFC 4514 text, e.g. `CN=kes.example.com`.
    pub subject: String,
    /// The serial number in lowercase hex.
    pub serial: String,
    pub path: PathBuf,
    /// The end of validity, in Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER: tells a renewed certificate from the one before.
    fingerprint: [u8; 32],
}

/// The certificates `config` names: the server's leaf certificate and, when `tls.ca` is
/// set, each of its certificates. Files that do not read (a `tls.ca` that is unused with
/// `auth: off` may not exist) contribute nothing; loading the TLS config reports them.
pub fn of_config(config: &Config) -> Vec<CertExpiry> {
    let mut certs = Vec::new();
    if let Ok(chain) = crate::pem::load_certs(&config.tls_cert) {
        certs.extend(parse(Role::Server, &config.tls_cert, &chain[..1]));
    }
    if let Some(ca) = &config.tls_ca {
        for file in crate::pem::ca_files(ca).unwrap_or_default() {
            if let Ok(all) = crate::pem::load_certs(&file) {
                certs.extend(parse(Role::Ca, &file, &all));
            }
        }
    }
    certs
}

fn parse(
    role: Role,
    path: &Path,
    ders: &[rustls::pki_types::CertificateDer<'_>],
) -> Vec<CertExpiry> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    ders.iter()
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            let serial = cert
                .raw_serial()
                .iter()
                .fold(String::new(), |mut hex, byte| {
                    let _ = write!(hex, "{byte:02x}");
                    hex
                });
            Some(CertExpiry {
                role,
                subject: cert.subject().to_string(),
                serial,
                path: path.to_path_buf(),
                not_after: cert.validity().not_after.timestamp(),
                fingerprint: Sha256::digest(der.as_ref()).into(),
            })
        })
        .collect()
}

/// The Prometheus family of the not-after times, one sample per certificate.
pub fn render_metrics(out: &mut String, certs: &[CertExpiry]) {
    let samples: Vec<_> = certs
        .iter()
        .map(|c| {
            (
                vec![
                    ("role", c.role.label()),
                    ("subject", c.subject.as_str()),
                    ("serial", c.serial.as_str()),
                ],
                c.not_after as f64,
            )
        })
        .collect();
    crate::observe::labelled(
        out,
        "kes_tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "When a certificate stops being valid (not after), in Unix seconds; role is server or ca.",
        &samples,
    );
}

/// How far a certificate has come towards expiry: the index of the tightest threshold
/// of [`THRESHOLD_DAYS`] crossed, or `THRESHOLD_DAYS.len()` once expired.
fn stage(not_after: i64, now: i64) -> Option<usize> {
    let left = not_after - now;
    if left <= 0 {
        return Some(THRESHOLD_DAYS.len());
    }
    THRESHOLD_DAYS
        .iter()
        .rposition(|days| left <= days * SECS_PER_DAY)
}

/// "in 9 days", "in 23 hours", "in 5 minutes": the time left, rounded down.
pub fn time_left(secs: i64) -> String {
    let (n, unit) = if secs >= SECS_PER_DAY {
        (secs / SECS_PER_DAY, "day")
    } else if secs >= 3600 {
        (secs / 3600, "hour")
    } else {
        ((secs / 60).max(1), "minute")
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Remembers which warnings were given, so that each is given once per certificate.
#[derive(Debug, Default)]
pub struct Warner {
    /// Fingerprint → the stage last warned about.
    warned: HashMap<[u8; 32], usize>,
}

impl Warner {
    /// The warnings due for `certs` at `now` (Unix seconds), each with its level:
    /// a certificate that crossed a threshold it was not warned about yet gets one
    /// warning (for the tightest threshold crossed); an expired one gets one error.
    pub fn check(&mut self, certs: &[CertExpiry], now: i64) -> Vec<(log::Level, String)> {
        self.warned
            .retain(|fp, _| certs.iter().any(|c| &c.fingerprint == fp));
        let mut due = Vec::new();
        for cert in certs {
            let Some(stage) = stage(cert.not_after, now) else {
                continue;
            };
            if self
                .warned
                .get(&cert.fingerprint)
                .is_some_and(|warned| *warned >= stage)
            {
                continue;
            }
            self.warned.insert(cert.fingerprint, stage);
            due.push(message(cert, stage, now));
        }
        due
    }
}

fn message(cert: &CertExpiry, stage: usize, now: i64) -> (log::Level, String) {
    let what = format!(
        "tls: {} {} (serial {}, {})",
        cert.role.describe(),
        cert.subject,
        cert.serial,
        cert.path.display()
    );
    let at = crate::timefmt::format_rfc3339(cert.not_after, 0);
    if stage == THRESHOLD_DAYS.len() {
        return (
            log::Level::Error,
            format!("{what} has expired at {at}; {}", cert.role.consequence()),
        );
    }
    (
        log::Level::Warn,
        format!(
            "{what} expires {}, at {at} (within {}); {}",
            time_left(cert.not_after - now),
            match THRESHOLD_DAYS[stage] {
                1 => "1 day".to_string(),
                days => format!("{days} days"),
            },
            cert.role.consequence()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(role: Role, not_after: i64, id: u8) -> CertExpiry {
        CertExpiry {
            role,
            subject: "CN=kes".into(),
            serial: "01".into(),
            path: "/etc/kes/server.cert".into(),
            not_after,
            fingerprint: [id; 32],
        }
    }

    const DAY: i64 = SECS_PER_DAY;

    #[test]
    fn stages_follow_the_thresholds() {
        assert_eq!(stage(31 * DAY, 0), None);
        assert_eq!(stage(30 * DAY, 0), Some(0));
        assert_eq!(stage(10 * DAY, 0), Some(1));
        assert_eq!(stage(7 * DAY, 0), Some(2));
        assert_eq!(stage(DAY, 0), Some(3));
        assert_eq!(stage(1, 0), Some(3));
        assert_eq!(stage(0, 0), Some(4));
        assert_eq!(stage(-5, 0), Some(4));
    }

    #[test]
    fn each_threshold_warns_once_and_at_start_only_the_tightest() {
        let mut warner = Warner::default();
        let certs = [cert(Role::Server, 10 * DAY, 1)];
        let first = warner.check(&certs, 0);
        assert_eq!(first.len(), 1);
        assert!(first[0].1.contains("within 14 days"), "{first:?}");
        assert!(first[0].1.contains("in 10 days"), "{first:?}");
        assert_eq!(first[0].0, log::Level::Warn);
        assert!(warner.check(&certs, 60).is_empty());
        // Three days on: inside 7 days.
        let later = warner.check(&certs, 3 * DAY + 1);
        assert_eq!(later.len(), 1);
        assert!(later[0].1.contains("within 7 days"), "{later:?}");
        assert!(warner.check(&certs, 4 * DAY).is_empty());
        let last_day = warner.check(&certs, 9 * DAY + 3600);
        assert!(last_day[0].1.contains("in 23 hours"), "{last_day:?}");
        let expired = warner.check(&certs, 10 * DAY);
        assert_eq!(expired[0].0, log::Level::Error);
        assert!(last_day[0].1.contains("(within 1 day)"), "{last_day:?}");
        assert!(expired[0].1.contains("has expired"), "{expired:?}");
        assert!(warner.check(&certs, 11 * DAY).is_empty());
    }

    #[test]
    fn a_renewed_certificate_is_a_new_one() {
        let mut warner = Warner::default();
        assert_eq!(warner.check(&[cert(Role::Server, 5 * DAY, 1)], 0).len(), 1);
        // Renewed, but only for 20 days: its own 30-day warning.
        let renewed = [cert(Role::Server, 20 * DAY, 2)];
        let due = warner.check(&renewed, 0);
        assert_eq!(due.len(), 1);
        assert!(due[0].1.contains("within 30 days"), "{due:?}");
        // The old one is forgotten.
        assert_eq!(warner.warned.len(), 1);
        // Renewed for a year: nothing to say.
        assert!(
            warner
                .check(&[cert(Role::Server, 365 * DAY, 3)], 0)
                .is_empty()
        );
    }

    #[test]
    fn ca_certificates_are_warned_about_with_their_consequence() {
        let mut warner = Warner::default();
        let due = warner.check(&[cert(Role::Ca, 2 * DAY, 7)], 0);
        assert!(
            due[0].1.starts_with("tls: the tls.ca certificate CN=kes")
                && due[0].1.contains("client certificates it issued"),
            "{due:?}"
        );
    }

    #[test]
    fn time_left_rounds_down() {
        assert_eq!(time_left(DAY), "in 1 day");
        assert_eq!(time_left(2 * DAY - 1), "in 1 day");
        assert_eq!(time_left(7200), "in 2 hours");
        assert_eq!(time_left(30), "in 1 minute");
    }
}
