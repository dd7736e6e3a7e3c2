//! Decrypting arbitrary bytes (every ciphertext format) never panics; a resident-key
//! envelope that parses encodes back to the same bytes.
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
});
