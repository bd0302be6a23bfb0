//! The OpenAI-compatible chat API (`POST /v1/chat/completions`), as OpenAI
//! documents its wire format: streamed `chat.completion.chunk` objects as
//! server-sent events ending with `data: [DONE]`; with
//! `stream_options.include_usage` a last chunk with empty `choices` carries
//! `usage`. Errors are `{"error": {"message", "type", "code"}}`.

use serde_json::{json, Value};

use super::{error_text, ResponseDecoder};
use crate::loadgen::record::{RequestError, Usage};
use crate::loadgen::sse::SseDecoder;
use crate::loadgen::workload::PromptRequest;

/// The default path of the chat endpoint.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// A chat completions body. `ignore_eos` is vLLM's extension (generate the
/// full `max_tokens`); it is only sent when asked for.
pub fn chat_body(
    model: &str,
    p: &PromptRequest,
    temperature: f64,
    stream: bool,
    ignore_eos: bool,
) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &p.system {
        messages.push(json!({"role": "system", "content": &**s}));
    }
    messages.push(json!({"role": "user", "content": p.user}));
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": p.max_tokens,
        "temperature": temperature,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    body
}

/// The error an OpenAI error body (or a bare status) stands for: kind is the
/// error's `code` (else its `type`, else `http_<status>`).
pub fn error_from(status: Option<u16>, body: &[u8]) -> RequestError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    error_from_value(status, err, body)
}

fn error_from_value(status: Option<u16>, err: Option<&Value>, raw: &[u8]) -> RequestError {
    let field = |k: &str| {
        err.and_then(|e| e.get(k)).and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    // `code` is the more specific (`model_not_found`, `invalid_api_key`); `type` groups.
    let kind = field("code")
        .or_else(|| field("type"))
        .or_else(|| status.map(|s| format!("http_{s}")))
        .unwrap_or_else(|| "error".into());
    let message = field("message").unwrap_or_else(|| error_text(raw));
    let message = match status {
        Some(s) => format!("HTTP {s}: {message}"),
        None => format!("in stream: {message}"),
    };
    RequestError::new(kind, message)
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| !u.is_null())?;
    Some(Usage {
        input_tokens: u.get("prompt_tokens")?.as_u64()?,
        output_tokens: u.get("completion_tokens")?.as_u64()?,
    })
}

/// Usage of a non-streaming chat completion.
pub fn completion_usage(body: &Value) -> Option<Usage> {
    usage_of(body)
}

/// Decodes a streamed chat completion as it arrives.
#[derive(Debug, Default)]
pub struct ChatStreamDecoder {
    sse: SseDecoder,
    usage: Option<Usage>,
    done: bool,
}

impl ChatStreamDecoder {
    /// A decoder at the start of a response.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ResponseDecoder for ChatStreamDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RequestError> {
        let events = self
            .sse
            .feed(bytes)
            .map_err(|e| RequestError::new("decode", e.to_string()))?;
        let mut texts = Vec::new();
        for ev in events {
            let data = ev.data.trim();
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            if self.done || data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| {
                RequestError::new(
                    "decode",
                    format!("chunk is not JSON ({e}): {}", error_text(data.as_bytes())),
                )
            })?;
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                return Err(error_from_value(None, Some(err), data.as_bytes()));
            }
            if let Some(choices) = v.get("choices").and_then(Value::as_array) {
                for c in choices {
                    if let Some(t) = c
                        .pointer("/delta/content")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        texts.push(t.to_string());
                    }
                }
            }
            if let Some(u) = usage_of(&v) {
                self.usage = Some(u);
            }
        }
        Ok(texts)
    }

    fn finish(&mut self) -> Result<Option<Usage>, RequestError> {
        if !self.done {
            return Err(RequestError::new(
                "incomplete",
                "the stream ended without data: [DONE]",
            ));
        }
        Ok(self.usage)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn body_asks_for_usage_when_streaming() {
        let p = PromptRequest {
            system: Some(Arc::from("S")),
            user: "U".into(),
            max_tokens: 5,
        };
        let b = chat_body("m", &p, 0.0, true, false);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "S"}));
        assert_eq!(b["messages"][1], json!({"role": "user", "content": "U"}));
        assert_eq!(b["max_tokens"], 5);
        assert!(b.get("ignore_eos").is_none());
        let b = chat_body("m", &p, 0.0, false, true);
        assert!(b.get("stream_options").is_none());
        assert_eq!(b["ignore_eos"], true);
    }

    fn run(stream: &str) -> (Vec<String>, Result<Option<Usage>, RequestError>) {
        let mut d = ChatStreamDecoder::new();
        let mut texts = Vec::new();
        for piece in stream.as_bytes().chunks(7) {
            match d.feed(piece) {
                Ok(t) => texts.extend(t),
                Err(e) => return (texts, Err(e)),
            }
        }
        (texts, d.finish())
    }

    #[test]
    fn documented_stream_with_usage() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n",
            "data: [DONE]\n\n",
        );
        let (texts, usage) = run(stream);
        assert_eq!(texts, ["Hi", " there"]);
        assert_eq!(
            usage,
            Ok(Some(Usage {
                input_tokens: 12,
                output_tokens: 2
            }))
        );
        // Without [DONE] the stream is incomplete.
        let cut = &stream[..stream.len() - "data: [DONE]\n\n".len()];
        assert_eq!(run(cut).1.map_err(|e| e.kind), Err("incomplete".into()));
    }

    #[test]
    fn errors_in_body_and_stream() {
        let e = error_from(
            Some(400),
            br#"{"error":{"message":"bad model","type":"invalid_request_error","param":"model","code":null}}"#,
        );
        assert_eq!(e.kind, "invalid_request_error");
        assert!(e.message.contains("bad model"));
        assert_eq!(error_from(Some(503), b"").kind, "http_503");
        let e = error_from(
            Some(404),
            br#"{"error":{"message":"no model x","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
        );
        assert_eq!(e.kind, "model_not_found");
        let (texts, r) = run(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"engine died\",\"type\":\"server_error\"}}\n\n",
        );
        assert_eq!(texts, ["a"]);
        let e = r.expect_err("error event");
        assert_eq!(e.kind, "server_error");
        assert!(e.message.contains("engine died"));
        let (_, r) = run("data: {not json\n\n");
        assert_eq!(r.map_err(|e| e.kind), Err("decode".into()));
    }
}
