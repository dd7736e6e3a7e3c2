//! `kes:v1:` API keys (formats.md §5) and the self-signed certificates made from them.
//!
//! An API key is a 32-byte Ed25519 seed. Its text form is `kes:v1:` followed by the
//! standard base64 of a type byte (0 = Ed25519) and the seed. A client proves it holds
//! the key by presenting a self-signed certificate for the key's public half; the server
//! only ever sees that certificate, so the identity of an API key equals the identity of
//! any certificate carrying its public key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use zeroize::{Zeroize, Zeroizing};

/// The prefix of every API key in text form.
pub const PREFIX: &str = "kes:v1:";

/// Type byte of an Ed25519 API key; the only type there is.
const TYPE_ED25519: u8 = 0;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte public key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER of a version-1 PKCS#8 Ed25519 private key up to the seed (RFC 8410 §7); the
/// 32-byte seed follows. This is the form Go's `x509.MarshalPKCS8PrivateKey` writes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// How long the in-memory client certificate of an API key is valid.
pub const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// A `kes:v1:` API key. The seed is wiped from memory when the key is dropped.
pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

/// Why a text is not an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadApiKey(pub &'static str);

impl std::fmt::Display for BadApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid API key: {}", self.0)
    }
}

impl std::error::Error for BadApiKey {}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        write!(f, "ApiKey(identity {})", self.identity())
    }
}

impl ApiKey {
    /// A new random API key from the operating system's CSPRNG.
    pub fn generate() -> Result<ApiKey, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut())?;
        Ok(ApiKey { seed })
    }

    /// The API key with this Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> ApiKey {
        let mut seed = seed;
        let key = ApiKey {
            seed: Zeroizing::new(seed),
        };
        seed.zeroize();
        key
    }

    /// Parses `kes:v1:<base64>`. Like the current Go SDK, the prefix may be left out.
    pub fn parse(text: &str) -> Result<ApiKey, BadApiKey> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let raw = Zeroizing::new(
            BASE64
                .decode(encoded)
                .map_err(|_| BadApiKey("not valid base64 after 'kes:v1:'"))?,
        );
        if raw.len() != 33 {
            return Err(BadApiKey(
                "wrong length: expected 33 bytes after base64 decoding",
            ));
        }
        if raw[0] != TYPE_ED25519 {
            return Err(BadApiKey("unknown key type: only Ed25519 (0) is supported"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        Ok(ApiKey { seed })
    }

    /// Reads the API key out of an Ed25519 private key in PKCS#8 DER (version 1 or 2).
    /// `None` when the DER is not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Option<ApiKey> {
        // SEQUENCE (short length) { INTEGER 0|1, SEQUENCE { OID 1.3.101.112 },
        // OCTET STRING { OCTET STRING (32) seed } ... }
        if der.len() < ED25519_PKCS8_PREFIX.len() + 32 || der[0] != 0x30 || der[1] >= 0x80 {
            return None;
        }
        let body = &der[2..];
        let expected = &ED25519_PKCS8_PREFIX[2..];
        let version_ok = body[2] == 0 || body[2] == 1;
        let matches =
            body[..2] == expected[..2] && version_ok && body[3..expected.len()] == expected[3..];
        if !matches {
            return None;
        }
        let start = 2 + expected.len();
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(der.get(start..start + 32)?);
        Some(ApiKey { seed })
    }

    /// The text form `kes:v1:…`. It is a secret: zeroized when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[0] = TYPE_ED25519;
        raw[1..].copy_from_slice(self.seed.as_ref());
        let mut text = Zeroizing::new(String::with_capacity(PREFIX.len() + 44));
        text.push_str(PREFIX);
        BASE64.encode_string(raw.as_ref(), &mut text);
        text
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let pair = Ed25519KeyPair::from_seed_unchecked(self.seed.as_ref())
            .expect("every 32-byte string is an Ed25519 seed");
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        public
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public_key());
        spki
    }

    /// The identity: hex SHA-256 of the SubjectPublicKeyInfo.
    pub fn identity(&self) -> String {
        crate::identity::of_spki(&self.spki_der())
    }

    /// The private key as version-1 PKCS#8 DER. A secret: zeroized when dropped.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(self.seed.as_ref());
        der
    }

    /// The private key as a PEM `PRIVATE KEY` block. A secret: zeroized when dropped.
    pub fn pkcs8_pem(&self) -> Zeroizing<String> {
        let der = self.pkcs8_der();
        let mut body = Zeroizing::new(String::new());
        BASE64.encode_string(der.as_slice(), &mut body);
        let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// A self-signed certificate for this key, shaped by `spec`.
    pub fn certificate(&self, spec: &CertificateSpec) -> Result<Certificate, rcgen::Error> {
        let pkcs8 = self.pkcs8_der();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?;

        let mut params = rcgen::CertificateParams::default();
        let mut serial = [0u8; 16];
        getrandom::getrandom(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
        serial[0] &= 0x7f; // keep the DER INTEGER positive
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));

        let mut subject = rcgen::DistinguishedName::new();
        let common_name = spec.common_name.clone().unwrap_or_else(|| self.identity());
        if !common_name.is_empty() {
            subject.push(rcgen::DnType::CommonName, common_name);
        }
        params.distinguished_name = subject;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // rcgen wants `time::OffsetDateTime`: start at its epoch value and add std durations.
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + Duration::from_secs(now.as_secs());
        params.not_after = epoch + Duration::from_secs((now + spec.valid_for).as_secs());

        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = spec
            .usages
            .iter()
            .map(|usage| match usage {
                Usage::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                Usage::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            })
            .collect();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        for name in &spec.dns_names {
            let name = rcgen::Ia5String::try_from(name.as_str())?;
            params.subject_alt_names.push(rcgen::SanType::DnsName(name));
        }
        for ip in &spec.ip_addresses {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }

        let cert = params.self_signed(&key_pair)?;
        Ok(Certificate {
            der: cert.der().to_vec(),
            pem: cert.pem(),
        })
    }

    /// The client certificate the Go SDK makes for an API key: CN = identity, clientAuth,
    /// valid for 90 days from now.
    pub fn client_certificate(&self) -> Result<Certificate, rcgen::Error> {
        self.certificate(&CertificateSpec::client())
    }
}

