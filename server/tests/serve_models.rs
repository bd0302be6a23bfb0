//! Several models behind one `Service`: routing by id and alias, per-model
//! limits, `/foundation-models` over all of them, readiness while a model
//! loads or failed, and draining. The same embedded weights serve under two
//! ids, each with its own engine and limits.

#[path = "serve/harness.rs"]
mod harness;

use std::sync::Arc;

use factory_engine::{CpuExecutor, EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_models::bundle::ModelBundle;
use factory_models::chat_template::ChatTemplate;
use factory_server::{ModelLimits, ModelSlot, ServedModel, Service, ServiceConfig};
use harness::*;
use serde_json::{json, Value};

const ALPHA: &str = "smollm2-alpha";
const BETA: &str = "smollm2-beta";

/// The default model's weights and its chat template, shared by every engine.
struct Weights {
    bundle: ModelBundle,
    template: Option<Arc<ChatTemplate>>,
}

fn weights() -> Weights {
    let mut bundle = default_bundle();
    let template = bundle.chat_template.take().map(Arc::new);
    Weights { bundle, template }
}

fn served(w: &Weights, id: &str, aliases: &[&str], limits: ModelLimits) -> ServedModel {
    let bundle = &w.bundle;
    let core = EngineCore::new(
        Box::new(CpuExecutor::new(Arc::new(bundle.model.clone()), 16, 256)),
        Arc::new(bundle.tokenizer.clone()),
        bundle.eos_token_ids.clone(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_seqs: 4,
                ..SchedulerConfig::default()
            },
            prefix_caching: true,
        },
    );
    let engine = EngineHandle::spawn(core).expect("engine starts");
    let mut m = ServedModel::new(
        id,
        engine,
        Arc::new(bundle.tokenizer.clone()),
        w.template.clone(),
    );
    m.aliases = aliases.iter().map(|a| a.to_string()).collect();
    m.limits = limits;
    m
}

fn config() -> ServiceConfig {
    ServiceConfig {
        max_body_bytes: MAX_BODY,
        default_max_tokens: 8,
        ..ServiceConfig::default()
    }
}

fn chat(text: &str, max_tokens: Option<usize>) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": [{"text": text}]}]});
    if let Some(n) = max_tokens {
        b["inferenceConfig"] = json!({"maxTokens": n});
    }
    b
}

async fn ping(addr: std::net::SocketAddr, path: &str) -> Reply {
    send_at(addr, Credentials::None, "GET", path, b"").await
}

