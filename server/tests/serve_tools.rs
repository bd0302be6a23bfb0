//! Tool use end to end: Converse, ConverseStream and Anthropic / Nova native
//! bodies against the default model behind `factory_server::Service`.
//!
//! The model is tiny, so nothing here depends on what it chooses to say
//! beyond what prefilling forces: a forced call (`toolChoice` `tool` / `any`)
//! always yields one well-formed tool-use block whose input is a JSON object,
//! and the stop reason is `tool_use` unless the token limit cut the call.

#[path = "serve/harness.rs"]
mod harness;

use base64::Engine as _;
use harness::*;
use serde_json::{json, Value};

fn event_type(m: &factory_server::bedrock::eventstream::Message) -> String {
    m.string_header(":event-type")
        .unwrap_or_default()
        .to_string()
}

fn payload(m: &factory_server::bedrock::eventstream::Message) -> Value {
    serde_json::from_slice(&m.payload).expect("payload is JSON")
}

fn weather_tool() -> Value {
    json!({"toolSpec": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "inputSchema": {"json": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"]
        }}
    }})
}

fn time_tool() -> Value {
    json!({"toolSpec": {
        "name": "get_time",
        "description": "Get the current time in a time zone.",
        "inputSchema": {"json": {"type": "object", "properties": {"zone": {"type": "string"}}}}
    }})
}

fn ask(choice: Value, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}],
        "toolConfig": {"tools": [weather_tool(), time_tool()], "toolChoice": choice},
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0}
    })
}

