//! Parsing arbitrary stored-key values (JSON forms, base64 protobuf) never panics, and
//! what parses re-encodes to something that parses again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = kes::crypto::KeyVersion::parse(data) {
        let encoded = key.encode();
        kes::crypto::KeyVersion::parse(encoded.as_bytes()).expect("an encoded key parses");
    }
});
