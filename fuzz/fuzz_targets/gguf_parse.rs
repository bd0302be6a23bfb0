//! GGUF header parsing on arbitrary bytes: errors are fine, panics are bugs.
//! Run: `cargo +nightly fuzz run gguf_parse` (from the repo root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = factory_models::gguf::parse(data, std::path::Path::new("fuzz.gguf"));
});
