//! The OpenAI-compatible `/v1` API end to end: the default model behind
//! `factory_server::Service` on a loopback port, called over HTTP with bearer
//! keys. Checks OpenAI's exact shapes, SSE framing with `include_usage`,
//! logprobs, errors, and that usage is what the engine counted.

#[path = "serve/harness.rs"]
mod harness;

use harness::*;
use serde_json::{json, Value};

const KEY: Credentials<'static> = Credentials::Bearer(API_KEY);

async fn post_v1(path: &str, body: &Value) -> Reply {
    send(KEY, "POST", path, body.to_string().as_bytes()).await
}

fn chat(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

fn completion(prompt: Value, extra: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "prompt": prompt, "temperature": 0});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// The `data:` payloads of an SSE body, in order; asserts the framing.
fn sse(reply: &Reply) -> Vec<String> {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply
            .header("content-type")
            .starts_with("text/event-stream"),
        "{:?}",
        reply.headers
    );
    let text = std::str::from_utf8(&reply.body).expect("UTF-8 body");
    assert!(text.ends_with("\n\n"), "events end with a blank line");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_string()
        })
        .collect()
}

/// The JSON chunks of a successful stream (which must end with `[DONE]`).
fn chunks(reply: &Reply) -> Vec<Value> {
    let mut events = sse(reply);
    assert_eq!(events.pop().as_deref(), Some("[DONE]"));
    events
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

/// The error object of an error reply, checking OpenAI's shape and status.
fn error(reply: &Reply, status: u16) -> Value {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let e = body["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error lacks {key}: {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_engine_usage() {
    let r = post_v1(
        "/v1/chat/completions",
        &chat("What is the capital of France?", json!({"max_tokens": 12})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").starts_with("application/json"));
    assert_eq!(r.header("x-request-id").len(), 36);
    let v = r.json();
    assert!(v["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"]
        .as_u64()
        .is_some_and(|t| t.abs_diff(now()) < 600));
    assert_eq!(v["model"], MODEL_ID);
    let choices = v["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1);
    let c = &choices[0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    let text = c["message"]["content"].as_str().expect("content");
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(c["logprobs"], Value::Null);
    assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap_or("")));
    let u = &v["usage"];
    let (p, o) = (
        u["prompt_tokens"].as_u64().expect("prompt"),
        u["completion_tokens"].as_u64().expect("completion"),
    );
    assert_eq!(u["total_tokens"].as_u64(), Some(p + o));
    assert!((1..=12).contains(&o));
    // The prompt is the chat template's rendering, as Bedrock's CountTokens
    // counts the same conversation.
    let count = post(
        MODEL_ID,
        "count-tokens",
        &json!({"input": {"converse": {"messages": [
            {"role": "user", "content": [{"text": "What is the capital of France?"}]}
        ]}}}),
    )
    .await;
    assert_eq!(count.json()["inputTokens"].as_u64(), Some(p));
}

#[tokio::test]
async fn max_tokens_limits_and_max_completion_tokens_wins() {
    let r = post_v1(
        "/v1/chat/completions",
        &chat(
            "Count from one to fifty in words.",
            json!({"max_tokens": 9, "max_completion_tokens": 3}),
        ),
    )
    .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn chat_stream_chunks_match_the_whole_answer_and_usage_comes_last() {
    let ask = || chat("Name three colors.", json!({"max_tokens": 10}));
    let whole = post_v1("/v1/chat/completions", &ask()).await.json();
    let mut body = ask();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post_v1("/v1/chat/completions", &body).await;
    let chunks = chunks(&r);
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], MODEL_ID);
        assert!(c["created"].is_u64());
    }
    let (usage_chunk, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]));
    // The engine's counts; cached prompt tokens depend on what ran before.
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage_chunk["usage"][key], whole["usage"][key], "{key}");
    }
    assert!(usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());
    // Before the last, usage is present and null.
    assert!(rest.iter().all(|c| c.get("usage") == Some(&Value::Null)));
    assert_eq!(rest[0]["choices"][0]["delta"]["role"], "assistant");
    let (last, middle) = rest.split_last().expect("finish chunk");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let mut text = String::new();
    for c in middle {
        let choice = &c["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], Value::Null);
        text.push_str(choice["delta"]["content"].as_str().expect("content delta"));
    }
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("?")
    );
    assert!(middle.len() >= 2, "content arrives in several chunks");
}

#[tokio::test]
async fn streams_without_include_usage_carry_no_usage() {
    let mut body = chat("Hi", json!({"max_tokens": 3, "stream": true}));
    body["stream_options"] = json!({"include_usage": false});
    let chunks = chunks(&post_v1("/v1/chat/completions", &body).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks
        .iter()
        .all(|c| c["choices"].as_array().is_some_and(|a| a.len() == 1)));
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("length"))
    );
}

