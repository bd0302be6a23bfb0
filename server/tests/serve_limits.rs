//! Queue limits, request timeouts, failures in the middle of a stream and
//! client disconnects, over real HTTP. The engines run the deterministic
//! `FakeExecutor` (real scheduler, engine loop and detokenizer, default model's
//! tokenizer and chat template) so a test controls how long steps take and
//! which step fails; each test has its own model (own engine) in one service.

#[path = "serve/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use factory_engine::testing::FakeExecutor;
use factory_engine::{EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_server::bedrock::eventstream::Message;
use factory_server::{ModelLimits, ModelSlot, ServedModel, Service, ServiceConfig};
use harness::*;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

/// Runs one at a time and queues one: the third request is throttled.
const QUEUE: &str = "fake-queue";
const FAIL_CONVERSE: &str = "fake-fail-converse";
const FAIL_INVOKE: &str = "meta.fake-fail-invoke-v1:0";
const TIMEOUT: &str = "fake-timeout";
const TIMEOUT_INVOKE: &str = "meta.fake-timeout-invoke-v1:0";
const TIMEOUT_STREAM: &str = "fake-timeout-stream";
const DISCONNECT: &str = "fake-disconnect";
const OTHER: &str = "fake-other";

struct Fixture {
    addr: SocketAddr,
    service: Service,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut bundle = default_bundle();
        let template = bundle.chat_template.take().map(Arc::new);
        let tokenizer = Arc::new(bundle.tokenizer.clone());
        let vocab = bundle.model.config.vocab_size;
        let model = |id: &str, max_num_seqs: usize, fake: &dyn Fn(&mut FakeExecutor), limits| {
            let mut exec = FakeExecutor::new(vocab, 16, 1024, 8192);
            // Plain text tokens of the SmolLM2 vocabulary: never end-of-turn.
            exec.token_range = 1000..2000;
            fake(&mut exec);
            let core = EngineCore::new(
                Box::new(exec),
                tokenizer.clone(),
                bundle.eos_token_ids.clone(),
                EngineConfig {
                    scheduler: SchedulerConfig {
                        max_num_seqs,
                        max_num_batched_tokens: 512,
                        ..SchedulerConfig::default()
                    },
                    prefix_caching: true,
                },
            );
            let engine = EngineHandle::spawn(core).expect("engine starts");
            let mut m = ServedModel::new(id, engine, tokenizer.clone(), template.clone());
            m.limits = limits;
            Arc::new(ModelSlot::ready(m))
        };
        let slow = |f: &mut FakeExecutor| f.step_delay = Duration::from_millis(20);
        let fail = |f: &mut FakeExecutor| f.fail_at_step = Some(4);
        let one_second = ModelLimits {
            request_timeout: Some(Duration::from_secs(1)),
            ..ModelLimits::default()
        };
        let models = vec![
            model(
                QUEUE,
                1,
                &slow,
                ModelLimits {
                    max_queued_requests: 1,
                    ..ModelLimits::default()
                },
            ),
            model(FAIL_CONVERSE, 8, &fail, ModelLimits::default()),
            model(FAIL_INVOKE, 8, &fail, ModelLimits::default()),
            model(TIMEOUT, 8, &slow, one_second.clone()),
            model(TIMEOUT_INVOKE, 8, &slow, one_second.clone()),
            model(TIMEOUT_STREAM, 8, &slow, one_second),
            model(DISCONNECT, 8, &slow, ModelLimits::default()),
            model(OTHER, 8, &|_| {}, ModelLimits::default()),
        ];
        let config = ServiceConfig {
            max_body_bytes: MAX_BODY,
            default_max_tokens: 8,
            ..ServiceConfig::default()
        };
        let service = Service::with_models(config, test_auth(), models);
        let addr = spawn_service(service.clone());
        Fixture { addr, service }
    })
}

