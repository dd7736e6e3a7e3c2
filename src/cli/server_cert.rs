//! The certificate a server presents, as a client sees it in the TLS handshake: what
//! `kes status` shows the expiry of. Asking the handshake rather than an API works with
//! every server generation and every identity, and shows the certificate actually
//! served, whatever the files on the server say.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use ureq::tls::{Certificate, ClientCert};

use super::client::Client;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The server certificate's not-after time (Unix seconds), from the first endpoint that
/// completes a handshake; `None` when none does (the caller has just talked to one, so
/// this is rare and not worth an error).
pub fn expiry(client: &Client) -> Option<i64> {
    let (client_cert, roots) = client.tls_material();
    let config = Arc::new(client_config(client_cert, roots)?);
    client.endpoints().iter().find_map(|endpoint| {
        let leaf = handshake(&config, endpoint.trim_start_matches("https://"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
        Some(cert.validity().not_after.timestamp())
    })
}

fn client_config(
    client_cert: &ClientCert,
    roots: Option<&[Certificate<'static>]>,
) -> Option<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                let _ = store.add(CertificateDer::from(root.der().to_vec()));
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .ok()?
        }
        None => Arc::new(Unverified(provider.signature_verification_algorithms)),
    };
    let chain: Vec<CertificateDer<'static>> = client_cert
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    // The DER tells its own form (PKCS#8, SEC1 or PKCS#1).
    let key = PrivateKeyDer::try_from(client_cert.private_key().der())
        .ok()?
        .clone_key();
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .ok()
}

/// The leaf certificate `address` (host:port) presents.
fn handshake(config: &Arc<rustls::ClientConfig>, address: &str) -> Option<Vec<u8>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).ok()?;
    let socket = address.to_socket_addrs().ok()?.next()?;
    let mut tcp = TcpStream::connect_timeout(&socket, TIMEOUT).ok()?;
    tcp.set_read_timeout(Some(TIMEOUT)).ok()?;
    tcp.set_write_timeout(Some(TIMEOUT)).ok()?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    let leaf = conn.peer_certificates()?.first()?.to_vec();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    Some(leaf)
}

/// `--insecure`: any server certificate, as for every other request of the command; the
/// handshake signatures are still checked.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
