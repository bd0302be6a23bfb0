//! SigV4/bearer `Authorization` parsing and verification on arbitrary header values:
//! errors are fine, panics are bugs.
//! Run: `cargo +nightly fuzz run sigv4_auth_header` (from the repo root).
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use factory_server::bedrock::bearer::ApiKeys;
use factory_server::bedrock::sigv4::{parse_authorization, SigV4Verifier};
use factory_server::bedrock::{Authenticator, RequestParts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_authorization(value);

    let credentials = HashMap::from([("AKIDEXAMPLE".to_string(), "secret".to_string())]);
    let mut keys = ApiKeys::new();
    keys.insert("k", "token");
    let auth = Authenticator::new(Some(SigV4Verifier::new(credentials)), keys);
    let headers = [
        ("host", "127.0.0.1:8080"),
        ("x-amz-date", "20240101T000000Z"),
        ("authorization", value),
    ];
    let request = RequestParts {
        method: "POST",
        raw_path: "/model/m%3A0/invoke",
        raw_query: "",
        headers: &headers,
        body: b"{}",
    };
    let _ = auth.authenticate(&request, UNIX_EPOCH + Duration::from_secs(1_704_067_200));
});
