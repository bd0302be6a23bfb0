//! A client that hangs up mid-stream stops its generation: the server drops the
//! request's stream, which aborts it in the engine. Its own binary, so no other
//! request shares the engine.

#[path = "serve/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;
use http_body_util::BodyExt as _;
use serde_json::json;

#[tokio::test]
async fn hanging_up_mid_stream_aborts_the_request() {
    let body = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_gen_len": 2048});
    let path = format!(
        "/model/{}/invoke-with-response-stream",
        encode_label(LLAMA_ID)
    );
    let resp = open(GOOD, "POST", &path, body.to_string().as_bytes()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut frames = 0;
    while frames < 3 {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => frames += 1,
            Some(Ok(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    drop(body);
    let engine = &server().engine;
    let t0 = Instant::now();
    loop {
        let s = engine.stats();
        if s.running == 0 && s.waiting == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "request still running: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing else runs on this engine: exactly this request was aborted.
    assert_eq!(
        engine.stats().aborted_requests,
        1,
        "the dropped stream was not aborted: {:?}",
        engine.stats()
    );
    let computed = engine.stats().tokens_computed;
    assert!(
        computed < 1024,
        "{computed} tokens computed: the request ran on"
    );
}