fn engine(id: &str) -> EngineHandle {
    let slot = fixture()
        .service
        .models()
        .iter()
        .find(|m| m.id() == id)
        .expect("model");
    slot.model().expect("ready").engine.clone()
}

fn converse(max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": "Count to a thousand."}]}],
        "inferenceConfig": {"maxTokens": max_tokens}
    })
}

/// Waits (bounded) until `ok` holds for the engine's stats.
async fn wait_for(id: &str, what: &str, ok: impl Fn(&factory_engine::EngineStats) -> bool) {
    let e = engine(id);
    let t0 = Instant::now();
    while !ok(&e.stats()) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{id}: {what}: {:?}",
            e.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_stream(id: &str, op: &str, body: &Value) -> hyper::body::Incoming {
    let path = format!("/model/{}/{op}", encode_label(id));
    let resp = open_at(
        fixture().addr,
        GOOD,
        "POST",
        &path,
        body.to_string().as_bytes(),
    )
    .await;
    let status = resp.status();
    let body = resp.into_body();
    if status != 200 {
        let b = body.collect().await.expect("body").to_bytes();
        panic!("{status}: {}", String::from_utf8_lossy(&b));
    }
    body
}

async fn read_all(body: hyper::body::Incoming) -> Reply {
    Reply {
        status: 200,
        headers: http::HeaderMap::new(),
        body: body.collect().await.expect("body").to_bytes(),
    }
}

fn payload(m: &Message) -> Value {
    serde_json::from_slice(&m.payload).expect("payload is JSON")
}

#[tokio::test]
async fn beyond_running_plus_queued_requests_a_model_throttles() {
    let addr = fixture().addr;
    // max_num_seqs 1 + max_queued_requests 1: two long streams fill the model.
    let first = open_stream(QUEUE, "converse-stream", &converse(100_000)).await;
    let second = open_stream(QUEUE, "converse-stream", &converse(100_000)).await;
    wait_for(QUEUE, "one running, one waiting", |s| {
        s.running == 1 && s.waiting == 1
    })
    .await;
    let r = post_at(addr, QUEUE, "converse", &converse(4)).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "ThrottlingException");
    assert_eq!(
        r.json()["message"],
        "Too many requests, please wait before trying again."
    );
    // The same for streams, before any byte of the stream.
    let path = format!("/model/{QUEUE}/converse-stream");
    let body = converse(4).to_string();
    let r = send_at(addr, GOOD, "POST", &path, body.as_bytes()).await;
    assert_eq!(r.status, 429);
    // Counting tokens generates nothing and is not limited.
    let count = json!({"input": {"converse": converse(4)}});
    assert_eq!(
        post_at(addr, QUEUE, "count-tokens", &count).await.status,
        200
    );
    // Other models are not affected by this one's queue.
    let r = post_at(addr, OTHER, "converse", &converse(2)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    drop((first, second));
    let e = engine(QUEUE);
    let t0 = Instant::now();
    while e.in_flight() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "streams never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = post_at(addr, QUEUE, "converse", &converse(4)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["usage"]["outputTokens"], 4);
}

#[tokio::test]
async fn an_engine_failure_mid_stream_ends_converse_stream_with_an_exception_frame() {
    let body = open_stream(FAIL_CONVERSE, "converse-stream", &converse(100)).await;
    let frames = read_all(body).await.frames();
    let (last, events) = frames.split_last().expect("frames");
    assert_eq!(
        events[0].string_header(":event-type"),
        Some("messageStart"),
        "the stream had started"
    );
    assert!(events
        .iter()
        .all(|m| m.string_header(":message-type") == Some("event")));
    // Steps 1-3 made tokens; step 4 failed.
    assert!(events.len() <= 4, "{} events", events.len());
    assert_eq!(last.string_header(":message-type"), Some("exception"));
    assert_eq!(
        last.string_header(":exception-type"),
        Some("modelStreamErrorException")
    );
    let p = payload(last);
    assert_eq!(p["originalStatusCode"], 500, "{p}");
    assert!(
        p["originalMessage"]
            .as_str()
            .is_some_and(|m| m.contains("injected failure at step 4")),
        "{p}"
    );
    assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
    // The engine goes on serving.
    let r = post_at(fixture().addr, FAIL_CONVERSE, "converse", &converse(3)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn an_engine_failure_mid_stream_ends_invoke_stream_with_an_exception_frame() {
    let body = json!({"prompt": "1, 2, 3,", "max_gen_len": 100});
    let reply =
        read_all(open_stream(FAIL_INVOKE, "invoke-with-response-stream", &body).await).await;
    let frames = reply.frames();
    let (last, chunks) = frames.split_last().expect("frames");
    assert!(!chunks.is_empty(), "no chunk before the failure");
    assert!(chunks
        .iter()
        .all(|m| m.string_header(":event-type") == Some("chunk")));
    assert_eq!(
        last.string_header(":exception-type"),
        Some("modelStreamErrorException")
    );
    let p = payload(last);
    assert_eq!(p["originalStatusCode"], 500, "{p}");
    assert!(p["originalMessage"]
        .as_str()
        .is_some_and(|m| m.contains("injected failure")));
}

#[tokio::test]
async fn a_non_streaming_request_past_its_timeout_is_408_and_aborted() {
    let t0 = Instant::now();
    let r = post_at(fixture().addr, TIMEOUT, "converse", &converse(100_000)).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "ModelTimeoutException");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{}",
        r.json()
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    wait_for(TIMEOUT, "the request aborted", |s| {
        s.aborted_requests == 1 && s.running == 0 && s.waiting == 0
    })
    .await;
}

#[tokio::test]
async fn streams_past_their_timeout_end_with_the_exception_their_union_models() {
    // InvokeModelWithResponseStream's union has modelTimeoutException.
    // Llama's largest max_gen_len, 2048 steps of 20 ms: far past the second.
    let body = json!({"prompt": "1, 2, 3,", "max_gen_len": 2048});
    let reply =
        read_all(open_stream(TIMEOUT_INVOKE, "invoke-with-response-stream", &body).await).await;
    let frames = reply.frames();
    let last = frames.last().expect("frames");
    assert!(frames.len() > 1, "chunks came before the timeout");
    assert_eq!(last.string_header(":message-type"), Some("exception"));
    assert_eq!(
        last.string_header(":exception-type"),
        Some("modelTimeoutException")
    );
    assert!(payload(last)["message"]
        .as_str()
        .is_some_and(|m| m.contains("timed out")));
    wait_for(TIMEOUT_INVOKE, "the stream aborted", |s| {
        s.aborted_requests == 1 && s.running == 0
    })
    .await;

    // ConverseStream's has none: a modelStreamErrorException whose original status is 408.
    let reply =
        read_all(open_stream(TIMEOUT_STREAM, "converse-stream", &converse(100_000)).await).await;
    let frames = reply.frames();
    let last = frames.last().expect("frames");
    assert_eq!(
        last.string_header(":exception-type"),
        Some("modelStreamErrorException")
    );
    assert_eq!(payload(last)["originalStatusCode"], 408);
    wait_for(TIMEOUT_STREAM, "the stream aborted", |s| {
        s.aborted_requests == 1 && s.running == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_hanging_up_on_a_non_streaming_request_aborts_it() {
    let e = engine(DISCONNECT);
    let before = e.stats().aborted_requests;
    let request = tokio::spawn(async {
        post_at(fixture().addr, DISCONNECT, "converse", &converse(100_000)).await
    });
    wait_for(DISCONNECT, "the request running", |s| s.running == 1).await;
    // Dropping the client's task closes its connection mid-request.
    request.abort();
    let _ = request.await;
    wait_for(DISCONNECT, "the request aborted", |s| {
        s.aborted_requests == before + 1 && s.running == 0 && s.waiting == 0
    })
    .await;
    assert_eq!(e.in_flight(), 0);
}