/// Checks one chat logprobs entry; returns its token's bytes.
fn check_entry(e: &Value, top_n: usize) -> Vec<u8> {
    let lp = e["logprob"].as_f64().expect("logprob");
    assert!((-9999.0..=0.0).contains(&lp), "{e}");
    let top = e["top_logprobs"].as_array().expect("top_logprobs");
    assert_eq!(top.len(), top_n, "{e}");
    let values: Vec<f64> = top
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap_or(1.0))
        .collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "sorted: {e}");
    // Greedy: the chosen token is the most likely one.
    assert_eq!(top[0]["token"], e["token"], "{e}");
    assert_eq!(top[0]["logprob"], e["logprob"]);
    let bytes: Vec<u8> = e["bytes"]
        .as_array()
        .expect("bytes")
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        e["token"].as_str().unwrap_or("?")
    );
    bytes
}

#[tokio::test]
async fn chat_logprobs_cover_each_token_and_streaming_gives_the_same() {
    let body = chat(
        "Write a sentence about the sea.",
        json!({"max_tokens": 8, "logprobs": true, "top_logprobs": 3}),
    );
    let v = post_v1("/v1/chat/completions", &body).await.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{v}");
    let content = choice["logprobs"]["content"].as_array().expect("content");
    // One entry per generated token (no end-of-turn token here): the engine's count.
    assert_eq!(
        Some(content.len() as u64),
        v["usage"]["completion_tokens"].as_u64()
    );
    let bytes: Vec<u8> = content.iter().flat_map(|e| check_entry(e, 3)).collect();
    assert_eq!(
        String::from_utf8_lossy(&bytes).trim_start(),
        choice["message"]["content"]
            .as_str()
            .unwrap_or("?")
            .trim_start()
    );

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let chunks = chunks(&post_v1("/v1/chat/completions", &stream).await);
    let streamed: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    // Same tokens and alternatives; the numbers agree up to the last bits,
    // which depend on what else shared the batch (the matmul's blocking).
    assert_eq!(streamed.len(), content.len());
    let close = |a: &Value, b: &Value| {
        let (a, b) = (a.as_f64().unwrap_or(1.0), b.as_f64().unwrap_or(2.0));
        (a - b).abs() < 1e-3
    };
    for (s, c) in streamed.iter().zip(content) {
        assert_eq!((&s["token"], &s["bytes"]), (&c["token"], &c["bytes"]));
        assert!(close(&s["logprob"], &c["logprob"]), "{s} {c}");
        let (st, ct) = (&s["top_logprobs"], &c["top_logprobs"]);
        for i in 0..3 {
            assert_eq!(st[i]["token"], ct[i]["token"]);
            assert!(close(&st[i]["logprob"], &ct[i]["logprob"]), "{st} {ct}");
        }
    }

    // logprobs without alternatives.
    let v = post_v1(
        "/v1/chat/completions",
        &chat("Hi", json!({"max_tokens": 2, "logprobs": true})),
    )
    .await
    .json();
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content");
    assert!(content.iter().all(|e| e["top_logprobs"] == json!([])));
}

#[tokio::test]
async fn a_stop_sequence_ends_the_answer_before_it() {
    let ask = chat(
        "Count from one to ten, separated by commas.",
        json!({"max_tokens": 24}),
    );
    let full = post_v1("/v1/chat/completions", &ask).await.json();
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
        .to_string();
    // A stop string from the middle of the greedy answer.
    let cut = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |c| c.0);
    let stop: String = text[cut..].chars().take(3).collect();
    assert!(!stop.is_empty(), "{text}");
    let mut body = ask.clone();
    body["stop"] = json!([stop.clone(), "never-appears-xyz"]);
    let v = post_v1("/v1/chat/completions", &body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let got = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    let first = text.find(&stop).expect("stop in text");
    assert_eq!(got, &text[..first]);
}

#[tokio::test]
async fn a_seed_reproduces_sampled_text() {
    let body = chat(
        "Tell me a story.",
        json!({"max_tokens": 10, "temperature": 1.2, "top_p": 0.95, "seed": 1234,
               "presence_penalty": 0.5, "frequency_penalty": 0.3, "user": "someone", "extra_field": [1]}),
    );
    let a = post_v1("/v1/chat/completions", &body).await.json();
    let b = post_v1("/v1/chat/completions", &body).await.json();
    assert_eq!(
        a["choices"][0]["message"], b["choices"][0]["message"],
        "{a} {b}"
    );
}

