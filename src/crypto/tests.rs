//! The spec's test vectors (tests/vectors/), plus properties of ciphertexts the vectors
//! cannot show. Stored keys and their metadata: `stored_tests`.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::ciphertext::derive_aead_key;
use super::*;
use crate::timefmt;

const CURRENT: &str = include_str!("../../tests/vectors/ciphertext-current.json");
const LEGACY: &str = include_str!("../../tests/vectors/ciphertext-legacy.json");
const UPSTREAM: &str = include_str!("../../tests/vectors/upstream-go-test-vectors.json");
pub(super) const STORED: &str = include_str!("../../tests/vectors/stored-keys.json");
const HMAC: &str = include_str!("../../tests/vectors/hmac.json");

pub(super) fn vectors(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

pub(super) fn cases<'a>(file: &'a Value, list: &str) -> &'a [Value] {
    file[list]
        .as_array()
        .unwrap_or_else(|| panic!("no list {list:?}"))
}

fn b64(value: &Value) -> Vec<u8> {
    match value {
        Value::Null => Vec::new(),
        Value::String(text) => STANDARD.decode(text).expect("vector base64"),
        other => panic!("not base64: {other}"),
    }
}

pub(super) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn cipher_of(case: &Value) -> Cipher {
    Cipher::parse(case["key_type"].as_str().unwrap()).unwrap()
}

/// The key of a vector case as a freshly imported key.
fn key_of(case: &Value) -> KeyVersion {
    KeyVersion::import(&b64(&case["master_key_b64"]), cipher_of(case), "").unwrap()
}

/// A vector ciphertext: `ciphertext_b64`, or the text form some legacy cases give.
fn ciphertext_of(case: &Value) -> Vec<u8> {
    match case.get("ciphertext_b64") {
        Some(Value::String(_)) => b64(&case["ciphertext_b64"]),
        _ => case["ciphertext_text"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    }
}

/// The same key as read from JSON without an `algorithm` field.
fn undefined_algorithm_key(master_key: &[u8]) -> KeyVersion {
    let stored = format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(master_key));
    let key = KeyVersion::parse(stored.as_bytes()).unwrap();
    assert!(key.has_undefined_algorithm());
    key
}

