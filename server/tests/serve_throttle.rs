//! Beyond `max_in_flight_requests` generation requests, new ones get
//! ThrottlingException (429) as Bedrock sends it; token counting is not
//! limited, and capacity returns when a stream is dropped. Its own binary,
//! with a limit of one.

#[path = "serve/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::*;
use http_body_util::BodyExt as _;
use serde_json::json;

#[tokio::test]
async fn a_full_server_throttles_until_a_stream_ends() {
    MAX_IN_FLIGHT.store(1, Ordering::Relaxed);
    let path = format!(
        "/model/{}/invoke-with-response-stream",
        encode_label(LLAMA_ID)
    );
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_gen_len": 2048});
    let resp = open(GOOD, "POST", &path, long.to_string().as_bytes()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // One frame in: the request is in the engine.
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => break,
            Some(Ok(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    let ask = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]});
    let r = post(MODEL_ID, "converse", &ask).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r
        .header("x-amzn-ErrorType")
        .starts_with("ThrottlingException"));
    assert_eq!(
        r.json()["message"],
        "Too many requests, please wait before trying again."
    );
    let count = json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}}});
    assert_eq!(post(MODEL_ID, "count-tokens", &count).await.status, 200);

    drop(body);
    let t0 = Instant::now();
    while server().engine.in_flight() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "stream never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post(MODEL_ID, "converse", &ask).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
