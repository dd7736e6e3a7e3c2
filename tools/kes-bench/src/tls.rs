//! Client TLS configuration and credentials: certificate files, `kes:v1:` API keys,
//! and the throw-away PKI of `kes-bench certs`.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::args::Args;

/// Accepts any server certificate (`--insecure`), but still checks handshake
/// signatures so the handshake costs the same as a verified one on the server.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// A `kes:v1:` API key → (self-signed client certificate, its PKCS#8 key), as the KES
/// SDK does it (formats.md §5): Ed25519 from the seed, CN = identity, 90 days.
fn api_key_credential(
    api_key: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>, String), String> {
    let text = api_key.trim();
    let b64 = text.strip_prefix("kes:v1:").unwrap_or(text);
    let raw = B64
        .decode(b64)
        .map_err(|_| "--api-key: not a kes:v1: API key (bad base64)".to_string())?;
    if raw.len() != 33 || raw[0] != 0 {
        return Err("--api-key: not a kes:v1: Ed25519 API key".into());
    }
    // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&raw[1..]);
    let der = PrivatePkcs8KeyDer::from(pkcs8.clone());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| format!("--api-key: {e}"))?;
    let identity =
        hex(ring::digest::digest(&ring::digest::SHA256, &key_pair.public_key_der()).as_ref());
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.clone());
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| "random number generator failed".to_string())?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(90 * 24 * 3600)).into();
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
        identity,
    ))
}

pub(crate) fn tls_config(a: &Args, resumption: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if a.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_pem_certs(a.cacert.as_deref().expect("checked in parse_args"))? {
            roots.add(cert).map_err(|e| format!("--cacert: {e}"))?;
        }
        builder.with_root_certificates(roots)
    };
    let (chain, key) = match &a.api_key {
        Some(api_key) => {
            let (cert, key, _) = api_key_credential(api_key)?;
            (vec![cert], key)
        }
        None => {
            let cert_path = a.cert.as_deref().expect("checked in parse_args");
            let key_path = a.key.as_deref().expect("checked in parse_args");
            let data = fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
            let key = rustls_pemfile::private_key(&mut &data[..])
                .map_err(|e| format!("{}: {e}", key_path.display()))?
                .ok_or_else(|| format!("{}: no private key found", key_path.display()))?;
            (read_pem_certs(cert_path)?, key)
        }
    };
    let mut config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client credential: {e}"))?;
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `kes-bench certs DIR`: a throw-away PKI for benchmarking a server.
pub(crate) fn write_certs(dir: &Path) -> Result<(), String> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let server_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(vec!["localhost".into()]).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("literal")));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.self_signed(&server_key).map_err(|e| e.to_string())?;
    let client_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kes-bench");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.self_signed(&client_key).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("server.key", server_key.serialize_pem()),
        ("server.cert", server_cert.pem()),
        ("client.key", client_key.serialize_pem()),
        ("client.cert", client_cert.pem()),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let identity =
        hex(ring::digest::digest(&ring::digest::SHA256, &client_key.public_key_der()).as_ref());
    println!("{identity}");
    Ok(())
}