#[test]
fn current_vectors_encrypt_byte_for_byte_and_decrypt() {
    let file = vectors(CURRENT);
    for case in cases(&file, "cases") {
        let name = case["name"].as_str().unwrap();
        let key = key_of(case);
        let random: [u8; RANDOM_LEN] = b64(&case["random_b64"]).try_into().unwrap();
        assert_eq!(
            random[..IV_LEN],
            unhex(case["iv_hex"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            derive_aead_key(key.cipher(), &key.key, &random[..IV_LEN])[..],
            unhex(case["derived_aead_key_hex"].as_str().unwrap()),
            "{name}"
        );
        let plaintext = b64(&case["plaintext_b64"]);
        let context = b64(&case["context_b64"]);
        let expected = b64(&case["ciphertext_b64"]);

        let ciphertext = key.encrypt_with_random(&plaintext, &context, &random);
        assert_eq!(ciphertext, expected, "{name}");
        assert_eq!(
            ciphertext.len() as u64,
            case["ciphertext_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            *key.decrypt(&expected, &context).unwrap(),
            plaintext,
            "{name}"
        );
    }
}

#[test]
fn current_negative_vectors_fail() {
    let file = vectors(CURRENT);
    for case in cases(&file, "negative_cases") {
        let key = key_of(case);
        let result = key.decrypt(&b64(&case["ciphertext_b64"]), &b64(&case["context_b64"]));
        assert_eq!(result.unwrap_err(), DecryptError, "{}", case["name"]);
    }
}

#[test]
fn legacy_vectors_decrypt_and_equal_their_current_form() {
    let file = vectors(LEGACY);
    for list in ["json", "msgpack"] {
        for case in cases(&file, list) {
            let key = key_of(case);
            assert_eq!(key.key_id(), case["key_id"].as_str().unwrap());
            let ciphertext = ciphertext_of(case);
            if let Some(text) = case.get("ciphertext_text").and_then(Value::as_str) {
                assert_eq!(ciphertext, text.as_bytes());
            }
            if let Some(hex) = case.get("ciphertext_hex").and_then(Value::as_str) {
                assert_eq!(ciphertext, unhex(hex));
            }
            let plaintext = b64(&case["plaintext_b64"]);
            let context = b64(&case["context_b64"]);
            let current = b64(&case["equivalent_current_binary_b64"]);

            let parsed = legacy::parse(&ciphertext).expect("legacy wrapping is recognised");
            assert_eq!(
                [&parsed.sealed[..], &parsed.iv, &parsed.nonce].concat(),
                current
            );
            assert_eq!(parsed.algorithm, cipher_of(case));

            assert_eq!(
                *key.decrypt(&ciphertext, &context).unwrap(),
                plaintext,
                "{list} {case}"
            );
            assert_eq!(
                *key.decrypt(&current, &context).unwrap(),
                plaintext,
                "{list} {case}"
            );
            assert!(key.decrypt(&ciphertext, b"other context").is_err());
        }
    }
}

#[test]
fn upstream_go_vectors() {
    let file = vectors(UPSTREAM);
    let all = cases(&file, "decrypt_cases");
    assert_eq!(all.len(), 15);
    for case in all {
        let index = &case["index"];
        let key = key_of(case);
        let result = key.decrypt(&ciphertext_of(case), &b64(&case["context_b64"]));
        if case["should_fail"].as_bool().unwrap() {
            assert_eq!(result.unwrap_err(), DecryptError, "case {index}");
        } else {
            assert_eq!(
                *result.expect("decrypts"),
                b64(&case["plaintext_b64"]),
                "case {index}"
            );
        }
    }
}

#[test]
fn stored_key_vectors_parse_to_their_fields() {
    let file = vectors(STORED);
    let all = cases(&file, "cases");
    assert_eq!(all.len(), 7);
    for case in all {
        let form = case["form"].as_str().unwrap();
        let stored = case["stored_value"].as_str().unwrap();
        let parsed = &case["parsed"];
        let key = KeyVersion::parse(stored.as_bytes()).unwrap_or_else(|e| panic!("{form}: {e}"));

        assert_eq!(key.cipher(), cipher_of(parsed), "{form}");
        assert_eq!(key.key[..], b64(&parsed["key_b64"]), "{form}");
        assert_eq!(
            key.created_at_rfc3339(),
            parsed["created_at"].as_str().unwrap(),
            "{form}"
        );
        assert_eq!(
            key.created_by(),
            parsed["created_by"].as_str().unwrap(),
            "{form}"
        );
        assert_eq!(
            timefmt::parse_rfc3339(parsed["created_at"].as_str().unwrap()),
            Some(key.created_at_unix()),
            "{form}"
        );
        match parsed.get("hmac_key_b64") {
            Some(hmac_key) => {
                assert_eq!(parsed["hmac_hash"], "SHA256");
                assert_eq!(key.hmac_key.as_ref().unwrap()[..], b64(hmac_key), "{form}");
                assert!(!key.has_undefined_algorithm());
            }
            None => {
                assert!(parsed["hmac"].is_null());
                assert!(!key.has_hmac(), "{form}");
                assert_eq!(key.hmac(b"message"), None);
            }
        }
        if let Some(hex) = case.get("protobuf_hex").and_then(Value::as_str) {
            // Re-encoding reproduces the Go value byte for byte.
            assert_eq!(key.encode(), stored, "{form}");
            assert_eq!(STANDARD.decode(stored).unwrap(), unhex(hex));
        } else {
            // A legacy key is written back in a JSON form that reads the same.
            let again = KeyVersion::parse(key.encode().as_bytes()).unwrap();
            assert_eq!(again.cipher(), key.cipher());
            assert_eq!(again.key, key.key);
            assert_eq!(again.created_at_unix(), key.created_at_unix());
            assert_eq!(again.created_by(), key.created_by());
            assert_eq!(
                again.has_undefined_algorithm(),
                key.has_undefined_algorithm()
            );
            assert!(!again.has_hmac());
        }
    }
}

#[test]
fn json_keys_without_algorithm_are_undefined_and_others_are_not() {
    let file = vectors(STORED);
    let undefined = file["note_undefined_algorithm_example"].as_str().unwrap();
    let key = KeyVersion::parse(undefined.as_bytes()).unwrap();
    assert!(key.has_undefined_algorithm());
    assert_eq!(key.cipher(), Cipher::Aes256);
    for case in cases(&file, "cases") {
        let stored = case["stored_value"].as_str().unwrap();
        let expected = stored.starts_with('{') && !stored.contains("\"algorithm\"");
        assert_eq!(
            KeyVersion::parse(stored.as_bytes())
                .unwrap()
                .has_undefined_algorithm(),
            expected,
            "{stored}"
        );
    }
}

/// The §3.5 pitfall: Go KES reads an undefined-algorithm key as AES256 and cannot
/// decrypt the ChaCha20 ciphertexts such keys made on hosts without AES-NI. We can.
#[test]
fn undefined_algorithm_keys_follow_the_legacy_ciphertexts_algorithm() {
    let file = vectors(LEGACY);
    for list in ["json", "msgpack"] {
        for case in cases(&file, list) {
            let key = undefined_algorithm_key(&b64(&case["master_key_b64"]));
            let plaintext = b64(&case["plaintext_b64"]);
            let context = b64(&case["context_b64"]);
            assert_eq!(
                *key.decrypt(&ciphertext_of(case), &context).unwrap(),
                plaintext,
                "{case}"
            );
            // The current layout records no algorithm: it is AES256, as in Go.
            let current = b64(&case["equivalent_current_binary_b64"]);
            assert_eq!(
                key.decrypt(&current, &context).is_ok(),
                cipher_of(case) == Cipher::Aes256,
                "{case}"
            );
        }
    }
}

/// Keys with a defined type ignore the legacy algorithm field, as Go does.
#[test]
fn defined_keys_ignore_the_legacy_algorithm_field() {
    let file = vectors(LEGACY);
    let case = &cases(&file, "msgpack")[0]; // AES256-GCM_SHA256
    assert_eq!(cipher_of(case), Cipher::Aes256);
    let aes = key_of(case);
    let ciphertext = ciphertext_of(case);
    let context = b64(&case["context_b64"]);
    let mut relabelled = ciphertext.clone();
    // Swap in the XCHACHA20-POLY1305 label of the same length (both are 17 bytes).
    let label = b"AES256-GCM_SHA256";
    let at = relabelled
        .windows(label.len())
        .position(|w| w == label)
        .unwrap();
    relabelled[at..at + label.len()].copy_from_slice(b"XCHACHA20-POLY130");
    // An unknown label makes the msgpack invalid: then the bytes are tried as the
    // current layout, and fail.
    assert!(aes.decrypt(&relabelled, &context).is_err());
    let relabelled = [
        &[0x95, 0xb2][..],
        b"XCHACHA20-POLY1305",
        &ciphertext[2 + label.len()..],
    ]
    .concat();
    assert_eq!(
        *aes.decrypt(&relabelled, &context).unwrap(),
        b64(&case["plaintext_b64"])
    );
    let chacha = KeyVersion::import(&b64(&case["master_key_b64"]), Cipher::ChaCha20, "").unwrap();
    assert!(chacha.decrypt(&ciphertext, &context).is_err());
}

#[test]
fn hmac_vectors() {
    let file = vectors(HMAC);
    for case in cases(&file, "cases") {
        assert_eq!(case["hash"], "SHA256");
        let stored = {
            let template = KeyVersion::generate(Cipher::Aes256, "");
            let mut key = template.clone();
            key.hmac_key = Some(key_array(&b64(&case["hmac_key_b64"])).unwrap());
            key.encode()
        };
        let key = KeyVersion::parse(stored.as_bytes()).unwrap();
        let sum = key.hmac(&b64(&case["message_b64"])).unwrap();
        assert_eq!(sum[..], b64(&case["hmac_b64"]));
    }
}

#[test]
fn tampered_or_truncated_ciphertexts_fail_without_panicking() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = KeyVersion::generate(cipher, "");
        let ciphertext = key.encrypt(b"a secret plaintext", b"ctx");
        assert_eq!(
            *key.decrypt(&ciphertext, b"ctx").unwrap(),
            b"a secret plaintext"
        );
        for len in 0..ciphertext.len() {
            assert_eq!(
                key.decrypt(&ciphertext[..len], b"ctx"),
                Err(DecryptError),
                "{cipher:?} len {len}"
            );
        }
        for index in 0..ciphertext.len() {
            let mut tampered = ciphertext.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                key.decrypt(&tampered, b"ctx"),
                Err(DecryptError),
                "{cipher:?} byte {index}"
            );
        }
        let mut longer = ciphertext.clone();
        longer.push(0);
        assert_eq!(key.decrypt(&longer, b"ctx"), Err(DecryptError));
    }
}

