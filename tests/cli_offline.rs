//! The `kes` binary's commands that need no server: identities, certificates, usage,
//! exit codes. Runs the tutorial's identity steps verbatim.

mod cli_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use cli_support::{
    TUTORIAL_APP_IDENTITY, TUTORIAL_SERVER_IDENTITY, TempDir, cert_der, fails, kes_in, ok, stderr,
};
use x509_parser::prelude::*;

#[test]
fn tutorial_server_identity_is_a_valid_rustls_server_certificate() {
    let dir = TempDir::new("server-identity");
    // Verbatim from the tutorial.
    ok(kes_in(&dir.0, TUTORIAL_SERVER_IDENTITY, &[]));
    let der = cert_der(&dir.path("server.cert"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(
        eku.server_auth,
        "a --server certificate must allow serverAuth"
    );
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(sans.contains(&GeneralName::DNSName("localhost")));
    assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert!(cert.validity().is_valid());
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 30, "default validity is 720h");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path("server.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the private key must be private");
    }

    // A rustls client that trusts exactly this certificate accepts it for both SANs.
    for server_name in ["localhost", "127.0.0.1"] {
        handshake_with(&dir, server_name);
    }
}

/// Serves one TLS connection with server.key/server.cert and connects to it as
/// `server_name`, trusting server.cert.
fn handshake_with(dir: &TempDir, server_name: &str) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut std::fs::read(dir.path("server.cert")).unwrap().as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
    let key =
        rustls_pemfile::private_key(&mut std::fs::read(dir.path("server.key")).unwrap().as_slice())
            .unwrap()
            .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let connection = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).unwrap();
        tls.write_all(&byte).unwrap();
        tls.flush().unwrap();
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs[0].clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(b"x").unwrap();
    let mut echo = [0u8; 1];
    tls.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"x");
    server.join().unwrap();
}

