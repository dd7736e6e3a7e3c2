//! Client identities: the hex SHA-256 of a certificate's SubjectPublicKeyInfo.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate we could not read an identity from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCertificate(pub String);

impl std::fmt::Display for BadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid certificate: {}", self.0)
    }
}

impl std::error::Error for BadCertificate {}

/// Lowercase hex SHA-256 of `spki_der`, the DER SubjectPublicKeyInfo.
pub fn of_spki(spki_der: &[u8]) -> String {
    hex(&Sha256::digest(spki_der))
}

/// The identity of a DER certificate: the hash of its public key. Nothing else of the
/// certificate (subject, issuer, CA flag) takes part.
pub fn of_cert_der(der: &[u8]) -> Result<String, BadCertificate> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| BadCertificate(e.to_string()))?;
    Ok(of_spki(cert.public_key().raw))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Whether `s` looks like an identity: 64 lowercase or uppercase hex digits.
pub fn is_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
