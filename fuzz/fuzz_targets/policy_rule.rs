//! Parsing and matching arbitrary policy rules never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (rule, path) = text.split_once('\n').unwrap_or((text, "/v1/key/create/x"));
        if let Ok(rule) = kes::policy::Rule::parse(rule) {
            let _ = rule.matches(path);
        }
        let _ = kes::policy::glob_match(rule, path);
    }
});
