//! Stored keys and their metadata, beyond the vectors: what generate and import record,
//! which stored values are refused, how JSON keys are read, that key material never
//! shows in `Debug` or errors, and the ciphers' names.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;

use super::tests::{STORED, cases, unhex, vectors};
use super::*;
use crate::identity::hex;
use crate::timefmt;

#[test]
fn generate_and_import_set_metadata_and_round_trip_through_encode() {
    let creator = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    let before = SystemTime::now();
    let generated = KeyVersion::generate(Cipher::ChaCha20, creator);
    assert!(generated.created_at() >= before && generated.created_at() <= SystemTime::now());
    assert_eq!(generated.created_by(), creator);
    assert!(generated.has_hmac());
    assert!(!generated.has_undefined_algorithm());

    let stored = generated.encode();
    let parsed = KeyVersion::parse(stored.as_bytes()).unwrap();
    assert_eq!(parsed.cipher(), Cipher::ChaCha20);
    assert_eq!(parsed.key, generated.key);
    assert_eq!(parsed.hmac_key, generated.hmac_key);
    assert_eq!(parsed.created_at_unix(), generated.created_at_unix());
    assert_eq!(parsed.created_by(), creator);
    assert_eq!(parsed.encode(), stored);
    let ciphertext = generated.encrypt(b"data", b"");
    assert_eq!(*parsed.decrypt(&ciphertext, b"").unwrap(), b"data");

    let imported = KeyVersion::import(&[7; 32], Cipher::Aes256, "").unwrap();
    assert_eq!(imported.key_id().len(), 32);
    assert!(imported.has_hmac());
    assert_eq!(
        KeyVersion::import(&[7; 31], Cipher::Aes256, "").unwrap_err(),
        KeyError::InvalidLength(31)
    );
    assert_eq!(
        KeyVersion::import(&[7; 33], Cipher::Aes256, "").unwrap_err(),
        KeyError::InvalidLength(33)
    );
}

