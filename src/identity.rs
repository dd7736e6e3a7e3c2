//! Client identities: the hex SHA-256 of a certificate's SubjectPublicKeyInfo, and the
//! identity a connection presented ([`PeerIdentity`]).

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

/// The identity a connection presented, computed once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The identity of the client's leaf certificate (`tls::peer_identity`).
    One(String),
    /// No client certificate.
    Missing,
}

/// Whether `s` looks like an identity: 64 lowercase or uppercase hex digits.
pub fn is_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

    #[test]
    fn identities_are_64_hex_digits_of_either_case() {
        assert!(is_identity(ID));
        assert!(is_identity(&ID.to_ascii_uppercase()));
        assert!(is_identity(&"0".repeat(64)));
        assert!(is_identity(&"f".repeat(64)));
    }

    #[test]
    fn everything_else_is_refused() {
        let mut cases = vec![
            String::new(),
            "disabled".to_string(),
            ID[..63].to_string(),
            format!("{ID}0"),
            "abc".to_string(),
            " ".repeat(64),
            "g".repeat(64),
        ];
        // One bad character at the start, in the middle and at the end.
        for at in [0, 31, 63] {
            for bad in ['g', 'x', ' ', '-', ':', 'é'] {
                let mut s: Vec<char> = ID.chars().collect();
                s[at] = bad;
                cases.push(s.into_iter().collect());
            }
        }
        for case in cases {
            assert!(!is_identity(&case), "{case:?} is no identity");
        }
    }

    #[test]
    fn a_certificate_that_does_not_parse_says_so() {
        let err = of_cert_der(b"not a certificate").unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("invalid certificate: "), "{shown}");
        assert!(shown.len() > "invalid certificate: ".len(), "{shown}");
    }

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff, 0x5a]), "000ff0ff5a");
    }
}