#[tokio::test]
async fn completions_take_every_prompt_form() {
    let v = post_v1(
        "/v1/completions",
        &completion(json!("The capital of France is"), json!({"max_tokens": 5})),
    )
    .await
    .json();
    assert!(
        v["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")),
        "{v}"
    );
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], MODEL_ID);
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["logprobs"], Value::Null);
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let text = c["text"].as_str().expect("text").to_string();
    let one = post_v1(
        "/v1/completions",
        &completion(
            json!(["The capital of France is"]),
            json!({"max_tokens": 5}),
        ),
    )
    .await
    .json();
    assert_eq!(one["choices"][0]["text"], text.as_str());
    assert_eq!(one["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
    // The second time the prompt's full blocks come from the prefix cache.
    assert!(one["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());

    // Token ids go in as they are.
    let ids = json!([504, 3575, 282, 4649, 314]);
    let a = post_v1(
        "/v1/completions",
        &completion(ids.clone(), json!({"max_tokens": 4})),
    )
    .await
    .json();
    assert_eq!(a["usage"]["prompt_tokens"], 5, "{a}");
    let b = post_v1(
        "/v1/completions",
        &completion(json!([ids]), json!({"max_tokens": 4})),
    )
    .await
    .json();
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
}

#[tokio::test]
async fn completions_stream_and_logprobs() {
    let body = completion(
        json!("Once upon a time"),
        json!({"max_tokens": 6, "logprobs": 2}),
    );
    let whole = post_v1("/v1/completions", &body).await.json();
    let lp = &whole["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 6);
    assert_eq!(lp["token_logprobs"].as_array().map(Vec::len), Some(6));
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o.as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    for (i, top) in lp["top_logprobs"]
        .as_array()
        .expect("top")
        .iter()
        .enumerate()
    {
        let top = top.as_object().expect("dict");
        // Two alternatives, the sampled (greedy) token among them.
        assert!(top.len() == 2 || top.len() == 3, "{top:?}");
        let tok = tokens[i].as_str().expect("token");
        assert_eq!(top.get(tok), Some(&lp["token_logprobs"][i]));
    }
    let joined: String = tokens.iter().filter_map(Value::as_str).collect();
    assert_eq!(joined, whole["choices"][0]["text"].as_str().unwrap_or("?"));

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let chunks = chunks(&post_v1("/v1/completions", &stream).await);
    let (usage, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage["choices"], json!([]));
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][key], whole["usage"][key], "{key}");
    }
    let mut text = String::new();
    let mut streamed_tokens = Vec::new();
    let mut streamed_offsets = Vec::new();
    for c in rest {
        assert_eq!(c["object"], "text_completion");
        let choice = &c["choices"][0];
        text.push_str(choice["text"].as_str().expect("text"));
        if let Some(t) = choice["logprobs"]["tokens"].as_array() {
            streamed_tokens.extend(t.iter().cloned());
        }
        if let Some(o) = choice["logprobs"]["text_offset"].as_array() {
            streamed_offsets.extend(o.iter().filter_map(Value::as_u64));
        }
    }
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap_or("?"));
    assert_eq!(&streamed_tokens, tokens);
    assert_eq!(streamed_offsets, offsets);
    assert_eq!(
        rest.last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("length"))
    );
}

#[tokio::test]
async fn models_list_and_get() {
    let v = send(KEY, "GET", "/v1/models", b"").await.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().expect("data");
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids[0], MODEL_ID);
    assert!(ids.contains(&LLAMA_ID));
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "factory");
        assert!(m["created"].is_u64());
    }
    let path = format!("/v1/models/{}", encode_label(LLAMA_ID));
    let m = send(KEY, "GET", &path, b"").await.json();
    assert_eq!(m["id"], LLAMA_ID);
    assert_eq!(m["object"], "model");
    let e = error(
        &send(KEY, "GET", "/v1/models/no-such-model", b"").await,
        404,
    );
    assert_eq!(e["code"], "model_not_found");
    // Aliases generate too.
    let mut body = chat("Hi", json!({"max_tokens": 2}));
    body["model"] = json!(LLAMA_ID);
    let v = post_v1("/v1/chat/completions", &body).await.json();
    assert_eq!(v["model"], LLAMA_ID);
}