#[test]
fn tutorial_app_identity_and_identity_of() {
    let dir = TempDir::new("app-identity");
    // Verbatim from the tutorial.
    let printed = ok(kes_in(&dir.0, TUTORIAL_APP_IDENTITY, &[]));
    assert_eq!(
        printed, "",
        "the old command prints nothing when not on a terminal"
    );
    let der = cert_der(&dir.path("app.cert"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cn, "app");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);

    // APP_IDENTITY=$(kes tool identity of app.cert): just the identity, no newline.
    let identity = ok(kes_in(&dir.0, ["tool", "identity", "of", "app.cert"], &[]));
    assert_eq!(identity, kes::identity::of_cert_der(&der).unwrap());
    assert_eq!(identity.len(), 64);

    // The same through the new command, and from standard input.
    assert_eq!(
        ok(kes_in(&dir.0, ["identity", "of", "app.cert"], &[])),
        identity
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["tool", "identity", "of"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(dir.path("app.cert")).unwrap())
        .unwrap();
    assert_eq!(
        cli_support::stdout(&child.wait_with_output().unwrap()),
        identity
    );

    // The private key turns into the API key of the same identity.
    let api_key = ok(kes_in(&dir.0, ["identity", "app.key"], &[]));
    assert!(api_key.starts_with("kes:v1:"), "{api_key}");
    assert_eq!(
        ok(kes_in(&dir.0, ["identity", "of", &api_key], &[])),
        identity
    );
    assert_eq!(ok(kes_in(&dir.0, ["identity", &api_key], &[])), identity);

    // Existing files are kept unless forced.
    let message = fails(kes_in(&dir.0, TUTORIAL_APP_IDENTITY, &[]));
    assert!(message.contains("already exists. Use --force"), "{message}");
    ok(kes_in(
        &dir.0,
        [
            "tool",
            "identity",
            "new",
            "--key=app.key",
            "--cert=app.cert",
            "-f",
            "app",
        ],
        &[],
    ));
    assert_ne!(
        ok(kes_in(&dir.0, ["tool", "identity", "of", "app.cert"], &[])),
        identity
    );
}

#[test]
fn identity_new_writes_a_key_and_certificate_for_its_api_key() {
    let dir = TempDir::new("identity-new");
    let text = ok(kes_in(
        &dir.0,
        [
            "identity",
            "new",
            "--key",
            "c.key",
            "--cert",
            "c.crt",
            "--ip",
            "10.0.0.1",
            "--dns",
            "kes.local",
            "--expiry",
            "8760h",
            "my-client",
        ],
        &[],
    ));
    let api_key = text
        .split_whitespace()
        .find(|w| w.starts_with("kes:v1:"))
        .expect("API key printed")
        .to_owned();
    let identity = ok(kes_in(&dir.0, ["identity", "of", &api_key], &[]));
    assert!(text.contains(&identity));
    assert_eq!(
        ok(kes_in(&dir.0, ["identity", "of", "c.crt"], &[])),
        identity
    );
    assert_eq!(ok(kes_in(&dir.0, ["identity", "c.key"], &[])), api_key);

    let der = cert_der(&dir.path("c.crt"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "my-client"
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 365);
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);

    let message = fails(kes_in(
        &dir.0,
        ["identity", "new", "--key", "c.key", "--cert", "c.crt"],
        &[],
    ));
    assert!(message.contains("already exists"), "{message}");
    ok(kes_in(
        &dir.0,
        [
            "identity", "new", "--key", "c.key", "--cert", "c.crt", "--force",
        ],
        &[],
    ));

    // Without files: only an API key.
    let text = ok(kes_in(&dir.0, ["identity", "new"], &[]));
    assert!(text.contains("kes:v1:"));
    // Bare `kes identity` when piped: the API key alone.
    let key = ok(kes_in(&dir.0, ["identity"], &[]));
    assert!(key.starts_with("kes:v1:") && !key.contains('\n'), "{key:?}");
}

#[test]
fn exit_codes_and_usage() {
    let dir = TempDir::new("usage");
    for args in [
        &[][..],
        &["key"],
        &["policy"],
        &["identity", "--help"],
        &["key", "create", "-h"],
        &["--help"],
        &["tool"],
    ] {
        let output = kes_in(&dir.0, args, &[]);
        assert_eq!(output.status.code(), Some(2), "kes {args:?}");
        assert!(
            stderr(&output).starts_with("Usage:"),
            "kes {args:?}: {}",
            stderr(&output)
        );
    }
    let help = stderr(&kes_in(&dir.0, ["--help"], &[]));
    for command in [
        "server", "ls", "key", "policy", "identity", "log", "status", "metric", "migrate",
    ] {
        assert!(
            help.contains(&format!("    {command} ")),
            "kes --help misses {command}"
        );
    }
    // Every command's help has an example.
    for args in [
        &["key", "create", "--help"][..],
        &["key", "derive", "--help"],
        &["key", "decrypt", "--help"],
        &["identity", "new", "--help"],
        &["tool", "identity", "new", "--help"],
        &["tool", "identity", "of", "--help"],
        &["status", "--help"],
        &["log", "--help"],
        &["metric", "--help"],
        &["ls", "--help"],
        &["policy", "show", "--help"],
    ] {
        let text = stderr(&kes_in(&dir.0, args, &[]));
        assert!(
            text.contains("Examples:") && text.contains("$ kes "),
            "kes {args:?} has no example"
        );
    }
    assert_eq!(
        fails(kes_in(&dir.0, ["nope"], &[])),
        "\"nope\" is not a kes command. See 'kes --help'"
    );
    assert!(
        fails(kes_in(&dir.0, ["key", "create", "--bogus", "k"], &[]))
            .contains("unknown flag: --bogus")
    );
    assert!(fails(kes_in(&dir.0, ["migrate"], &[])).contains("both --from and --to are required"));
    assert!(ok(kes_in(&dir.0, ["--version"], &[])).starts_with("Version"));
    assert!(ok(kes_in(&dir.0, ["-v"], &[])).starts_with("Version"));
}

#[test]
fn missing_or_conflicting_credentials_say_what_to_set() {
    let dir = TempDir::new("credentials");
    let message = fails(kes_in(&dir.0, ["key", "create", "-k", "k"], &[]));
    assert!(message.contains("KES_API_KEY"), "{message}");
    let message = fails(kes_in(
        &dir.0,
        ["status"],
        &[("KES_API_KEY", "kes:v1:AA=="), ("KES_CLIENT_KEY", "x")],
    ));
    assert!(
        message.contains("cannot be used at the same time"),
        "{message}"
    );
    let message = fails(kes_in(&dir.0, ["status"], &[("KES_CLIENT_CERT", "x.crt")]));
    assert!(message.contains("KES_CLIENT_KEY"), "{message}");
    let message = fails(kes_in(
        &dir.0,
        ["status"],
        &[("KES_API_KEY", "kes:v1:bogus")],
    ));
    assert!(message.contains("invalid API key"), "{message}");
    // A key that does not belong to the certificate is caught before connecting.
    ok(kes_in(
        &dir.0,
        ["tool", "identity", "new", "--key=a.key", "--cert=a.crt"],
        &[],
    ));
    ok(kes_in(
        &dir.0,
        ["tool", "identity", "new", "--key=b.key", "--cert=b.crt"],
        &[],
    ));
    let message = fails(kes_in(
        &dir.0,
        ["status", "-k"],
        &[("KES_CLIENT_CERT", "a.crt"), ("KES_CLIENT_KEY", "b.key")],
    ));
    assert!(
        message.contains("does not belong to the certificate"),
        "{message}"
    );
    let message = fails(kes_in(
        &dir.0,
        ["status", "-k"],
        &[("KES_CLIENT_CERT", "a.crt"), ("KES_CLIENT_KEY", "a.crt")],
    ));
    assert!(message.contains("no PEM PRIVATE KEY"), "{message}");
    // A closed port: the address tried is named.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let key = ok(kes_in(&dir.0, ["identity"], &[]));
    let message = fails(kes_in(
        &dir.0,
        ["status", "-k"],
        &[("KES_API_KEY", &key), ("KES_SERVER", &address)],
    ));
    assert!(
        message.contains(&address) && message.contains("connection refused"),
        "{message}"
    );
}