/// `tooluse_` and 22 characters of `[A-Za-z0-9_-]`, as Bedrock's ids.
fn assert_converse_id(id: &str) {
    assert!(id.starts_with("tooluse_") && id.len() == 30, "{id}");
    assert!(
        id[8..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
}

/// A forced call's stop reason: the model closed the call, or the limit cut it.
fn assert_forced_stop(stop: &str, output_tokens: u64, max_tokens: u64) {
    match stop {
        "tool_use" => assert!(output_tokens <= max_tokens),
        "max_tokens" => assert_eq!(output_tokens, max_tokens),
        other => panic!("unexpected stopReason {other}"),
    }
}

#[tokio::test]
async fn converse_forced_tool_returns_one_tool_use_block() {
    let r = post(
        MODEL_ID,
        "converse",
        &ask(json!({"tool": {"name": "get_weather"}}), 40),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let content = v["output"]["message"]["content"]
        .as_array()
        .expect("content");
    assert_eq!(content.len(), 1, "{content:?}");
    let block = content[0].as_object().expect("block");
    assert_eq!(block.len(), 1, "a union has one member: {block:?}");
    let call = &block["toolUse"];
    assert_converse_id(call["toolUseId"].as_str().expect("toolUseId"));
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"].is_object(), "{call}");
    let usage = &v["usage"];
    assert_forced_stop(
        v["stopReason"].as_str().expect("stopReason"),
        usage["outputTokens"].as_u64().expect("outputTokens"),
        40,
    );
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
async fn converse_stream_forced_tool_events_come_in_bedrock_order() {
    let body = ask(json!({"tool": {"name": "get_weather"}}), 40);
    let r = post(MODEL_ID, "converse-stream", &body).await;
    assert_eq!(r.status, 200);
    let frames = r.frames();
    let kinds: Vec<String> = frames.iter().map(event_type).collect();
    let n = kinds.len();
    assert!(n >= 6, "{kinds:?}");
    assert_eq!(
        kinds[..2],
        ["messageStart", "contentBlockStart"],
        "{kinds:?}"
    );
    assert!(
        kinds[2..n - 3].iter().all(|k| k == "contentBlockDelta"),
        "{kinds:?}"
    );
    assert!(n - 3 > 2, "at least one input delta: {kinds:?}");
    assert_eq!(
        kinds[n - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    let start = payload(&frames[1]);
    assert_eq!(start["contentBlockIndex"], 0);
    let tool = &start["start"]["toolUse"];
    assert_converse_id(tool["toolUseId"].as_str().expect("toolUseId"));
    assert_eq!(tool["name"], "get_weather");
    let mut input = String::new();
    for f in &frames[2..n - 3] {
        let p = payload(f);
        assert_eq!(p["contentBlockIndex"], 0);
        input.push_str(
            p["delta"]["toolUse"]["input"]
                .as_str()
                .expect("input piece"),
        );
    }
    let input: Value = serde_json::from_str(&input).expect("the pieces make JSON");
    assert!(input.is_object());
    assert_eq!(payload(&frames[n - 3])["contentBlockIndex"], 0);
    let stop = payload(&frames[n - 2]);
    let meta = payload(&frames[n - 1]);
    assert_forced_stop(
        stop["stopReason"].as_str().expect("stopReason"),
        meta["usage"]["outputTokens"]
            .as_u64()
            .expect("outputTokens"),
        40,
    );
    // Greedy decoding: the stream says what Converse says.
    let whole = post(MODEL_ID, "converse", &body).await.json();
    assert_eq!(
        whole["output"]["message"]["content"][0]["toolUse"]["input"],
        input
    );
    assert_eq!(whole["stopReason"], stop["stopReason"]);
    assert_eq!(whole["usage"], meta["usage"]);
}

#[tokio::test]
async fn forced_calls_cut_by_max_tokens_still_carry_an_object() {
    for max_tokens in [1, 3] {
        let v = post(
            MODEL_ID,
            "converse",
            &ask(json!({"tool": {"name": "get_time"}}), max_tokens),
        )
        .await
        .json();
        let call = &v["output"]["message"]["content"][0]["toolUse"];
        assert_eq!(call["name"], "get_time", "{v}");
        assert!(call["input"].is_object(), "{v}");
        assert_forced_stop(
            v["stopReason"].as_str().expect("stopReason"),
            v["usage"]["outputTokens"].as_u64().expect("outputTokens"),
            u64::from(max_tokens),
        );
    }
}

#[tokio::test]
async fn tool_choice_any_calls_one_of_the_tools() {
    let v = post(MODEL_ID, "converse", &ask(json!({"any": {}}), 30))
        .await
        .json();
    let content = v["output"]["message"]["content"]
        .as_array()
        .expect("content");
    assert_eq!(content.len(), 1, "{v}");
    let call = &content[0]["toolUse"];
    assert!(
        ["get_weather", "get_time"].contains(&call["name"].as_str().unwrap_or_default()),
        "{v}"
    );
    assert!(call["input"].is_object());
    assert_forced_stop(
        v["stopReason"].as_str().expect("stopReason"),
        v["usage"]["outputTokens"].as_u64().expect("outputTokens"),
        30,
    );
}

/// Auto: whatever the model says, the reply is well formed and the stream agrees.
#[tokio::test]
async fn auto_tool_choice_replies_are_well_formed_and_streams_agree() {
    let body = ask(json!({"auto": {}}), 24);
    let whole = post(MODEL_ID, "converse", &body).await.json();
    let content = whole["output"]["message"]["content"]
        .as_array()
        .expect("content");
    assert!(!content.is_empty());
    let mut calls = 0;
    for block in content {
        let obj = block.as_object().expect("block");
        assert_eq!(obj.len(), 1, "{block}");
        if let Some(call) = obj.get("toolUse") {
            calls += 1;
            assert_converse_id(call["toolUseId"].as_str().unwrap_or_default());
            assert!(call["input"].is_object());
        } else {
            assert!(obj["text"].is_string(), "{block}");
        }
    }
    let stop = whole["stopReason"].as_str().expect("stopReason");
    assert_eq!(calls > 0, stop == "tool_use", "{whole}");
    let r = post(MODEL_ID, "converse-stream", &body).await;
    let frames = r.frames();
    let n = frames.len();
    assert_eq!(payload(&frames[n - 2])["stopReason"], stop);
    assert_eq!(payload(&frames[n - 1])["usage"], whole["usage"]);
}

fn round_trip(result: Value) -> Value {
    json!({
        "messages": [
            {"role": "user", "content": [{"text": "What is the weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_abcdefghijklmnopqrstuv", "name": "get_weather", "input": {"city": "Paris"}}}
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_abcdefghijklmnopqrstuv", "content": [result], "status": "success"}},
                {"text": "Answer in one sentence."}
            ]}
        ],
        "toolConfig": {"tools": [weather_tool()]},
        "inferenceConfig": {"maxTokens": 8, "temperature": 0}
    })
}

#[tokio::test]
async fn tool_results_round_trip_into_the_prompt() {
    let body = round_trip(json!({"json": {"temperature_c": 21, "sky": "clear"}}));
    let r = post(MODEL_ID, "converse", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert!(["end_turn", "max_tokens", "tool_use"]
        .contains(&v["stopReason"].as_str().unwrap_or_default()));
    // The result is in the prompt: CountTokens agrees with generation, and a
    // longer result costs more tokens.
    let count = post(
        MODEL_ID,
        "count-tokens",
        &json!({"input": {"converse": body}}),
    )
    .await;
    assert_eq!(
        count.status,
        200,
        "{}",
        String::from_utf8_lossy(&count.body)
    );
    assert_eq!(count.json()["inputTokens"], v["usage"]["inputTokens"]);
    let longer = round_trip(
        json!({"text": "It is 21 degrees Celsius, the sky is clear and there is no wind at all today."}),
    );
    let more = post(
        MODEL_ID,
        "count-tokens",
        &json!({"input": {"converse": longer}}),
    )
    .await
    .json();
    assert!(
        more["inputTokens"].as_u64() > v["usage"]["inputTokens"].as_u64(),
        "{more}"
    );
}

#[tokio::test]
async fn tool_validation_errors_are_validation_exceptions() {
    let user = json!([{"role": "user", "content": [{"text": "hi"}]}]);
    let spec = |name: &str, schema: Value| json!({"toolSpec": {"name": name, "inputSchema": {"json": schema}}});
    let object = json!({"type": "object"});
    let mut mismatched = round_trip(json!({"text": "21 C"}));
    mismatched["messages"][2]["content"][0]["toolResult"]["toolUseId"] = json!("tooluse_other");
    let mut no_config = round_trip(json!({"text": "21 C"}));
    no_config.as_object_mut().map(|o| o.remove("toolConfig"));
    let cases = [
        (
            json!({"messages": user, "toolConfig": {"tools": [weather_tool()], "toolChoice": {"tool": {"name": "get_stock"}}}}),
            "The tool get_stock named in toolConfig.toolChoice.tool.name isn't defined in toolConfig.tools",
        ),
        (
            json!({"messages": user, "toolConfig": {"tools": []}}),
            "Value at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ),
        (
            json!({"messages": user, "toolConfig": {"tools": [weather_tool(), weather_tool()]}}),
            "more than one tool named get_weather",
        ),
        (
            json!({"messages": user, "toolConfig": {"tools": [spec("f", json!({"type": "string"}))]}}),
            "The value at toolConfig.tools.0.toolSpec.inputSchema.json.type must be one of the following: object.",
        ),
        (
            json!({"messages": user, "toolConfig": {"tools": [spec("f g", object.clone())]}}),
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
        ),
        (mismatched, "toolUseId tooluse_other"),
        (
            no_config,
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ),
    ];
    for (body, want) in cases {
        for op in ["converse", "converse-stream"] {
            let r = post(MODEL_ID, op, &body).await;
            assert_eq!(r.status, 400, "{op} {body}");
            assert_eq!(r.error_code(), "ValidationException");
            let message = r.json()["message"].as_str().unwrap_or_default().to_string();
            assert!(message.contains(want), "{op}: {message}");
        }
    }
}

/// The native JSON inside each `chunk` frame.
fn chunks(reply: &Reply) -> Vec<Value> {
    reply
        .frames()
        .iter()
        .map(|m| {
            let b64 = payload(m)["bytes"].as_str().expect("bytes").to_string();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            serde_json::from_slice(&raw).expect("chunk JSON")
        })
        .collect()
}

fn anthropic_body(choice: Value) -> Value {
    json!({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 40, "temperature": 0,
        "tools": [{"name": "get_weather", "description": "Get the weather for a city.",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": choice,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]
    })
}

#[tokio::test]
async fn anthropic_messages_forced_tool_whole_and_streamed() {
    let body = anthropic_body(json!({"type": "tool", "name": "get_weather"}));
    let r = post(CLAUDE_ID, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let content = v["content"].as_array().expect("content");
    assert_eq!(content.len(), 1, "{v}");
    let call = &content[0];
    assert_eq!(call["type"], "tool_use");
    let id = call["id"].as_str().expect("id");
    assert!(id.starts_with("toolu_bdrk_01") && id.len() == 35, "{id}");
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"].is_object());
    let stop = v["stop_reason"].as_str().expect("stop_reason");
    assert_forced_stop(
        stop,
        v["usage"]["output_tokens"].as_u64().expect("output_tokens"),
        40,
    );
    assert_eq!(
        r.header("x-amzn-bedrock-output-token-count"),
        v["usage"]["output_tokens"].to_string()
    );

    let r = post(CLAUDE_ID, "invoke-with-response-stream", &body).await;
    assert_eq!(r.status, 200);
    let chunks = chunks(&r);
    let types: Vec<&str> = chunks
        .iter()
        .map(|c| c["type"].as_str().unwrap_or_default())
        .collect();
    let n = types.len();
    assert_eq!(
        types[..2],
        ["message_start", "content_block_start"],
        "{types:?}"
    );
    assert_eq!(
        types[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{types:?}"
    );
    assert!(
        types[2..n - 3].iter().all(|t| *t == "content_block_delta"),
        "{types:?}"
    );
    let block = &chunks[1]["content_block"];
    assert_eq!(chunks[1]["index"], 0);
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    let mut partial = String::new();
    for c in &chunks[2..n - 3] {
        assert_eq!(c["index"], 0);
        assert_eq!(c["delta"]["type"], "input_json_delta");
        partial.push_str(c["delta"]["partial_json"].as_str().expect("partial_json"));
    }
    let input: Value = serde_json::from_str(&partial).expect("input JSON");
    assert_eq!(input, call["input"]);
    assert_eq!(chunks[n - 2]["delta"]["stop_reason"], stop);
    assert_eq!(
        chunks[n - 2]["usage"]["output_tokens"],
        v["usage"]["output_tokens"]
    );
    let metrics = &chunks[n - 1]["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["outputTokenCount"], v["usage"]["output_tokens"]);
}

#[tokio::test]
async fn anthropic_messages_tool_results_and_errors() {
    let mut body = anthropic_body(json!({"type": "auto"}));
    body["max_tokens"] = json!(6);
    body["messages"] = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_bdrk_01abc", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_bdrk_01abc", "content": "21 C and clear"}]}
    ]);
    let r = post(CLAUDE_ID, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["role"], "assistant");

    let mut unanswered = body.clone();
    unanswered["messages"][2] = json!({"role": "user", "content": "and tomorrow?"});
    let mut unknown = anthropic_body(json!({"type": "tool", "name": "get_stock"}));
    unknown["max_tokens"] = json!(4);
    let mut no_tools = body.clone();
    no_tools.as_object_mut().map(|o| {
        o.remove("tools");
        o.remove("tool_choice")
    });
    for (bad, want) in [
        (unanswered, "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_bdrk_01abc."),
        (unknown, "the tool get_stock is not in tools"),
        (no_tools, "Requests which include `tool_use` or `tool_result` blocks must define tools."),
    ] {
        let r = post(CLAUDE_ID, "invoke", &bad).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), "ValidationException");
        let message = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(want), "{message}");
    }
}

#[tokio::test]
async fn nova_bodies_take_tool_config() {
    let body = json!({
        "schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": "Weather in Oslo?"}]}],
        "toolConfig": {"tools": [weather_tool()], "toolChoice": {"tool": {"name": "get_weather"}}},
        "inferenceConfig": {"max_new_tokens": 30}
    });
    let r = post(NOVA_ID, "invoke", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let call = &v["output"]["message"]["content"][0]["toolUse"];
    assert_converse_id(call["toolUseId"].as_str().unwrap_or_default());
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"].is_object());
    assert_forced_stop(
        v["stopReason"].as_str().unwrap_or_default(),
        v["usage"]["outputTokens"].as_u64().unwrap_or_default(),
        30,
    );
}
