//! `compat.oldest_reader`: every legacy vector reproduced byte for byte at its level, and
//! the stored keys of each level read back by that generation's reader as formats.md §2
//! describes it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::*;

const LEGACY: &str = include_str!("../../tests/vectors/ciphertext-legacy.json");
const STORED: &str = include_str!("../../tests/vectors/stored-keys.json");

fn vectors(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

fn b64(value: &Value) -> Vec<u8> {
    match value {
        Value::Null => Vec::new(),
        Value::String(text) => STANDARD.decode(text).expect("vector base64"),
        other => panic!("not base64: {other}"),
    }
}

fn key_of(case: &Value) -> KeyVersion {
    let cipher = Cipher::parse(case["key_type"].as_str().unwrap()).unwrap();
    KeyVersion::import(&b64(&case["master_key_b64"]), cipher, "").unwrap()
}

/// iv || nonce of a legacy vector ciphertext, taken from the vector itself.
fn random_of(ciphertext: &[u8]) -> [u8; RANDOM_LEN] {
    let parsed = legacy::parse(ciphertext).expect("a legacy vector");
    let mut random = [0; RANDOM_LEN];
    random[..16].copy_from_slice(&parsed.iv);
    random[16..].copy_from_slice(&parsed.nonce);
    random
}

#[test]
fn json_vectors_reproduce_byte_for_byte_at_v017() {
    let file = vectors(LEGACY);
    let cases = file["json"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let expected = case["ciphertext_text"].as_str().unwrap().as_bytes();
        assert_eq!(expected, b64(&case["ciphertext_b64"]).as_slice());
        let key = key_of(case);
        assert_eq!(key.key_id(), case["key_id"].as_str().unwrap());
        let written = key.encrypt_with_random_for(
            OldestReader::V017,
            &b64(&case["plaintext_b64"]),
            &b64(&case["context_b64"]),
            &random_of(expected),
        );
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(expected),
            "{}",
            case["key_type"]
        );
        // The same key read as v0.17 stores it (no algorithm) decrypts it too.
        let stored = key.encode_for(OldestReader::V017);
        let reread = KeyVersion::parse(stored.as_bytes()).unwrap();
        let plaintext = reread
            .decrypt(&written, &b64(&case["context_b64"]))
            .unwrap();
        assert_eq!(plaintext.as_slice(), b64(&case["plaintext_b64"]));
    }
}

#[test]
fn msgpack_vectors_reproduce_byte_for_byte_at_2023() {
    let file = vectors(LEGACY);
    let cases = file["msgpack"].as_array().unwrap();
    let mut exact = 0;
    for case in cases {
        let expected = b64(&case["ciphertext_b64"]);
        let key = key_of(case);
        let written = key.encrypt_with_random_for(
            OldestReader::Y2023,
            &b64(&case["plaintext_b64"]),
            &b64(&case["context_b64"]),
            &random_of(&expected),
        );
        let name = case["algorithm_string"].as_str().unwrap();
        if name == key.cipher().legacy_name() {
            assert_eq!(written, expected, "{name}");
            exact += 1;
        } else {
            // A 2023-10 vector (kes-go v0.2 names): we write the 2022 name instead, the
            // one the 2022 releases and both SDK generations accept; the rest is equal.
            let mut renamed = vec![0x95, 0xa0 | name.len() as u8];
            renamed.extend_from_slice(name.as_bytes());
            let legacy_name = key.cipher().legacy_name();
            renamed.extend_from_slice(&written[2 + legacy_name.len()..]);
            assert_eq!(written[1], 0xa0 | legacy_name.len() as u8);
            assert_eq!(renamed, expected, "{name}");
        }
        let plaintext = key.decrypt(&written, &b64(&case["context_b64"])).unwrap();
        assert_eq!(plaintext.as_slice(), b64(&case["plaintext_b64"]));
    }
    assert_eq!(exact, 2, "both 2022-name vectors reproduce exactly");
}

