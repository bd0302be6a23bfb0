//! `/v1` when generation fails: a stream that already started ends with one
//! `data: {"error": ...}` event and no `[DONE]`; a whole answer is a 500 in
//! OpenAI's shape. Also `--no-auth` (no key needed) and a model without a chat
//! template. The model is the engine's fake whose backend fails once a
//! sequence reaches position 16, behind its own loopback server.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use factory_engine::testing::FakeExecutor;
use factory_engine::{
    Batch, Capabilities, EngineConfig, EngineCore, EngineHandle, Executor, ExecutorError,
    StepOutput,
};
use factory_models::tokenizer::Tokenizer;
use factory_server::{Auth, ServedModel, Service, ServiceConfig};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Sequences fail when a step reaches this position.
const FAIL_AT: usize = 16;

struct FailingBackend(FakeExecutor);

impl Executor for FailingBackend {
    fn capabilities(&self) -> &Capabilities {
        self.0.capabilities()
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        if batch
            .seqs
            .iter()
            .any(|s| s.start_pos + s.tokens.len() > FAIL_AT)
        {
            return Err(ExecutorError::Backend("injected failure".into()));
        }
        self.0.execute(batch)
    }
}

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tests/fixtures/tokenizer_spm_tiny_hf");
        let tokenizer = Arc::new(
            Tokenizer::from_file(
                &dir.join("tokenizer.json"),
                Some(&dir.join("tokenizer_config.json")),
            )
            .expect("fixture tokenizer"),
        );
        let mut fake = FakeExecutor::new(1000, 4, 256, 512);
        // Ordinary tokens of the fixture, so each has text.
        fake.token_range = 5..1000;
        let core = EngineCore::new(
            Box::new(FailingBackend(fake)),
            tokenizer.clone(),
            vec![2],
            EngineConfig::default(),
        );
        let engine = EngineHandle::spawn(core).expect("engine");
        let model = ServedModel::new("fake", engine, tokenizer, None);
        let service = Service::new(ServiceConfig::default(), Auth::Disabled, model);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                service
                    .serve(listener, std::future::pending())
                    .await
                    .expect("serve");
            });
        });
        rx.recv().expect("address")
    })
}

/// POSTs `body` with no credentials; status and whole body.
async fn post(path: &str, body: &Value) -> (u16, String) {
    let addr = server();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_failure_mid_stream_is_one_error_event_and_no_done() {
    let (status, body) = post(
        "/v1/completions",
        &json!({"model": "fake", "prompt": [5, 6, 7], "max_tokens": 50, "stream": true,
                "temperature": 0, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body
        .trim_end_matches("\n\n")
        .split("\n\n")
        .map(|e| e.strip_prefix("data: ").expect("data event"))
        .collect();
    assert!(!events.contains(&"[DONE]"), "{body}");
    let (last, before) = events.split_last().expect("events");
    let err: Value = serde_json::from_str(last).expect("error JSON");
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("injected failure")));
    // Text chunks came first: the failure was after the stream started.
    assert!(!before.is_empty(), "{body}");
    for e in before {
        let chunk: Value = serde_json::from_str(e).expect("chunk");
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk["choices"][0]["text"].is_string());
    }
}

#[tokio::test]
async fn a_failure_before_the_answer_is_a_500_and_no_auth_needs_no_key() {
    let (status, body) = post(
        "/v1/completions",
        &json!({"model": "fake", "prompt": [5, 6, 7], "max_tokens": 50}),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["param"], Value::Null);

    // Short enough to finish before the failing position.
    let (status, body) = post(
        "/v1/completions",
        &json!({"model": "fake", "prompt": [5, 6, 7], "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn a_model_without_a_chat_template_refuses_messages() {
    let (status, body) = post(
        "/v1/chat/completions",
        &json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("chat template")));
}
