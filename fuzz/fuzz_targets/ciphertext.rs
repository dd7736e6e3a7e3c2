//! Decrypting arbitrary bytes (every ciphertext format) never panics; a resident-key
//! envelope that parses encodes back to the same bytes; a format-2 envelope (under an
//! intermediate key) that parses has a header that is its wrap's encoding and opens, if
//! at all, without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use kes::crypto::{Cipher, KeyVersion};
    let (context, ciphertext) = data.split_at(data.len().min(data.first().copied().unwrap_or(0) as usize % 8));
    for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
        let key = KeyVersion::import(&[7u8; 32], cipher, "").unwrap();
        let _ = key.decrypt(ciphertext, context);
    }
    if let Ok(sealed) = kes::keystore::Sealed::parse(ciphertext) {
        assert_eq!(sealed.encode(), ciphertext);
    }
    use kes::keystore::sealed::{Envelope, ik_header};
    if let Ok(Envelope::Intermediate(envelope)) = Envelope::parse(ciphertext) {
        assert_eq!(ik_header(&envelope.wrapped).unwrap(), envelope.header);
        assert!(ciphertext.starts_with(envelope.header));
        let _ = envelope.open(&[7u8; 32], context);
    }
});