#[test]
fn current_level_writes_the_binary_form() {
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let random = [7; RANDOM_LEN];
    assert_eq!(
        key.encrypt_with_random_for(OldestReader::Current, b"x", b"c", &random),
        key.encrypt_with_random(b"x", b"c", &random)
    );
}

#[test]
fn every_level_round_trips_every_key_kind() {
    let undefined =
        KeyVersion::parse(format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode([9u8; 32])).as_bytes())
            .unwrap();
    let keys = [
        KeyVersion::generate(Cipher::Aes256, "me"),
        KeyVersion::generate(Cipher::ChaCha20, "me"),
        undefined,
    ];
    for key in &keys {
        for level in [
            OldestReader::V017,
            OldestReader::Y2023,
            OldestReader::Current,
        ] {
            for plaintext in [&b""[..], b"a", &[5; 300][..], &[6; 70_000][..]] {
                let ciphertext = key.encrypt_for(level, plaintext, b"ctx");
                assert_eq!(
                    key.decrypt(&ciphertext, b"ctx").unwrap().as_slice(),
                    plaintext
                );
                assert!(key.decrypt(&ciphertext, b"other").is_err());
                let first = ciphertext[0];
                match level {
                    OldestReader::V017 => assert_eq!(first, b'{'),
                    OldestReader::Y2023 => assert_eq!(first, 0x95),
                    OldestReader::Current => {
                        assert_eq!(ciphertext.len(), plaintext.len() + OVERHEAD)
                    }
                }
            }
        }
    }
}

/// What v0.17 (`internal/key/key.go @ v0.17.6`, `Parse`) does with a stored value: the
/// `bytes` field of a JSON object, 32 bytes; everything else ignored.
fn v017_reads(stored: &str) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_str(stored).ok()?;
    let bytes = STANDARD.decode(value.get("bytes")?.as_str()?).ok()?;
    (bytes.len() == 32).then_some(bytes)
}

/// What the 2022-2023 releases with kes-go v0.1 names (v0.19.2 .. 2023-09) do: a JSON
/// object; `version` absent or `v1`; `algorithm` absent, empty, or one of the two
/// 2022 names; `created_at` absent or RFC 3339; `created_by` a string.
fn reader_2022_reads(stored: &str) -> Option<(Vec<u8>, String)> {
    let value: Value = serde_json::from_str(stored).ok()?;
    let object = value.as_object()?;
    if let Some(version) = object.get("version") {
        (version.as_str()? == "v1").then_some(())?;
    }
    let algorithm = match object.get("algorithm") {
        None => String::new(),
        Some(name) => name.as_str()?.to_owned(),
    };
    ["", "AES256-GCM_SHA256", "XCHACHA20-POLY1305"]
        .contains(&algorithm.as_str())
        .then_some(())?;
    if let Some(created_at) = object.get("created_at") {
        crate::timefmt::parse_rfc3339(created_at.as_str()?)?;
    }
    if let Some(created_by) = object.get("created_by") {
        created_by.as_str()?;
    }
    let bytes = STANDARD.decode(object.get("bytes")?.as_str()?).ok()?;
    (bytes.len() == 32).then_some((bytes, algorithm))
}

