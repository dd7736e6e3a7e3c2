//! Certificate expiry through the real binary, with short-lived certificates made here:
//! the not-after metrics of the server and `tls.ca` certificates, the warnings in the
//! error log (at start, when a threshold is crossed while running, after a renewal and
//! after a SIGHUP), and `kes status` showing when the served certificate expires.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kes, Pki};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

const DAY: u64 = 86_400;

/// Unix seconds `secs` from now, as a certificate holds them (whole seconds).
fn from_now(secs: u64) -> (SystemTime, i64) {
    let at = SystemTime::now() + Duration::from_secs(secs);
    let unix = at.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    (UNIX_EPOCH + Duration::from_secs(unix as u64), unix)
}

/// A server certificate for 127.0.0.1 issued by the test CA that expires `secs` from now,
/// written to `cert`/`key`; returns its not-after in Unix seconds.
fn short_lived_server(pki: &Pki, cert: &Path, key: &Path, cn: &str, secs: u64) -> i64 {
    let (ca_key, ca_cert) = pki.ca();
    let pair = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (not_after, unix) = from_now(secs);
    params.not_after = not_after.into();
    let issued = params.signed_by(&pair, ca_cert, ca_key).unwrap();
    // Key first, then the certificate, as a renewal agent writes them.
    std::fs::write(key, pair.serialize_pem()).unwrap();
    std::fs::write(cert, issued.pem()).unwrap();
    unix
}

/// A self-signed CA certificate that expires `secs` from now, as PEM.
fn short_lived_ca(cn: &str, secs: u64) -> (String, i64) {
    let pair = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let (not_after, unix) = from_now(secs);
    params.not_after = not_after.into();
    (params.self_signed(&pair).unwrap().pem(), unix)
}