#[tokio::test]
async fn two_models_route_by_id_and_alias_and_keep_their_own_limits() {
    let bundle = weights();
    let alpha = served(
        &bundle,
        ALPHA,
        &[LLAMA_ID],
        ModelLimits {
            max_max_tokens: Some(16),
            max_prompt_tokens: Some(40),
            ..ModelLimits::default()
        },
    );
    let beta = served(
        &bundle,
        BETA,
        &[CLAUDE_ID],
        ModelLimits {
            default_max_tokens: Some(3),
            ..ModelLimits::default()
        },
    );
    let (alpha_engine, beta_engine) = (alpha.engine.clone(), beta.engine.clone());
    let service = Service::with_models(
        config(),
        test_auth(),
        vec![
            Arc::new(ModelSlot::ready(alpha)),
            Arc::new(ModelSlot::ready(beta)),
        ],
    );
    let addr = spawn_service(service);

    let r = send_at(addr, GOOD, "GET", "/foundation-models", b"").await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["modelSummaries"]
        .as_array()
        .expect("summaries")
        .iter()
        .map(|m| m["modelId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, [ALPHA, LLAMA_ID, BETA, CLAUDE_ID]);
    for id in [ALPHA, CLAUDE_ID] {
        let path = format!("/foundation-models/{}", encode_label(id));
        assert_eq!(send_at(addr, GOOD, "GET", &path, b"").await.status, 200);
    }

    // maxTokens above alpha's maximum is refused; beta has no such limit.
    let r = post_at(addr, ALPHA, "converse", &chat("Hi", Some(17))).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "ValidationException");
    assert_eq!(
        r.json()["message"],
        "The maximum tokens you requested exceeds the model limit of 16. Try again with a maximum tokens value that is lower than 16."
    );
    // The same limit through alpha's Llama alias and its native body.
    let r = post_at(
        addr,
        LLAMA_ID,
        "invoke",
        &json!({"prompt": "Hi", "max_gen_len": 17}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = post_at(
        addr,
        LLAMA_ID,
        "invoke",
        &json!({"prompt": "Hi", "max_gen_len": 2}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post_at(addr, BETA, "converse", &chat("Hi", Some(17))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // A prompt above alpha's 40 tokens, fine for beta.
    let long = "word ".repeat(60);
    let r = post_at(addr, ALPHA, "converse", &chat(&long, Some(1))).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "Input is too long for requested model."
    );
    let path = format!("/model/{ALPHA}/converse-stream");
    let r = send_at(
        addr,
        GOOD,
        "POST",
        &path,
        chat(&long, Some(1)).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "stream refusals come before the stream");
    let r = post_at(addr, BETA, "converse", &chat(&long, Some(1))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["usage"]["inputTokens"].as_u64() > Some(40));

    // Beta's own default of 3 tokens when the request names none.
    let r = post_at(
        addr,
        CLAUDE_ID,
        "converse",
        &chat("Tell me a long story.", None),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["usage"]["outputTokens"].as_u64() <= Some(3),
        "{}",
        r.json()
    );

    // Each model ran on its own engine.
    assert!(alpha_engine.stats().tokens_computed > 0);
    assert!(beta_engine.stats().tokens_computed > alpha_engine.stats().tokens_computed);
    let r = post_at(addr, "smollm2-gamma", "converse", &chat("Hi", None)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "The provided model identifier is invalid."
    );
}

#[tokio::test]
async fn a_loading_model_is_unavailable_until_ready_and_ping_says_so() {
    let bundle = weights();
    let loading = Arc::new(ModelSlot::loading(BETA, vec![CLAUDE_ID.to_string()]));
    let service = Service::with_models(
        config(),
        test_auth(),
        vec![
            Arc::new(ModelSlot::ready(served(
                &bundle,
                ALPHA,
                &[],
                ModelLimits::default(),
            ))),
            loading.clone(),
        ],
    );
    let addr = spawn_service(service);

    for path in ["/ping", "/health"] {
        let r = ping(addr, path).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.error_code(), "ServiceUnavailableException");
        let b = r.json();
        assert_eq!(b["status"], "loading");
        assert_eq!(
            b["message"],
            format!("Loading models: {BETA}. Try again shortly.")
        );
        assert_eq!(
            b["models"],
            json!([{"id": ALPHA, "status": "ready"}, {"id": BETA, "status": "loading"}])
        );
    }
    for id in [BETA, CLAUDE_ID] {
        let r = post_at(addr, id, "converse", &chat("Hi", Some(2))).await;
        assert_eq!(r.status, 503, "{id}");
        assert_eq!(r.error_code(), "ServiceUnavailableException");
        assert_eq!(
            r.json()["message"],
            format!("The model {BETA} is loading. Try again shortly.")
        );
    }
    // The ready model serves meanwhile, and discovery lists both.
    let r = post_at(addr, ALPHA, "converse", &chat("Hi", Some(2))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = send_at(addr, GOOD, "GET", "/foundation-models", b"").await;
    assert_eq!(r.json()["modelSummaries"].as_array().map(Vec::len), Some(3));

    assert!(loading.set_ready(served(&bundle, "ignored", &[], ModelLimits::default())));
    let r = ping(addr, "/ping").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = post_at(addr, CLAUDE_ID, "converse", &chat("Hi", Some(2))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn a_model_that_failed_to_load_is_reported_and_the_others_serve() {
    let bundle = weights();
    let failed = Arc::new(ModelSlot::loading(BETA, vec![]));
    failed.set_failed("reading /models/missing.gguf: No such file or directory");
    let service = Service::with_models(
        config(),
        test_auth(),
        vec![
            Arc::new(ModelSlot::ready(served(
                &bundle,
                ALPHA,
                &[],
                ModelLimits::default(),
            ))),
            failed,
        ],
    );
    let addr = spawn_service(service);
    let r = ping(addr, "/ping").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "degraded");
    assert_eq!(
        r.json()["models"][1],
        json!({"id": BETA, "status": "failed"})
    );
    let r = post_at(addr, BETA, "converse", &chat("Hi", Some(2))).await;
    assert_eq!(r.status, 503);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("failed to load") && msg.contains("missing.gguf"),
        "{msg}"
    );
    assert_eq!(
        post_at(addr, ALPHA, "converse", &chat("Hi", Some(2)))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_draining_service_refuses_new_requests_with_503() {
    let bundle = weights();
    let service = Service::with_models(
        config(),
        test_auth(),
        vec![Arc::new(ModelSlot::ready(served(
            &bundle,
            ALPHA,
            &[],
            ModelLimits::default(),
        )))],
    );
    let addr = spawn_service(service.clone());
    assert_eq!(ping(addr, "/ping").await.status, 200);
    service.start_draining();
    let r = ping(addr, "/ping").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "draining");
    for op in ["converse", "count-tokens"] {
        let r = post_at(addr, ALPHA, op, &chat("Hi", Some(2))).await;
        assert_eq!(r.status, 503, "{op}");
        assert_eq!(r.error_code(), "ServiceUnavailableException");
    }
    // The OpenAI API refuses new generations too, in its own error shape.
    let body =
        json!({"model": ALPHA, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let r = send_at(
        addr,
        Credentials::Bearer(API_KEY),
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(
        r.json()["error"]["code"],
        "service_unavailable",
        "{:?}",
        r.body
    );
    // A drain stays observable: scrapes and the status page still answer.
    for path in ["/metrics", "/status", "/status.json"] {
        assert_eq!(ping(addr, path).await.status, 200, "{path} while draining");
    }
    let status = ping(addr, "/status.json").await.json();
    assert!(status.is_object(), "{status}");
}
