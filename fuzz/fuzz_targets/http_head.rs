//! Parsing arbitrary request heads and chunked bodies never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, used))) = kes::http::parse_head(data) {
        let _ = req.framing();
        let _ = req.keep_alive();
        let _ = kes::api::preflight(&req, Some(data.len() as u64));
        let _ = kes::http::decode_chunked(&data[used..], 1 << 20);
    }
    let _ = kes::http::decode_chunked(data, 1 << 20);
});