/// What a certificate may be used for (its extended key usages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
}

/// The shape of a certificate made by [`ApiKey::certificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// Subject common name; `None` means the key's identity, `Some("")` no CN at all.
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub valid_for: Duration,
    pub usages: Vec<Usage>,
}

impl CertificateSpec {
    /// The certificate of formats.md §5.
    pub fn client() -> CertificateSpec {
        CertificateSpec {
            common_name: None,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            valid_for: CLIENT_CERT_VALIDITY,
            usages: vec![Usage::Client],
        }
    }
}

/// A generated certificate (public, nothing secret in it).
#[derive(Debug, Clone)]
pub struct Certificate {
    pub der: Vec<u8>,
    pub pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn vectors() -> serde_json::Value {
        let text = include_str!("../tests/vectors/identity.json");
        serde_json::from_str(text).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn api_key_vector_round_trips() {
        for case in vectors()["api_keys"].as_array().unwrap() {
            let text = case["api_key"].as_str().unwrap();
            let key = ApiKey::parse(text).unwrap();
            assert_eq!(
                key.seed.as_slice(),
                unhex(case["seed_hex"].as_str().unwrap())
            );
            assert_eq!(
                key.public_key().to_vec(),
                unhex(case["ed25519_public_key_hex"].as_str().unwrap())
            );
            assert_eq!(
                key.spki_der(),
                unhex(case["spki_der_hex"].as_str().unwrap())
            );
            assert_eq!(key.identity(), case["identity"].as_str().unwrap());
            assert_eq!(key.to_text().as_str(), text);
        }
    }

    #[test]
    fn upstream_api_key_identities() {
        for case in vectors()["upstream_api_key_identity_pairs_verified"]
            .as_array()
            .unwrap()
        {
            let key = ApiKey::parse(case["api_key"].as_str().unwrap()).unwrap();
            assert_eq!(key.identity(), case["identity"].as_str().unwrap());
        }
    }

    #[test]
    fn vector_certificate_has_the_api_key_identity() {
        let vectors = vectors();
        let key = ApiKey::parse(vectors["api_keys"][0]["api_key"].as_str().unwrap()).unwrap();
        let pem = vectors["certificates"][0]["pem"].as_str().unwrap();
        let (_, block) = parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            crate::identity::of_cert_der(&block.contents).unwrap(),
            key.identity()
        );
    }

    #[test]
    fn prefix_is_optional_but_type_and_length_are_checked() {
        let with = "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw";
        let without = &with[PREFIX.len()..];
        assert_eq!(
            ApiKey::parse(without).unwrap().identity(),
            ApiKey::parse(with).unwrap().identity()
        );
        assert!(ApiKey::parse("kes:v1:AQ==").is_err());
        assert!(ApiKey::parse("kes:v1:ASQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw").is_err());
        assert!(ApiKey::parse("kes:v1:not base64!").is_err());
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = ApiKey::generate().unwrap();
        let back = ApiKey::from_pkcs8_der(&key.pkcs8_der()).unwrap();
        assert_eq!(back.to_text().as_str(), key.to_text().as_str());
        // Version 2 (with the public key attached), as OpenSSL 3 may write it.
        let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap();
        let from_v2 = ApiKey::from_pkcs8_der(v2.as_ref()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        assert_eq!(from_v2.public_key().as_slice(), pair.public_key().as_ref());
        assert!(ApiKey::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_none());
    }

    #[test]
    fn client_certificate_matches_formats_section_5() {
        let key = ApiKey::generate().unwrap();
        let cert = key.client_certificate().unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert.der).unwrap();
        assert_eq!(
            crate::identity::of_cert_der(&cert.der).unwrap(),
            key.identity()
        );
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(cn, key.identity());
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let bc = parsed.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(
            parsed
                .key_usage()
                .unwrap()
                .unwrap()
                .value
                .digital_signature()
        );
        let validity = parsed.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86400;
        assert_eq!(days, 90);
        assert!(validity.is_valid());
        assert!(parsed.tbs_certificate.serial.bits() <= 128);
    }

    #[test]
    fn server_certificate_carries_sans_and_server_auth() {
        let key = ApiKey::generate().unwrap();
        let spec = CertificateSpec {
            common_name: Some("kes-server".into()),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            valid_for: Duration::from_secs(720 * 3600),
            usages: vec![Usage::Server],
        };
        let cert = key.certificate(&spec).unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert.der).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        let sans = &parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let validity = parsed.validity();
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            720 * 3600
        );
    }
}
