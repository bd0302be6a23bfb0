//! `factory_server::Service` end to end: the default model on a loopback port,
//! driven over HTTP with requests signed by AWS's own SigV4 signer.

#[path = "serve/harness.rs"]
mod harness;

use base64::Engine as _;
use harness::*;
use serde_json::{json, Value};

fn user(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

fn event_type(m: &factory_server::bedrock::eventstream::Message) -> String {
    m.string_header(":event-type")
        .unwrap_or_default()
        .to_string()
}

fn payload(m: &factory_server::bedrock::eventstream::Message) -> Value {
    serde_json::from_slice(&m.payload).expect("payload is JSON")
}

/// The native JSON inside each `chunk` frame.
fn chunks(reply: &Reply) -> Vec<Value> {
    reply
        .frames()
        .iter()
        .map(|m| {
            assert_eq!(m.string_header(":message-type"), Some("event"));
            assert_eq!(event_type(m), "chunk");
            let b64 = payload(m)["bytes"].as_str().expect("bytes").to_string();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            serde_json::from_slice(&raw).expect("chunk JSON")
        })
        .collect()
}

#[tokio::test]
async fn converse_answers_with_output_usage_and_metrics() {
    let mut body = user("What is the capital of France?");
    body["inferenceConfig"] = json!({"maxTokens": 5});
    let r = post(MODEL_ID, "converse", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-amzn-requestid").len(), 36);
    let v = r.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert!(v["output"]["message"]["content"][0]["text"].is_string());
    let stop = v["stopReason"].as_str().expect("stopReason");
    assert!(["end_turn", "max_tokens"].contains(&stop), "{stop}");
    let usage = &v["usage"];
    assert!(usage["inputTokens"].as_u64().expect("inputTokens") > 5);
    assert!(usage["outputTokens"].as_u64().expect("outputTokens") <= 5);
    assert_eq!(
        usage["totalTokens"].as_u64(),
        Some(
            usage["inputTokens"].as_u64().unwrap_or(0)
                + usage["outputTokens"].as_u64().unwrap_or(0)
        )
    );
    assert!(v["metrics"]["latencyMs"].is_u64());
}

#[tokio::test]
async fn converse_stops_at_max_tokens() {
    let mut body = user("Write a long story about a dragon.");
    body["inferenceConfig"] = json!({"maxTokens": 3});
    let v = post(MODEL_ID, "converse", &body).await.json();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["usage"]["outputTokens"], 3);
}

#[tokio::test]
async fn additional_fields_seed_sampling_and_reject_unknown_keys() {
    // Temperature 1 with a seed from additionalModelRequestFields: the same
    // seed draws the same text, so the seed reached the sampler.
    let run = |seed: u64| async move {
        let mut body = user("Tell me something surprising.");
        body["inferenceConfig"] = json!({"maxTokens": 12, "temperature": 1.0});
        body["additionalModelRequestFields"] =
            json!({"seed": seed, "top_k": 50, "min_p": 0.01, "repetition_penalty": 1.05});
        let r = post(MODEL_ID, "converse", &body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["output"]["message"]["content"][0]["text"].clone()
    };
    let a = run(11).await;
    assert_eq!(a, run(11).await);
    let others = [run(12).await, run(13).await, run(14).await];
    assert!(
        others.iter().any(|t| *t != a),
        "three other seeds all gave {a}"
    );

    let mut body = user("Hi");
    body["additionalModelRequestFields"] = json!({"typical_p": 0.5});
    let r = post(MODEL_ID, "converse", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("x-amzn-errortype").split(':').next(),
        Some("ValidationException")
    );
}

#[tokio::test]
async fn converse_stream_events_come_in_bedrock_order_and_match_converse() {
    let mut body = user("Name three colors.");
    body["inferenceConfig"] = json!({"maxTokens": 6, "temperature": 0});
    body["system"] = json!([{"text": "Answer briefly."}]);
    let r = post(MODEL_ID, "converse-stream", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "application/vnd.amazon.eventstream"
    );
    let frames = r.frames();
    let kinds: Vec<String> = frames.iter().map(event_type).collect();
    let n = kinds.len();
    assert!(n >= 5, "{kinds:?}");
    assert_eq!(kinds[0], "messageStart");
    assert!(
        kinds[1..n - 3].iter().all(|k| k == "contentBlockDelta"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds[n - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    assert_eq!(payload(&frames[0])["role"], "assistant");
    let mut text = String::new();
    for f in &frames[1..n - 3] {
        let p = payload(f);
        assert_eq!(p["contentBlockIndex"], 0);
        text.push_str(p["delta"]["text"].as_str().expect("delta text"));
    }
    assert_eq!(payload(&frames[n - 3])["contentBlockIndex"], 0);
    let stop = payload(&frames[n - 2]);
    let meta = payload(&frames[n - 1]);
    assert!(meta["metrics"]["latencyMs"].is_u64());
    // Greedy decoding: the stream says exactly what Converse says.
    let whole = post(MODEL_ID, "converse", &body).await.json();
    assert_eq!(
        whole["output"]["message"]["content"][0]["text"],
        text.as_str()
    );
    assert_eq!(whole["stopReason"], stop["stopReason"]);
    assert_eq!(whole["usage"], meta["usage"]);
}

#[tokio::test]
async fn invoke_llama_returns_native_body_and_token_headers() {
    let prompt = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n";
    let body = json!({"prompt": prompt, "max_gen_len": 4, "temperature": 0.0, "top_p": 0.9});
    let r = post(LLAMA_ID, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["generation"].is_string());
    let stop = v["stop_reason"].as_str().expect("stop_reason");
    assert!(["stop", "length"].contains(&stop));
    let input: u64 = r
        .header("x-amzn-bedrock-input-token-count")
        .parse()
        .expect("int");
    let output: u64 = r
        .header("x-amzn-bedrock-output-token-count")
        .parse()
        .expect("int");
    let _: u64 = r
        .header("x-amzn-bedrock-invocation-latency")
        .parse()
        .expect("int");
    assert_eq!(v["prompt_token_count"].as_u64(), Some(input));
    assert_eq!(v["generation_token_count"].as_u64(), Some(output));
    assert!(output <= 4);
}

#[tokio::test]
async fn invoke_stream_llama_ends_with_stop_reason_and_metrics() {
    let body = json!({"prompt": "The sky is", "max_gen_len": 4});
    let r = post(LLAMA_ID, "invoke-with-response-stream", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amzn-bedrock-content-type"), "application/json");
    let chunks = chunks(&r);
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(last["stop_reason"].is_string(), "{last}");
    let metrics = &last["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["outputTokenCount"], last["generation_token_count"]);
    for key in ["inputTokenCount", "invocationLatency", "firstByteLatency"] {
        assert!(metrics[key].is_u64(), "{key} in {metrics}");
    }
    assert!(rest.iter().all(|c| c["stop_reason"].is_null()));
    assert!(chunks[0]["prompt_token_count"].is_u64());
    assert_eq!(chunks[0]["prompt_token_count"], metrics["inputTokenCount"]);
}

#[tokio::test]
async fn invoke_anthropic_messages_whole_and_streamed() {
    let body = json!({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 4,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    });
    let r = post(CLAUDE_ID, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], CLAUDE_ID);
    assert_eq!(v["content"][0]["type"], "text");
    assert!(["end_turn", "max_tokens"].contains(&v["stop_reason"].as_str().unwrap_or("")));
    assert!(v["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0);

    let r = post(CLAUDE_ID, "invoke-with-response-stream", &body).await;
    let chunks = chunks(&r);
    let types: Vec<&str> = chunks.iter().filter_map(|c| c["type"].as_str()).collect();
    let n = types.len();
    assert_eq!(types[..2], ["message_start", "content_block_start"]);
    assert!(types[2..n - 3].iter().all(|t| *t == "content_block_delta"));
    assert_eq!(
        types[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = chunks[2..n - 3]
        .iter()
        .filter_map(|c| c["delta"]["text"].as_str())
        .collect();
    assert_eq!(v["content"][0]["text"], text.as_str());
    assert_eq!(
        chunks[n - 2]["usage"]["output_tokens"],
        v["usage"]["output_tokens"]
    );
    assert_eq!(
        chunks[n - 1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        v["usage"]["input_tokens"]
    );
}

#[tokio::test]
async fn invoke_mistral_titan_and_nova_bodies() {
    let r = post(
        MISTRAL_ID,
        "invoke",
        &json!({"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 3, "stop": ["\n\n"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["outputs"][0]["text"].is_string());
    assert!(v["outputs"][0]["stop_reason"].is_string());

    let r = post(
        TITAN_ID,
        "invoke",
        &json!({"inputText": "User: Hi\nBot:", "textGenerationConfig": {"maxTokenCount": 3}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["inputTextTokenCount"].as_u64().unwrap_or(0) > 0);
    assert!(
        ["FINISH", "LENGTH"].contains(&v["results"][0]["completionReason"].as_str().unwrap_or(""))
    );

    let nova = json!({"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                      "inferenceConfig": {"max_new_tokens": 3}});
    let r = post(NOVA_ID, "invoke", &nova).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert!(v["usage"]["totalTokens"].is_u64());
    let r = post(NOVA_ID, "invoke-with-response-stream", &nova).await;
    let chunks = chunks(&r);
    assert!(chunks[0].get("messageStart").is_some(), "{}", chunks[0]);
    let last = chunks.last().expect("chunks");
    assert!(
        last.get("metadata").is_some() && last.get("amazon-bedrock-invocationMetrics").is_some()
    );
}

#[tokio::test]
async fn count_tokens_matches_what_generation_counts() {
    let body = user("How many tokens is this?");
    let counted = post(
        MODEL_ID,
        "count-tokens",
        &json!({"input": {"converse": body}}),
    )
    .await;
    assert_eq!(
        counted.status,
        200,
        "{}",
        String::from_utf8_lossy(&counted.body)
    );
    let mut conv = body.clone();
    conv["inferenceConfig"] = json!({"maxTokens": 1});
    let used = post(MODEL_ID, "converse", &conv).await.json();
    assert_eq!(counted.json()["inputTokens"], used["usage"]["inputTokens"]);

    let native = json!({"prompt": "one two three", "max_gen_len": 1});
    let b64 = base64::engine::general_purpose::STANDARD.encode(native.to_string());
    let counted = post(
        LLAMA_ID,
        "count-tokens",
        &json!({"input": {"invokeModel": {"body": b64}}}),
    )
    .await;
    let used = post(LLAMA_ID, "invoke", &native).await.json();
    assert_eq!(counted.json()["inputTokens"], used["prompt_token_count"]);
}

#[tokio::test]
async fn percent_encoded_arns_and_profiles_resolve() {
    let arn = format!("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{LLAMA_ID}");
    let r = post(&arn, "invoke", &json!({"prompt": "Hi", "max_gen_len": 1})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["generation"].is_string());
}

#[tokio::test]
async fn malformed_json_is_a_validation_exception() {
    let path = format!("/model/{MODEL_ID}/converse");
    let r = send(GOOD, "POST", &path, b"{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ValidationException");
    assert!(r.json()["message"].is_string());
    assert_eq!(r.header("x-amzn-requestid").len(), 36);
}

#[tokio::test]
async fn unknown_model_is_a_validation_exception_for_every_operation() {
    for op in [
        "converse",
        "converse-stream",
        "invoke",
        "invoke-with-response-stream",
    ] {
        let r = post("meta.llama9-900b-v1:0", op, &user("hi")).await;
        assert_eq!(r.status, 400, "{op}");
        assert_eq!(r.error_code(), "ValidationException");
        assert_eq!(
            r.json()["message"],
            "The provided model identifier is invalid."
        );
    }
}

#[tokio::test]
async fn native_schema_violations_are_reported_like_bedrock() {
    let r = post(LLAMA_ID, "invoke", &json!({"max_tokens": 5})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "ValidationException");
    assert_eq!(
        r.json()["message"],
        "Malformed input request: #: extraneous key [max_tokens] is not permitted#: required key [prompt] not found, please reformat your input and try again."
    );
    let r = post(
        MODEL_ID,
        "converse",
        &json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("must start with a user message"));
}

#[tokio::test]
async fn bad_credentials_are_rejected_with_aws_error_types() {
    let path = format!("/model/{MODEL_ID}/converse");
    let body = user("hi").to_string();
    let cases = [
        (
            Credentials::SigV4 {
                akid: AKID,
                secret: "wrong",
            },
            403,
            "InvalidSignatureException",
        ),
        (
            Credentials::SigV4 {
                akid: "AKIDUNKNOWN",
                secret: SECRET,
            },
            403,
            "UnrecognizedClientException",
        ),
        (
            Credentials::None,
            403,
            "MissingAuthenticationTokenException",
        ),
        (Credentials::Bearer("nope"), 403, "AccessDeniedException"),
    ];
    for (creds, status, code) in cases {
        let r = send(creds, "POST", &path, body.as_bytes()).await;
        assert_eq!((r.status, r.error_code()), (status, code), "{creds:?}");
    }
    let mut ok = user("hi");
    ok["inferenceConfig"] = json!({"maxTokens": 1});
    let r = send(
        Credentials::Bearer(API_KEY),
        "POST",
        &path,
        ok.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn oversized_bodies_and_unknown_operations_are_refused() {
    let path = format!("/model/{MODEL_ID}/converse");
    let big = vec![b' '; MAX_BODY + 1];
    let r = send(GOOD, "POST", &path, &big).await;
    assert_eq!((r.status, r.error_code()), (400, "ValidationException"));
    let r = send(GOOD, "POST", "/async-invoke", b"{}").await;
    assert_eq!((r.status, r.error_code()), (400, "ValidationException"));
}

#[tokio::test]
async fn model_discovery_and_health() {
    let r = send(GOOD, "GET", "/foundation-models", b"").await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["modelSummaries"]
        .as_array()
        .expect("summaries")
        .iter()
        .filter_map(|s| s["modelId"].as_str().map(String::from))
        .collect();
    assert!(ids.contains(&MODEL_ID.to_string()) && ids.contains(&LLAMA_ID.to_string()));
    let r = send(GOOD, "GET", "/foundation-models?byProvider=meta", b"").await;
    assert_eq!(r.json()["modelSummaries"].as_array().map(Vec::len), Some(1));
    let r = send(
        GOOD,
        "GET",
        &format!("/foundation-models/{}", encode_label(LLAMA_ID)),
        b"",
    )
    .await;
    assert_eq!(r.json()["modelDetails"]["modelId"], LLAMA_ID);
    let r = send(GOOD, "GET", "/foundation-models/nope", b"").await;
    assert_eq!(
        (r.status, r.error_code()),
        (404, "ResourceNotFoundException")
    );
    let r = send(Credentials::None, "GET", "/ping", b"").await;
    assert_eq!(r.status, 200);
}
