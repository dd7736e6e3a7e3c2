//! The server's TLS files as configured: server certificates clients could not verify
//! stop startup naming the file, and `tls.ca` may be a directory of CA files.

mod common;

use common::{Kes, Pki, run_kes};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};

/// Replaces the config's server certificate by one for the same key with `sans`.
fn reissue_server_cert(pki: &Pki, sans: Vec<SanType>) {
    let key = KeyPair::from_pem(&std::fs::read_to_string(pki.path("server.key")).unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.subject_alt_names = sans;
    let (ca_key, ca) = pki.ca();
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    std::fs::write(pki.path("server.cert"), cert.pem()).unwrap();
}

fn start_fails(config: &std::path::Path) -> String {
    let (code, _, stderr) = run_kes(&[
        "server",
        "--config",
        config.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0, "kes must not start: {stderr}");
    stderr
}

#[test]
fn a_server_certificate_without_a_dns_or_ip_san_stops_startup_naming_the_file() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let config = pki.fs_config(&admin.identity, "");
    let cert = pki.path("server.cert");
    for (what, sans) in [
        ("no SAN at all", vec![]),
        (
            "only an e-mail SAN",
            vec![SanType::Rfc822Name("kes@example.com".try_into().unwrap())],
        ),
    ] {
        reissue_server_cert(&pki, sans);
        let stderr = start_fails(&config);
        assert!(stderr.contains(cert.to_str().unwrap()), "{what}: {stderr}");
        assert!(
            stderr.contains("does not contain any DNS or IP address as SAN"),
            "{what}: {stderr}"
        );
    }
    // A DNS SAN alone, or an IP SAN alone, is enough. (The test client connects to
    // 127.0.0.1, so it can only verify the second.)
    reissue_server_cert(
        &pki,
        vec![SanType::DnsName("localhost".try_into().unwrap())],
    );
    let mut kes = Kes::start(&pki, &config, &[]);
    assert!(
        kes.wait_exit(std::time::Duration::from_millis(300))
            .is_none()
    );
    drop(kes);
    reissue_server_cert(&pki, vec![SanType::IpAddress("127.0.0.1".parse().unwrap())]);
    let kes = Kes::start(&pki, &config, &[]);
    assert_eq!(kes.client(&admin).get("/v1/status").status, 200);
}

#[test]
fn tls_ca_may_be_a_directory_of_ca_files() {
    let pki = Pki::new();
    let admin = pki.client_signed("admin");
    let stranger = pki.client("stranger"); // self-signed: no CA of the directory issued it
    let dir = pki.path("cas");
    std::fs::create_dir(&dir).unwrap();
    // An unrelated CA first, the test CA second: every file counts.
    let other = Pki::new();
    std::fs::copy(&other.ca_path, dir.join("a-other.pem")).unwrap();
    std::fs::copy(&pki.ca_path, dir.join("b-test.pem")).unwrap();
    let config = pki.fs_config(
        &admin.identity,
        &format!("tls:\n  auth: on\n  ca: {}\n", dir.display()),
    );
    let kes = Kes::start(&pki, &config, &[]);
    assert_eq!(kes.client(&admin).get("/v1/status").status, 200);
    let refused = kes.client(&stranger).try_request("GET", "/v1/status", b"");
    assert!(
        refused.is_err(),
        "a certificate no CA of the directory issued is refused"
    );
    // A client of the other CA is accepted too (its identity has no policy: 403).
    let other_client = other.client_signed("other");
    let resp = kes.client(&other_client).get("/v1/status");
    assert_eq!(resp.status, 403, "{}", resp.text());

    // A directory without any CA certificate stops startup with a clear error.
    let empty = pki.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let config = pki.fs_config(
        &admin.identity,
        &format!("tls:\n  auth: on\n  ca: {}\n", empty.display()),
    );
    let stderr = start_fails(&config);
    assert!(stderr.contains("no CA certificate was found"), "{stderr}");
}

/// The server's order of cipher suites decides, as in Go: AES-128-GCM first, though the
/// client (rustls, as curl and many others) lists AES-256-GCM first. A client that
/// offers only one other suite still gets it.
#[test]
fn the_server_picks_aes_128_gcm_first_as_go_does() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = Pki::new();
    let admin = pki.client("admin");
    let kes = Kes::start(&pki, &pki.fs_config(&admin.identity, ""), &[]);
    let cases = [
        (&rustls::version::TLS13, None, cs::TLS13_AES_128_GCM_SHA256),
        (
            &rustls::version::TLS12,
            None,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS13,
            Some(cs::TLS13_CHACHA20_POLY1305_SHA256),
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            &rustls::version::TLS13,
            Some(cs::TLS13_AES_256_GCM_SHA384),
            cs::TLS13_AES_256_GCM_SHA384,
        ),
    ];
    for (version, only, want) in cases {
        let mut c = kes.client(&admin).with_versions(&[version]);
        if let Some(suite) = only {
            c = c.with_cipher_suites(&[suite]);
        }
        let me = c.get("/v1/identity/self/describe");
        assert_eq!(me.status, 200, "{}", me.text());
        let got = c.stream().conn.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(got, want.suite(), "{version:?}, offering {only:?}");
    }
}