#[test]
fn malformed_legacy_wrappings_fail_without_panicking() {
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let inputs: [&[u8]; 13] = [
        b"",
        &[0x95],
        &[0x95, 0xa6],
        &[0x95, 0xdb, 0xff, 0xff, 0xff, 0xff],
        &[0x95, 0xa0, 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff],
        &[0x95, 0xa6, b'A', b'E', b'S', b'2', b'5', b'6', 0xa0, 0xc4, 16],
        b"{",
        b"{}",
        b"null",
        br#"{"aead":"AES-256-GCM-HMAC-SHA-256"}"#,
        br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"!!","nonce":"","bytes":""}"#,
        br#"{"aead":5,"iv":"EBESExQVFhcYGRobHB0eHw==","nonce":"ICEiIyQlJicoKSor","bytes":""}"#,
        br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EBESExQVFhcYGRobHB0eHw==","nonce":"ICEiIyQlJicoKSor","bytes":""}"#,
    ];
    for input in inputs {
        assert_eq!(key.decrypt(input, b""), Err(DecryptError), "{input:?}");
    }
}

#[test]
fn legacy_json_ciphertext_fields_match_like_go() {
    // Go's encoding/json matches field names case-insensitively, and the last of
    // duplicate fields wins.
    let file = vectors(LEGACY);
    let case = &cases(&file, "json")[0];
    let key = key_of(case);
    let text = case["ciphertext_text"].as_str().unwrap();
    let shouted = text
        .replace("\"aead\"", "\"AEAD\"")
        .replace("\"iv\"", "\"Iv\"");
    assert_eq!(
        *key.decrypt(shouted.as_bytes(), b"").unwrap(),
        b64(&case["plaintext_b64"])
    );
    let duplicated = text.replacen('{', r#"{"iv":"AAAA","#, 1);
    assert_eq!(
        *key.decrypt(duplicated.as_bytes(), b"").unwrap(),
        b64(&case["plaintext_b64"])
    );
    // The ignored key ID must still be a string (or null).
    let null_id = text.replace("\"b7e2507f15b480f29e9f4428c6cbd66b\"", "null");
    assert_eq!(
        *key.decrypt(null_id.as_bytes(), b"").unwrap(),
        b64(&case["plaintext_b64"])
    );
    let numeric_id = text.replace("\"b7e2507f15b480f29e9f4428c6cbd66b\"", "7");
    assert_ne!(numeric_id, text);
    assert_eq!(key.decrypt(numeric_id.as_bytes(), b""), Err(DecryptError));
}

#[test]
fn wrong_context_fails_and_empty_context_is_no_context() {
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let ciphertext = key.encrypt(b"plaintext", b"");
    assert!(key.decrypt(&ciphertext, b"").is_ok());
    assert_eq!(key.decrypt(&ciphertext, b"x"), Err(DecryptError));
    let ciphertext = key.encrypt(b"plaintext", br#"{"bucket":"a"}"#);
    assert_eq!(
        key.decrypt(&ciphertext, br#"{"bucket":"b"}"#),
        Err(DecryptError)
    );
    assert_eq!(key.decrypt(&ciphertext, b""), Err(DecryptError));
}

#[test]
fn chacha20_round_trip_and_overhead() {
    let key = KeyVersion::generate(Cipher::ChaCha20, "");
    for len in [0, 1, 15, 16, 17, 64, 1000] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let ciphertext = key.encrypt(&plaintext, b"context");
        assert_eq!(ciphertext.len(), plaintext.len() + OVERHEAD);
        assert_eq!(*key.decrypt(&ciphertext, b"context").unwrap(), plaintext);
    }
    // The same bytes as an AES key do not open it: the stored type picks the AEAD.
    let ciphertext = key.encrypt(b"x", b"");
    let aes = KeyVersion::import(&key.key[..], Cipher::Aes256, "").unwrap();
    assert_eq!(aes.decrypt(&ciphertext, b""), Err(DecryptError));
}

#[test]
fn generated_keys_ivs_and_deks_never_repeat() {
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let key = KeyVersion::generate(Cipher::Aes256, "");
        assert!(seen.insert(key.key.to_vec()));
        assert!(seen.insert(key.hmac_key.as_ref().unwrap().to_vec()));
        assert!(seen.insert(random_dek().to_vec()));
        assert!(seen.insert(key.encrypt(b"", b"")[TAG_LEN..].to_vec()));
    }
}

#[test]
fn threads_draw_different_random_bytes() {
    let draw = || (0..40).map(|_| random_dek().to_vec()).collect::<Vec<_>>();
    let other = std::thread::spawn(draw).join().unwrap();
    let mine = draw();
    let all: HashSet<Vec<u8>> = other.iter().chain(&mine).cloned().collect();
    assert_eq!(all.len(), 80);
}
