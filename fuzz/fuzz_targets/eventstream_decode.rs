//! Event-stream decoding on arbitrary bytes: errors are fine, panics are bugs.
//! Run: `cargo +nightly fuzz run eventstream_decode` (from the repo root).
#![no_main]

use factory_server::bedrock::eventstream::{decode, decode_frame, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    // Walk the input as a stream, as a client reading a response body does.
    let mut rest = data;
    while let Ok(Some((message, used))) = decode_frame(rest) {
        // Whatever decodes must re-encode to the same bytes.
        assert_eq!(encode(&message).as_deref(), Ok(&rest[..used]));
        rest = &rest[used..];
    }
});