fn wait_for(kes: &Kes, what: &str, limit: Duration, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(&kes.stderr()) {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; stderr:\n{}",
            kes.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The not-after sample of the certificate with common name `cn`.
fn not_after_metric(scrape: &str, role: &str, cn: &str) -> Option<i64> {
    let prefix = format!(
        "kes_tls_certificate_expiry_timestamp_seconds{{role=\"{role}\",subject=\"CN={cn}\","
    );
    scrape
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse::<f64>().unwrap() as i64)
}

/// Lines of stderr that mention `needle`.
fn lines_with(stderr: &str, needle: &str) -> usize {
    stderr.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn expiry_is_exported_and_warned_about_at_start_on_crossing_renewal_and_sighup() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    // tls.ca: the test CA and a second CA that expires in 20 days.
    let (short_ca, short_ca_not_after) = short_lived_ca("short-lived CA", 20 * DAY);
    let ca_file = pki.path("clients-ca.pem");
    std::fs::write(
        &ca_file,
        format!(
            "{}{short_ca}",
            std::fs::read_to_string(&pki.ca_path).unwrap()
        ),
    )
    .unwrap();
    let config = pki.config(
        "config.yml",
        &format!(
            "tls:\n  ca: {}\nadmin:\n  identity: {}\nkeystore:\n  fs:\n    path: {}\n",
            ca_file.display(),
            admin.identity,
            pki.path("keys").display()
        ),
    );
    let (cert, key) = (pki.path("server.cert"), pki.path("server.key"));
    let first = short_lived_server(&pki, &cert, &key, "kes-first", 10 * DAY + 3600);
    let kes = Kes::start(&pki, &config, &[]);

    // At start: one warning per certificate, for the tightest threshold crossed.
    wait_for(&kes, "the start warnings", Duration::from_secs(10), |err| {
        err.contains("short-lived CA") && err.contains("CN=kes-first")
    });
    let err = kes.stderr();
    let server_line = err
        .lines()
        .find(|l| l.contains("CN=kes-first"))
        .unwrap()
        .to_string();
    assert!(
        server_line.contains("[WARN]")
            && server_line.contains("the server certificate CN=kes-first")
            && server_line.contains("expires in 10 days")
            && server_line.contains("(within 14 days)")
            && server_line.contains("renew it"),
        "{server_line}"
    );
    assert_eq!(lines_with(&err, "CN=kes-first"), 1, "{err}");
    let ca_line = err.lines().find(|l| l.contains("short-lived CA")).unwrap();
    assert!(
        ca_line.contains("the tls.ca certificate") && ca_line.contains("(within 30 days)"),
        "{ca_line}"
    );
    // The test CA (valid for years) is not warned about.
    assert!(!err.contains("kes test CA"), "{err}");

    // The metrics: one sample per certificate, in Unix seconds.
    let scrape = kes.client(&admin).get("/v1/metrics").text();
    assert!(
        scrape.contains("# TYPE kes_tls_certificate_expiry_timestamp_seconds gauge"),
        "{scrape}"
    );
    assert_eq!(
        not_after_metric(&scrape, "server", "kes-first"),
        Some(first)
    );
    assert_eq!(
        not_after_metric(&scrape, "ca", "short-lived CA"),
        Some(short_ca_not_after)
    );
    assert!(not_after_metric(&scrape, "ca", "kes test CA").is_some());

    // `kes status` on a terminal shows when the served certificate expires.
    let status = status_on_terminal(&kes, &pki, &admin);
    assert!(
        status.contains("TLS cert expires") && status.contains("(in 10 days)"),
        "{status}"
    );

    // A renewal agent writes a certificate that expires in a day and 6 seconds: picked
    // up, warned about at once (7 days), and again when it crosses one day.
    let second = short_lived_server(&pki, &cert, &key, "kes-second", DAY + 6);
    wait_for(&kes, "the 7-day warning", Duration::from_secs(20), |err| {
        err.contains("CN=kes-second") && err.contains("(within 7 days)")
    });
    assert!(kes.stderr().contains("new connections get"));
    wait_for(&kes, "the 1-day warning", Duration::from_secs(20), |err| {
        err.contains("CN=kes-second") && err.contains("(within 1 day)")
    });
    let err = kes.stderr();
    assert_eq!(lines_with(&err, "CN=kes-second"), 2, "{err}");
    assert_eq!(lines_with(&err, "CN=kes-first"), 1, "warned once: {err}");
    let scrape = kes.client(&admin).get("/v1/metrics").text();
    assert_eq!(
        not_after_metric(&scrape, "server", "kes-second"),
        Some(second)
    );
    assert_eq!(not_after_metric(&scrape, "server", "kes-first"), None);

    // SIGHUP with a config that names other files: their certificate is warned about.
    let (cert3, key3) = (pki.path("third.cert"), pki.path("third.key"));
    let third = short_lived_server(&pki, &cert3, &key3, "kes-third", 3 * DAY);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&cert.display().to_string(), &cert3.display().to_string())
        .replace(&key.display().to_string(), &key3.display().to_string());
    std::fs::write(&config, text).unwrap();
    kes.signal(libc::SIGHUP);
    wait_for(
        &kes,
        "the warning after SIGHUP",
        Duration::from_secs(20),
        |err| err.contains("CN=kes-third") && err.contains("(within 7 days)"),
    );
    let scrape = kes.client(&admin).get("/v1/metrics").text();
    assert_eq!(
        not_after_metric(&scrape, "server", "kes-third"),
        Some(third)
    );
}

/// `kes status` with a pseudo-terminal as standard output (util-linux `script`).
fn status_on_terminal(kes: &Kes, pki: &Pki, who: &common::Credential) -> String {
    assert!(
        Path::new("/usr/bin/script").exists(),
        "/usr/bin/script is missing: install it (Debian: bsdutils) to test terminal output"
    );
    let command = format!("{} status", common::KES);
    let output = Command::new("/usr/bin/script")
        .args(["-qec", &command, "/dev/null"])
        .env("KES_SERVER", kes.addr.to_string())
        .env("KES_CLIENT_CERT", &who.cert_path)
        .env("KES_CLIENT_KEY", &who.key_path)
        .env("KES_CAPATH", PathBuf::from(&pki.ca_path))
        .env("NO_COLOR", "1")
        .env_remove("KES_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n")
}