/// What the 2023-10 .. 2024-01 releases (kes-go v0.2) do: as above, but an absent
/// algorithm is AES256 and a present one must be one of the four names.
fn reader_2023_10_reads(stored: &str) -> Option<Cipher> {
    let value: Value = serde_json::from_str(stored).ok()?;
    match value.get("algorithm") {
        None => Some(Cipher::Aes256),
        Some(name) => match name.as_str()? {
            "AES256" | "AES256-GCM_SHA256" => Some(Cipher::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(Cipher::ChaCha20),
            _ => None,
        },
    }
}

fn raw_key(key: &KeyVersion) -> Vec<u8> {
    key.key.to_vec()
}

#[test]
fn stored_keys_of_each_level_parse_with_that_generations_reader() {
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = KeyVersion::generate(
            cipher,
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        );

        let v017 = key.encode_for(OldestReader::V017);
        assert_eq!(
            v017,
            format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(raw_key(&key)))
        );
        assert_eq!(v017_reads(&v017), Some(raw_key(&key)));
        assert!(reader_2022_reads(&v017).is_some());
        let reread = KeyVersion::parse(v017.as_bytes()).unwrap();
        assert!(reread.has_undefined_algorithm() && !reread.has_hmac());
        assert_eq!(
            StoredForm::of(v017.as_bytes()),
            StoredForm::JsonWithoutAlgorithm
        );
        assert_eq!(
            key.encodes_losslessly_for(OldestReader::V017),
            cipher == Cipher::Aes256
        );

        let y2023 = key.encode_for(OldestReader::Y2023);
        let (bytes, algorithm) = reader_2022_reads(&y2023).expect("2022-2023 reader");
        assert_eq!(bytes, raw_key(&key));
        assert_eq!(algorithm, cipher.legacy_name());
        assert_eq!(reader_2023_10_reads(&y2023), Some(cipher));
        assert_eq!(v017_reads(&y2023), Some(raw_key(&key)));
        assert!(y2023.starts_with(r#"{"version":"v1","bytes":""#), "{y2023}");
        let reread = KeyVersion::parse(y2023.as_bytes()).unwrap();
        assert_eq!(reread.cipher(), cipher);
        assert!(!reread.has_hmac() && !reread.has_undefined_algorithm());
        assert_eq!(reread.created_at_unix(), key.created_at_unix());
        assert_eq!(reread.created_by(), key.created_by());
        assert_eq!(
            StoredForm::of(y2023.as_bytes()),
            StoredForm::JsonAlgorithm2022
        );
        assert!(key.encodes_losslessly_for(OldestReader::Y2023));

        let current = key.encode_for(OldestReader::Current);
        assert_eq!(current, key.encode());
        assert!(v017_reads(&current).is_none() && reader_2022_reads(&current).is_none());
        assert!(KeyVersion::parse(current.as_bytes()).unwrap().has_hmac());
        assert_eq!(StoredForm::of(current.as_bytes()), StoredForm::Protobuf);
    }
}

#[test]
fn stored_key_vectors_are_written_back_byte_for_byte_at_their_level() {
    let file = vectors(STORED);
    for case in file["cases"].as_array().unwrap() {
        let stored = case["stored_value"].as_str().unwrap();
        let key = KeyVersion::parse(stored.as_bytes()).unwrap();
        let form = StoredForm::of(stored.as_bytes());
        let level = match form {
            StoredForm::Protobuf => OldestReader::Current,
            _ if stored.starts_with(r#"{"bytes""#) => OldestReader::V017,
            _ => OldestReader::Y2023,
        };
        let written = key.encode_for(level);
        if form == StoredForm::JsonAlgorithm2023 {
            // The kes-go v0.2 name is written as its 2022 equivalent (A/B read only that).
            assert_eq!(form, StoredForm::of(stored.as_bytes()));
            assert_eq!(
                written,
                stored.replace(r#""ChaCha20""#, r#""XCHACHA20-POLY1305""#)
            );
        } else {
            assert_eq!(written, stored, "{}", case["form"]);
        }
    }
}

#[test]
fn stored_forms_name_their_oldest_reader() {
    let file = vectors(STORED);
    let forms: Vec<StoredForm> = file["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| StoredForm::of(case["stored_value"].as_str().unwrap().as_bytes()))
        .collect();
    use StoredForm::*;
    assert_eq!(
        forms,
        [
            Protobuf,
            Protobuf,
            JsonAlgorithm2022,
            JsonAlgorithm2022,
            JsonWithoutAlgorithm,
            JsonAlgorithm2023,
            JsonWithoutAlgorithm
        ]
    );
    assert_eq!(StoredForm::of(b"not a key"), Unreadable);
    assert!(JsonWithoutAlgorithm.readable_at(OldestReader::V017));
    assert!(!JsonAlgorithm2022.readable_at(OldestReader::V017));
    assert!(JsonAlgorithm2022.readable_at(OldestReader::Y2023));
    assert!(!JsonAlgorithm2023.readable_at(OldestReader::Y2023));
    assert!(!Protobuf.readable_at(OldestReader::Y2023));
    assert!(Protobuf.readable_at(OldestReader::Current));
    assert!(!Unreadable.readable_at(OldestReader::Current));
}

#[test]
fn level_names_parse_exactly() {
    assert_eq!("v0.17".parse(), Ok(OldestReader::V017));
    assert_eq!(" 2023 ".parse(), Ok(OldestReader::Y2023));
    assert_eq!("current".parse(), Ok(OldestReader::Current));
    assert_eq!(OldestReader::default(), OldestReader::Current);
    let err = "2022".parse::<OldestReader>().unwrap_err();
    assert!(err.contains("v0.17, 2023, current"), "{err}");
    for level in [
        OldestReader::V017,
        OldestReader::Y2023,
        OldestReader::Current,
    ] {
        assert_eq!(level.name().parse(), Ok(level));
    }
}

#[test]
fn out_of_range_creation_times_become_gos_zero_time_in_json() {
    for seconds in [i64::MAX / 2, 300_000_000_000, -70_000_000_000] {
        let message = proto::KeyVersion {
            key: Some(proto::SecretKey {
                key: vec![3; 32],
                r#type: 1,
            }),
            hmac_key: Some(proto::HmacKey {
                key: vec![4; 32],
                hash: 1,
            }),
            created_at: Some(proto::Timestamp { seconds, nanos: 5 }),
            created_by: String::new(),
        };
        let stored = STANDARD.encode(prost::Message::encode_to_vec(&message));
        let key = KeyVersion::parse(stored.as_bytes()).unwrap();
        let json = key.encode_for(OldestReader::Y2023);
        assert!(
            json.contains(r#""created_at":"0001-01-01T00:00:00Z""#),
            "{json}"
        );
        let again = KeyVersion::parse(json.as_bytes()).unwrap();
        assert_eq!(again.key_id(), key.key_id());
    }
    // In range, the time is kept to the nanosecond.
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let again = KeyVersion::parse(key.encode_for(OldestReader::Y2023).as_bytes()).unwrap();
    assert_eq!(again.created_at_unix(), key.created_at_unix());
}

#[test]
fn each_level_shows_its_config_name_and_the_forms_it_writes() {
    for (level, name, forms) in [
        (
            OldestReader::V017,
            "v0.17",
            "keys as {\"bytes\"} JSON, ciphertexts as JSON",
        ),
        (
            OldestReader::Y2023,
            "2023",
            "keys as v1 JSON, ciphertexts as msgpack",
        ),
        (
            OldestReader::Current,
            "current",
            "keys as protobuf, ciphertexts in the binary form",
        ),
    ] {
        // The banner, /v1/status and the SIGHUP log line show these.
        assert_eq!(level.to_string(), name);
        assert_eq!(level.name(), name);
        assert_eq!(level.forms(), forms);
        assert_eq!(name.parse::<OldestReader>(), Ok(level));
    }
}

#[test]
fn each_stored_form_shows_its_name_and_oldest_go_release() {
    // `kes survey` lists these per key and sums them up per release.
    let shown: Vec<(&str, Option<&str>)> = StoredForm::ALL
        .iter()
        .map(|form| (form.name(), form.oldest_go_release()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "JSON, no algorithm ({\"bytes\"} or v1)",
                Some("v0.17.0 (or older)")
            ),
            (
                "v1 JSON, 2022 algorithm names",
                Some("v0.19.2 (2022-04-07)")
            ),
            (
                "v1 JSON, 2023-10 algorithm names",
                Some("2023-10-03T00-48-37Z")
            ),
            ("base64 protobuf", Some("2024-02-29T08-12-28Z")),
            ("not a KES key", None),
        ]
    );
}