#[tokio::test]
async fn errors_come_in_openai_shape_with_the_right_status() {
    let mut unknown = chat("Hi", json!({}));
    unknown["model"] = json!("gpt-4o");
    let e = error(&post_v1("/v1/chat/completions", &unknown).await, 404);
    assert_eq!(
        (e["type"].as_str(), e["param"].as_str(), e["code"].as_str()),
        (
            Some("invalid_request_error"),
            Some("model"),
            Some("model_not_found")
        )
    );
    let e = error(
        &post_v1(
            "/v1/completions",
            &completion(json!("x"), json!({"model": "nope"})),
        )
        .await,
        404,
    );
    assert_eq!(e["code"], "model_not_found");

    for (path, body, param) in [
        (
            "/v1/chat/completions",
            chat("Hi", json!({"max_tokens": "9"})),
            "max_tokens",
        ),
        ("/v1/chat/completions", chat("Hi", json!({"n": 2})), "n"),
        (
            "/v1/chat/completions",
            chat("Hi", json!({"temperature": 3})),
            "temperature",
        ),
        (
            "/v1/chat/completions",
            chat("Hi", json!({"stop": ["a", "b", "c", "d", "e"]})),
            "stop",
        ),
        (
            "/v1/chat/completions",
            chat("Hi", json!({"top_logprobs": 21, "logprobs": true})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL_ID, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL_ID}),
            "messages",
        ),
        ("/v1/completions", completion(json!(7), json!({})), "prompt"),
        (
            "/v1/completions",
            completion(json!([4_000_000]), json!({})),
            "prompt",
        ),
        (
            "/v1/completions",
            completion(json!(""), json!({})),
            "prompt",
        ),
        (
            "/v1/completions",
            completion(json!("x"), json!({"echo": true})),
            "echo",
        ),
    ] {
        let e = error(&post_v1(path, &body).await, 400);
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    // A prompt longer than the context.
    let long = "word ".repeat(9000);
    let e = error(
        &post_v1("/v1/completions", &completion(json!(long), json!({}))).await,
        400,
    );
    assert_eq!(e["code"], "context_length_exceeded");

    let r = send(KEY, "POST", "/v1/chat/completions", b"{not json").await;
    assert_eq!(error(&r, 400)["type"], "invalid_request_error");
    let e = error(&send(KEY, "POST", "/v1/embeddings", b"{}").await, 404);
    assert!(e["message"]
        .as_str()
        .unwrap_or("")
        .contains("/v1/embeddings"));
    error(&send(KEY, "GET", "/v1/chat/completions", b"").await, 404);
    let big = vec![b' '; MAX_BODY + 1];
    error(&send(KEY, "POST", "/v1/chat/completions", &big).await, 413);
}

#[tokio::test]
async fn v1_takes_bearer_keys_only() {
    let body = chat("Hi", json!({"max_tokens": 1})).to_string();
    let e = error(
        &send(
            Credentials::None,
            "POST",
            "/v1/chat/completions",
            body.as_bytes(),
        )
        .await,
        401,
    );
    assert_eq!(e["code"], Value::Null);
    let e = error(
        &send(
            Credentials::Bearer("wrong-key"),
            "POST",
            "/v1/chat/completions",
            body.as_bytes(),
        )
        .await,
        401,
    );
    assert_eq!(e["code"], "invalid_api_key");
    // Valid SigV4 credentials open Bedrock routes, never /v1.
    let e = error(
        &send(GOOD, "POST", "/v1/chat/completions", body.as_bytes()).await,
        401,
    );
    assert_eq!(e["code"], "invalid_api_key");
    error(
        &send(Credentials::None, "GET", "/v1/models", b"").await,
        401,
    );
    // The same key opens the Bedrock routes as a bearer token.
    let r = send(
        KEY,
        "POST",
        &format!("/model/{MODEL_ID}/converse"),
        json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 1}})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// guidellm's request shapes (vLLM's extensions included): `ignore_eos`
/// makes the model generate to the limit past its end-of-turn, so a load
/// generator gets the output length it asked for.
#[tokio::test]
async fn ignore_eos_generates_to_the_limit_as_guidellm_asks() {
    let natural = post_v1(
        "/v1/chat/completions",
        &chat("Say hi.", json!({"max_completion_tokens": 48})),
    )
    .await
    .json();
    assert_eq!(natural["choices"][0]["finish_reason"], "stop", "{natural}");
    let short = natural["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    assert!(short < 48, "{natural}");

    // The streamed bodies guidellm 0.8 sends, member for member: `stop: null`,
    // `ignore_eos`, vLLM's `continuous_usage_stats`.
    let guidellm = json!({
        "stop": null, "ignore_eos": true, "stream": true,
        "stream_options": {"include_usage": true, "continuous_usage_stats": true},
    });
    let cases = [
        (
            "/v1/chat/completions",
            chat("Say hi.", json!({"max_completion_tokens": 48})),
            48,
        ),
        (
            "/v1/completions",
            completion(json!("Say hi."), json!({"max_tokens": 32})),
            32,
        ),
    ];
    for (path, mut body, limit) in cases {
        if let (Value::Object(b), Value::Object(e)) = (&mut body, guidellm.clone()) {
            b.extend(e);
        }
        let chunks = chunks(&post_v1(path, &body).await);
        let usage = chunks.last().expect("usage chunk")["usage"].clone();
        assert_eq!(usage["completion_tokens"], limit, "{path}: {usage}");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0)?.get("finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("length")], "{path}");
    }
}
