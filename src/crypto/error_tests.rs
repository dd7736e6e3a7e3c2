//! What the errors of stored keys and ciphertexts say: they reach logs and startup
//! errors, so they name what is wrong, and never the key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Cipher, DecryptError, KeyError, KeyVersion};

#[test]
fn stored_key_errors_name_what_is_wrong() {
    let key = STANDARD.encode([0x5a; 32]);
    for (stored, expected) in [
        (
            r#"{"bytes":"AAAA"}"#.to_string(),
            "invalid key length: 3 bytes, expected 32",
        ),
        (
            format!(r#"{{"bytes":"{key}","algorithm":"AES128"}}"#),
            r#"key algorithm "AES128" is not supported"#,
        ),
        (
            format!(r#"{{"bytes":"{key}","created_at":"yesterday"}}"#),
            "stored key has an invalid creation time",
        ),
        (
            r#"{"bytes":"not base64"}"#.to_string(),
            "invalid stored key: JSON key bytes are not base64",
        ),
        (
            "!!!".to_string(),
            "invalid stored key: neither JSON nor base64",
        ),
    ] {
        let err = KeyVersion::parse(stored.as_bytes()).expect_err(&stored);
        assert_eq!(err.to_string(), expected, "{stored}");
        assert!(!err.to_string().contains(&key));
    }
    assert_eq!(
        KeyError::UnknownKeyType(7).to_string(),
        "key type 7 is not supported"
    );
    assert_eq!(
        KeyError::InvalidHmacKey.to_string(),
        "stored key has no valid HMAC-SHA256 key"
    );
}

#[test]
fn a_ciphertext_that_does_not_decrypt_says_only_that() {
    let key = KeyVersion::generate(Cipher::Aes256, "");
    let mut ciphertext = key.encrypt(b"secret", b"context");
    let err = key.decrypt(&ciphertext, b"other context").unwrap_err();
    ciphertext[0] ^= 1;
    assert_eq!(key.decrypt(&ciphertext, b"context").unwrap_err(), err);
    assert_eq!(err, DecryptError);
    assert_eq!(
        err.to_string(),
        "decryption failed: ciphertext is not authentic"
    );
}
