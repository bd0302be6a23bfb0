//! `/v1` beyond `max_in_flight_requests`: 429 in OpenAI's shape with
//! `retry-after`, until a stream ends. Its own binary, with a limit of one.

#[path = "serve/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::*;
use http_body_util::BodyExt as _;
use serde_json::json;

#[tokio::test]
async fn a_full_server_answers_429_until_a_stream_ends() {
    MAX_IN_FLIGHT.store(1, Ordering::Relaxed);
    let key = Credentials::Bearer(API_KEY);
    let long = json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 2048,
                      "stream": true, "temperature": 0});
    let resp = open(key, "POST", "/v1/completions", long.to_string().as_bytes()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // One event in: the request is in the engine.
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => break,
            Some(Ok(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    let ask = json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let r = send(
        key,
        "POST",
        "/v1/chat/completions",
        ask.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), "1");
    let e = &r.json()["error"];
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(e["param"], serde_json::Value::Null);
    // Listing models is not generation: still answered.
    assert_eq!(send(key, "GET", "/v1/models", b"").await.status, 200);

    // Hanging up aborts the request and frees its place.
    drop(body);
    let t0 = Instant::now();
    while server().engine.in_flight() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "stream never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = send(
        key,
        "POST",
        "/v1/chat/completions",
        ask.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
