//! Parsing arbitrary stored-key values (JSON forms, base64 protobuf) never panics, and
//! what parses re-encodes, in the form of every `compat.oldest_reader` level, to
//! something that parses again as the same key (and in the form the level promises).
#![no_main]
use libfuzzer_sys::fuzz_target;

use kes::crypto::{KeyVersion, OldestReader, StoredForm};

fuzz_target!(|data: &[u8]| {
    let form = StoredForm::of(data);
    let Ok(key) = KeyVersion::parse(data) else {
        assert_eq!(form, StoredForm::Unreadable);
        return;
    };
    assert_ne!(form, StoredForm::Unreadable);
    for level in [OldestReader::V017, OldestReader::Y2023, OldestReader::Current] {
        let encoded = key.encode_for(level);
        let again = KeyVersion::parse(encoded.as_bytes()).expect("an encoded key parses");
        assert_eq!(again.key_id(), key.key_id());
        assert!(StoredForm::of(encoded.as_bytes()).readable_at(level));
    }
});
