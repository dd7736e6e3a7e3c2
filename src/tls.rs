//! The server's TLS setup: certificate and key loading, and client-certificate checks.
//!
//! Every mode requires a client certificate in the handshake, except when a route is
//! configured with `skip_auth` (then a certificate is requested, and routes that need
//! an identity answer 400 without one), as in the original.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::identity::PeerIdentity;
use crate::pem::{ca_files, load_certs, load_key};

/// How client certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// Verify the chain against `ca` (`tls.auth: on`, `--auth on`).
    pub verify: bool,
    /// PEM file or directory of CA certificates for verification.
    pub ca: Option<PathBuf>,
    /// Let clients without a certificate finish the handshake (some route skips auth).
    pub optional: bool,
}

/// The crypto provider used everywhere: ring, which builds statically for musl.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: ring with Go's order of cipher suites, AES-128-GCM first.
///
/// On hosts with AES instructions Go's server picks AES-128-GCM with SHA-256 whenever the
/// client offers it, whatever the client's order; MinIO's Go client gets it either way.
/// Clients that list AES-256-GCM with SHA-384 first (rustls, curl) would otherwise make
/// every handshake hash with SHA-384, which has no CPU instructions on x86 (SHA-256
/// has), and every record use the longer key schedule. Every suite stays available.
fn server_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let go_order = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: a suite Go does not know (none today) keeps its place after them.
    let rank = |suite: &rustls::SupportedCipherSuite| {
        go_order
            .iter()
            .position(|go| go == suite)
            .unwrap_or(go_order.len())
    };
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// Builds the server's TLS config from PEM files.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client: &ClientAuth,
) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert)?;
    check_server_sans(cert, &chain[0])?;
    let key = load_key(key)?;
    let provider = server_provider();
    let verifier: Arc<dyn ClientCertVerifier> = if client.verify {
        let roots = Arc::new(load_roots(client.ca.as_deref())?);
        let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let builder = if client.optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|e| format!("cannot set up client certificate verification: {e}"))?
    } else {
        Arc::new(AnyClientCert {
            mandatory: !client.optional,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{}: the private key does not fit the certificate: {e}",
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's order of suites decides, as in Go (see `server_provider`).
    config.ignore_client_order = true;
    // One ticket per connection, as Go sends: each resumption brings the next.
    config.send_tls13_tickets = 1;
    // Returning clients resume with a ticket and skip the full handshake.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

/// CA certificates from a PEM file or every file of a directory.
fn load_roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let files: Vec<PathBuf> = match ca {
        Some(ca) => ca_files(ca)?,
        None => [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .take(1)
        .collect(),
    };
    for file in &files {
        for cert in load_certs(file)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable CA certificate: {e}", file.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "client certificate verification is on but no CA certificate was found: set 'tls.ca'"
                .into(),
        );
    }
    Ok(roots)
}

/// The last Go release refuses server certificates without a DNS or IP SAN: clients
/// could not verify them anyway.
fn check_server_sans(path: &Path, leaf: &CertificateDer) -> Result<(), String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| format!("{}: invalid certificate: {e}", path.display()))?;
    let has_san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_)))
        });
    if has_san {
        Ok(())
    } else {
        Err(format!(
            "{}: certificate does not contain any DNS or IP address as SAN",
            path.display()
        ))
    }
}

/// The identity of a connection: always the leaf's, the first certificate the client
/// sent. Only the leaf's key signed the handshake (CertificateVerify), so only the leaf
/// says who holds the connection; every other certificate of a chain is public data that
/// anybody who has seen it can append. The Go releases of 2023 and 2025 skipped CA
/// certificates among several and took the identity of the remaining one: a client could
/// then send a CA-flagged leaf of its own followed by the admin's public certificate and
/// be the admin without its private key (docs/compatibility.md).
///
/// A CA-flagged leaf is its own identity: the client proved it holds that key. With
/// `auth: on`, chain verification refuses such a leaf before this is reached.
///
/// On a resumed session rustls returns the chain stored with the session, the one that
/// was verified when the session was made, so a resumed connection keeps that identity.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> PeerIdentity {
    certs
        .and_then(|certs| certs.first())
        .and_then(|leaf| crate::identity::of_cert_der(leaf).ok())
        .map_or(PeerIdentity::Missing, PeerIdentity::One)
}

/// `tls.auth: off`: any client certificate is accepted (its identity decides), but the
/// client must still prove it holds the private key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