#[test]
fn invalid_stored_values_are_refused() {
    let key = STANDARD.encode([1; 32]);
    let bad_json = [
        r#"{"bytes":"AAAA"}"#.to_owned(),
        r#"{}"#.to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        r#""text""#.to_owned(),
        r#"{"bytes":"not base64!"}"#.to_owned(),
        format!(r#"{{"bytes":"{key}","algorithm":"undefined"}}"#),
        format!(r#"{{"bytes":"{key}","algorithm":"AES-256-GCM"}}"#),
        format!(r#"{{"bytes":"{key}","created_at":""}}"#),
        format!(r#"{{"bytes":"{key}","created_at":5}}"#),
        format!(r#"{{"bytes":"{key}","created_by":["x"]}}"#),
    ];
    for stored in &bad_json {
        assert!(KeyVersion::parse(stored.as_bytes()).is_err(), "{stored}");
    }
    assert!(KeyVersion::parse(b"").is_err());
    assert!(KeyVersion::parse(b"not base64").is_err());
    assert!(KeyVersion::parse(b"AAAA").is_err());

    // Protobuf values: a valid one, then with each required part broken.
    let file = vectors(STORED);
    let good = cases(&file, "cases")[1]["protobuf_hex"].as_str().unwrap();
    let good = unhex(good);
    assert!(KeyVersion::parse(STANDARD.encode(&good).as_bytes()).is_ok());
    let without_hmac = [&good[..38], &good[76..]].concat();
    assert_eq!(
        KeyVersion::parse(STANDARD.encode(&without_hmac).as_bytes()).unwrap_err(),
        KeyError::InvalidHmacKey
    );
    let mut bad_type = good.clone();
    bad_type[37] = 3;
    assert_eq!(
        KeyVersion::parse(STANDARD.encode(&bad_type).as_bytes()).unwrap_err(),
        KeyError::UnknownKeyType(3)
    );
    let mut bad_hash = good.clone();
    bad_hash[75] = 2;
    assert_eq!(
        KeyVersion::parse(STANDARD.encode(&bad_hash).as_bytes()).unwrap_err(),
        KeyError::InvalidHmacKey
    );
    let truncated = &good[..good.len() - 1];
    assert!(KeyVersion::parse(STANDARD.encode(truncated).as_bytes()).is_err());
}

#[test]
fn stored_json_keys_are_read_like_go() {
    let key = STANDARD.encode([1; 32]);
    let shouted = format!(r#"{{"BYTES":"{key}","Algorithm":"ChaCha20","Created_At":null}}"#);
    let parsed = KeyVersion::parse(shouted.as_bytes()).unwrap();
    assert_eq!(parsed.cipher(), Cipher::ChaCha20);
    assert_eq!(parsed.created_at_rfc3339(), "0001-01-01T00:00:00Z");
    let escaped = format!(
        r#"  {{"bytes":"{}\u003d","algorithm":""}} "#,
        &key[..key.len() - 1]
    );
    let parsed = KeyVersion::parse(escaped.as_bytes()).unwrap();
    assert_eq!(*parsed.key, [1; 32]);
    assert!(parsed.has_undefined_algorithm());
    // Go's base64 skips line breaks, so a value with a trailing newline still reads.
    let file = vectors(STORED);
    let stored = cases(&file, "cases")[0]["stored_value"].as_str().unwrap();
    assert!(KeyVersion::parse(format!("{stored}\n").as_bytes()).is_ok());
}

#[test]
fn zero_time_survives_protobuf() {
    let mut key = KeyVersion::generate(Cipher::Aes256, "");
    key.created_secs = timefmt::ZERO_TIME_SECS;
    key.created_nanos = 0;
    let parsed = KeyVersion::parse(key.encode().as_bytes()).unwrap();
    assert_eq!(parsed.created_at_rfc3339(), "0001-01-01T00:00:00Z");
}

#[test]
fn debug_and_errors_never_show_key_material() {
    let master = [0xab; 32];
    let key = KeyVersion::import(&master, Cipher::Aes256, "creator").unwrap();
    let hmac_key = key.hmac_key.as_ref().unwrap().to_vec();
    let shown = format!("{key:?} {key:#?}");
    for secret in [&master[..], &hmac_key] {
        assert!(!shown.contains(&STANDARD.encode(secret)));
        assert!(!shown.contains(&hex(secret)));
        assert!(!shown.contains(&format!("{secret:?}")[1..20]));
    }
    assert!(shown.contains("creator"));

    let stored = key.encode();
    let message = proto::KeyVersion::decode(STANDARD.decode(&stored).unwrap().as_slice()).unwrap();
    assert!(!format!("{message:?}").contains(&format!("{:?}", &master[..4])[1..10]));

    let wrong_length = format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(&master[..31]));
    let error = KeyVersion::parse(wrong_length.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        !error.contains(&STANDARD.encode(&master[..31])[..8]),
        "{error}"
    );
}

#[test]
fn cipher_names() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        assert_eq!(Cipher::parse(cipher.api_name()), Some(cipher));
        assert_eq!(Cipher::parse(cipher.legacy_name()), Some(cipher));
    }
    assert_eq!(Cipher::Aes256.api_name(), "AES256");
    assert_eq!(Cipher::ChaCha20.legacy_name(), "XCHACHA20-POLY1305");
    for unknown in [
        "",
        "aes256",
        "AES-256-GCM-HMAC-SHA-256",
        "ChaCha20Poly1305",
        "undefined",
    ] {
        assert_eq!(Cipher::parse(unknown), None);
    }
    // AES where the CPU accelerates it, ChaCha20 elsewhere, as Go KES decides.
    #[cfg(target_arch = "x86_64")]
    let accelerated = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    // On aarch64 Rust's "aes" covers the AES and PMULL instructions.
    #[cfg(target_arch = "aarch64")]
    let accelerated = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let accelerated = Cipher::default_for_cpu() == Cipher::Aes256;
    let expected = if accelerated {
        Cipher::Aes256
    } else {
        Cipher::ChaCha20
    };
    assert_eq!(Cipher::default_for_cpu(), expected);
}
