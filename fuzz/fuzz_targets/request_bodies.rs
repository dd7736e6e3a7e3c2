//! Decoding arbitrary JSON request bodies of every key route never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kes::api::key::decode_every_body(data);
});
