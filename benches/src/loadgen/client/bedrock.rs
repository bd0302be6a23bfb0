//! Bedrock Runtime requests (Converse, ConverseStream, InvokeModel,
//! InvokeModelWithResponseStream with every native body family) and the
//! decoding of their responses into content events and usage.

use base64::Engine as _;
use factory_server::bedrock::eventstream::{decode_frame, Message};
use factory_server::Family;
use serde_json::{json, Value};

use super::{error_text, ResponseDecoder};
use crate::loadgen::record::{RequestError, Usage};
use crate::loadgen::workload::PromptRequest;

/// botocore's URI-label encoding: all but `A-Za-z0-9-._~` percent-encoded.
pub fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/model/{id}/{operation}` for a model id.
pub fn path(model_id: &str, operation: &str) -> String {
    format!("/model/{}/{operation}", encode_label(model_id))
}

/// A Converse / ConverseStream body.
pub fn converse_body(p: &PromptRequest, temperature: f64) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": [{"text": p.user}]}],
        "inferenceConfig": {"maxTokens": p.max_tokens, "temperature": temperature},
    });
    if let Some(s) = &p.system {
        body["system"] = json!([{"text": &**s}]);
    }
    body
}

/// A native InvokeModel body for `family`. Families taking a raw prompt get
/// their model's usual template written out, as Bedrock callers do.
pub fn invoke_body(family: Family, p: &PromptRequest, temperature: f64) -> Value {
    let system = p.system.as_deref();
    match family {
        Family::Anthropic => {
            let mut body = json!({
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": p.max_tokens,
                "temperature": temperature,
                "messages": [{"role": "user", "content": p.user}],
            });
            if let Some(s) = system {
                body["system"] = json!(s);
            }
            body
        }
        Family::Meta => {
            let mut prompt = String::from("<|begin_of_text|>");
            if let Some(s) = system {
                prompt.push_str(&format!(
                    "<|start_header_id|>system<|end_header_id|>\n\n{s}<|eot_id|>"
                ));
            }
            prompt.push_str(&format!(
                "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                p.user
            ));
            json!({"prompt": prompt, "max_gen_len": p.max_tokens, "temperature": temperature})
        }
        Family::Mistral => {
            let user = match system {
                Some(s) => format!("{s}\n\n{}", p.user),
                None => p.user.clone(),
            };
            json!({"prompt": format!("<s>[INST] {user} [/INST]"), "max_tokens": p.max_tokens, "temperature": temperature})
        }
        Family::Titan => {
            let text = match system {
                Some(s) => format!("{s}\n\nUser: {}\nBot:", p.user),
                None => format!("User: {}\nBot:", p.user),
            };
            json!({"inputText": text, "textGenerationConfig": {"maxTokenCount": p.max_tokens, "temperature": temperature}})
        }
        Family::Nova => {
            let mut body = json!({
                "schemaVersion": "messages-v1",
                "messages": [{"role": "user", "content": [{"text": p.user}]}],
                "inferenceConfig": {"maxTokens": p.max_tokens, "temperature": temperature},
            });
            if let Some(s) = system {
                body["system"] = json!([{"text": s}]);
            }
            body
        }
    }
}

/// The error a non-200 Bedrock response stands for: the `x-amzn-ErrorType`
/// code (before `:`) or `http_<status>`, and the body's `message`.
pub fn http_error(status: u16, headers: &http::HeaderMap, body: &[u8]) -> RequestError {
    let kind = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(':').next())
        .filter(|v| !v.is_empty())
        .map_or_else(|| format!("http_{status}"), String::from);
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| error_text(body));
    RequestError::new(kind, format!("HTTP {status}: {message}"))
}

/// Usage of a non-streaming Converse body.
pub fn converse_usage(body: &Value) -> Option<Usage> {
    let u = body.get("usage")?;
    Some(Usage {
        input_tokens: u.get("inputTokens")?.as_u64()?,
        output_tokens: u.get("outputTokens")?.as_u64()?,
    })
}

/// Usage of a non-streaming InvokeModel response, from Bedrock's token-count headers.
pub fn invoke_usage(headers: &http::HeaderMap) -> Option<Usage> {
    let count = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse().ok();
    Some(Usage {
        input_tokens: count("x-amzn-bedrock-input-token-count")?,
        output_tokens: count("x-amzn-bedrock-output-token-count")?,
    })
}

/// Which event stream is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// ConverseStream events.
    Converse,
    /// InvokeModelWithResponseStream `chunk`s.
    Invoke,
}

/// Decodes an `application/vnd.amazon.eventstream` body as it arrives.
#[derive(Debug)]
pub struct EventStreamDecoder {
    kind: StreamKind,
    buf: Vec<u8>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// ConverseStream's `messageStop` / an invoke chunk with invocation metrics.
    finished: bool,
}

impl EventStreamDecoder {
    /// A decoder for `kind`.
    pub fn new(kind: StreamKind) -> Self {
        Self {
            kind,
            buf: Vec::new(),
            input_tokens: None,
            output_tokens: None,
            finished: false,
        }
    }

    fn on_message(&mut self, msg: &Message, texts: &mut Vec<String>) -> Result<(), RequestError> {
        match msg.string_header(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = msg.string_header(":exception-type").unwrap_or("exception");
                let message = serde_json::from_slice::<Value>(&msg.payload)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                    .unwrap_or_else(|| error_text(&msg.payload));
                return Err(RequestError::new(kind, format!("in stream: {message}")));
            }
            Some("error") => {
                let kind = msg.string_header(":error-code").unwrap_or("error");
                let message = msg.string_header(":error-message").unwrap_or_default();
                return Err(RequestError::new(kind, format!("in stream: {message}")));
            }
            other => {
                return Err(RequestError::new(
                    "decode",
                    format!("event-stream message type {other:?}"),
                ))
            }
        }
        let payload: Value = serde_json::from_slice(&msg.payload)
            .map_err(|e| RequestError::new("decode", format!("event payload is not JSON: {e}")))?;
        let event_type = msg.string_header(":event-type").unwrap_or_default();
        match self.kind {
            StreamKind::Converse => match event_type {
                "contentBlockDelta" => push_text(texts, payload.pointer("/delta/text")),
                "messageStop" => self.finished = true,
                "metadata" => {
                    self.take_usage(payload.get("usage"), "inputTokens", "outputTokens");
                }
                _ => {}
            },
            StreamKind::Invoke => {
                if event_type != "chunk" {
                    return Ok(());
                }
                let bytes = payload
                    .get("bytes")
                    .and_then(Value::as_str)
                    .ok_or_else(|| RequestError::new("decode", "chunk without bytes"))?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(bytes)
                    .map_err(|e| RequestError::new("decode", format!("chunk bytes: {e}")))?;
                let chunk: Value = serde_json::from_slice(&raw)
                    .map_err(|e| RequestError::new("decode", format!("chunk is not JSON: {e}")))?;
                self.on_native_chunk(&chunk, texts);
            }
        }
        Ok(())
    }

    /// Text and usage of one native chunk, whatever its family: the field
    /// names do not overlap, so one reader serves them all.
    fn on_native_chunk(&mut self, c: &Value, texts: &mut Vec<String>) {
        // Anthropic content_block_delta / Meta / Mistral / Titan / Nova.
        if c.get("type").and_then(Value::as_str) == Some("content_block_delta") {
            push_text(texts, c.pointer("/delta/text"));
        }
        push_text(texts, c.get("generation"));
        push_text(texts, c.pointer("/outputs/0/text"));
        push_text(texts, c.get("outputText"));
        push_text(texts, c.pointer("/contentBlockDelta/delta/text"));
        // Family-specific counts first; Bedrock's invocation metrics win.
        self.take_usage(c.pointer("/message/usage"), "input_tokens", "output_tokens");
        self.take_usage(c.get("usage"), "input_tokens", "output_tokens");
        self.take_usage(Some(c), "prompt_token_count", "generation_token_count");
        self.take_usage(Some(c), "inputTextTokenCount", "totalOutputTextTokenCount");
        self.take_usage(c.pointer("/metadata/usage"), "inputTokens", "outputTokens");
        if let Some(m) = c.get("amazon-bedrock-invocationMetrics") {
            self.take_usage(Some(m), "inputTokenCount", "outputTokenCount");
            self.finished = true;
        }
    }

    fn take_usage(&mut self, v: Option<&Value>, input: &str, output: &str) {
        let Some(v) = v else { return };
        if let Some(n) = v.get(input).and_then(Value::as_u64) {
            self.input_tokens = Some(n);
        }
        if let Some(n) = v.get(output).and_then(Value::as_u64) {
            self.output_tokens = Some(n);
        }
    }
}

fn push_text(texts: &mut Vec<String>, v: Option<&Value>) {
    if let Some(t) = v.and_then(Value::as_str).filter(|t| !t.is_empty()) {
        texts.push(t.to_string());
    }
}

impl ResponseDecoder for EventStreamDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RequestError> {
        self.buf.extend_from_slice(bytes);
        let mut texts = Vec::new();
        let mut at = 0;
        loop {
            match decode_frame(&self.buf[at..]) {
                Ok(Some((msg, used))) => {
                    at += used;
                    self.on_message(&msg, &mut texts)?;
                }
                Ok(None) => break,
                Err(e) => return Err(RequestError::new("decode", format!("event stream: {e}"))),
            }
        }
        self.buf.drain(..at);
        Ok(texts)
    }

    fn finish(&mut self) -> Result<Option<Usage>, RequestError> {
        if !self.buf.is_empty() {
            return Err(RequestError::new(
                "incomplete",
                format!(
                    "the stream ended inside a frame ({} bytes left)",
                    self.buf.len()
                ),
            ));
        }
        if !self.finished {
            return Err(RequestError::new(
                "incomplete",
                "the stream ended before its final event",
            ));
        }
        Ok(match (self.input_tokens, self.output_tokens) {
            (Some(i), Some(o)) => Some(Usage {
                input_tokens: i,
                output_tokens: o,
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use factory_server::bedrock::eventstream::{chunk_event, exception_frame, json_event};

    use super::*;
    use std::sync::Arc;

    fn prompt(system: Option<&str>) -> PromptRequest {
        PromptRequest {
            system: system.map(Arc::from),
            user: "hello".into(),
            max_tokens: 7,
        }
    }

    #[test]
    fn labels_are_encoded_like_botocore() {
        assert_eq!(
            path(
                "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3",
                "converse"
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fmeta.llama3/converse"
        );
    }

    #[test]
    fn bodies_carry_prompt_system_and_limit() {
        let b = converse_body(&prompt(Some("sys")), 0.0);
        assert_eq!(b["inferenceConfig"]["maxTokens"], 7);
        assert_eq!(b["system"][0]["text"], "sys");
        assert!(converse_body(&prompt(None), 0.0).get("system").is_none());
        let families = [
            (Family::Anthropic, "/max_tokens"),
            (Family::Meta, "/max_gen_len"),
            (Family::Mistral, "/max_tokens"),
            (Family::Titan, "/textGenerationConfig/maxTokenCount"),
            (Family::Nova, "/inferenceConfig/maxTokens"),
        ];
        for (f, limit) in families {
            let b = invoke_body(f, &prompt(Some("sys")), 0.5);
            assert_eq!(b.pointer(limit), Some(&json!(7)), "{f:?}");
            let text = b.to_string();
            assert!(
                text.contains("hello") && text.contains("sys"),
                "{f:?}: {text}"
            );
        }
    }

    fn feed_all(
        kind: StreamKind,
        frames: &[Vec<u8>],
    ) -> (Vec<String>, Result<Option<Usage>, RequestError>) {
        let mut d = EventStreamDecoder::new(kind);
        let bytes: Vec<u8> = frames.concat();
        let mut texts = Vec::new();
        // Byte by byte: frames split anywhere still decode.
        for b in bytes.chunks(1) {
            match d.feed(b) {
                Ok(t) => texts.extend(t),
                Err(e) => return (texts, Err(e)),
            }
        }
        (texts, d.finish())
    }

    #[test]
    fn converse_stream_texts_and_usage() {
        let ev = |t: &str, p: Value| json_event(t, p.to_string()).expect("frame");
        let frames = [
            ev("messageStart", json!({"role": "assistant"})),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": ""}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
            ),
            ev("contentBlockStop", json!({"contentBlockIndex": 0})),
            ev("messageStop", json!({"stopReason": "max_tokens"})),
            ev(
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}, "metrics": {"latencyMs": 1}}),
            ),
        ];
        let (texts, usage) = feed_all(StreamKind::Converse, &frames);
        assert_eq!(texts, ["Hel", "lo"]);
        assert_eq!(
            usage,
            Ok(Some(Usage {
                input_tokens: 5,
                output_tokens: 3
            }))
        );
        // Cut before messageStop: incomplete.
        let (_, usage) = feed_all(StreamKind::Converse, &frames[..4]);
        assert_eq!(usage.map_err(|e| e.kind), Err("incomplete".to_string()));
    }

    #[test]
    fn invoke_chunks_of_every_family() {
        let chunk = |v: Value| chunk_event(v.to_string().as_bytes()).expect("frame");
        let metrics = json!({"inputTokenCount": 9, "outputTokenCount": 2, "invocationLatency": 5, "firstByteLatency": 1});
        let streams = [
            vec![
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 0}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "A"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "B"}}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
            ],
            vec![
                json!({"generation": "A", "prompt_token_count": 9, "generation_token_count": 1, "stop_reason": null}),
                json!({"generation": "B", "prompt_token_count": null, "generation_token_count": 2, "stop_reason": "stop", "amazon-bedrock-invocationMetrics": metrics}),
            ],
            vec![
                json!({"outputs": [{"text": "A", "stop_reason": null}]}),
                json!({"outputs": [{"text": "B", "stop_reason": null}]}),
                json!({"outputs": [{"text": "", "stop_reason": "stop"}], "amazon-bedrock-invocationMetrics": metrics}),
            ],
            vec![
                json!({"outputText": "A", "index": 0, "totalOutputTextTokenCount": 1, "completionReason": null, "inputTextTokenCount": 9}),
                json!({"outputText": "B", "index": 0, "totalOutputTextTokenCount": 2, "completionReason": "FINISH", "inputTextTokenCount": 9, "amazon-bedrock-invocationMetrics": metrics}),
            ],
            vec![
                json!({"messageStart": {"role": "assistant"}}),
                json!({"contentBlockDelta": {"delta": {"text": "A"}, "contentBlockIndex": 0}}),
                json!({"contentBlockDelta": {"delta": {"text": "B"}, "contentBlockIndex": 0}}),
                json!({"messageStop": {"stopReason": "end_turn"}}),
                json!({"metadata": {"usage": {"inputTokens": 9, "outputTokens": 2}}, "amazon-bedrock-invocationMetrics": metrics}),
            ],
        ];
        for s in streams {
            let frames: Vec<Vec<u8>> = s.iter().cloned().map(chunk).collect();
            let (texts, usage) = feed_all(StreamKind::Invoke, &frames);
            assert_eq!(texts, ["A", "B"], "{s:?}");
            assert_eq!(
                usage,
                Ok(Some(Usage {
                    input_tokens: 9,
                    output_tokens: 2
                })),
                "{s:?}"
            );
        }
    }

    #[test]
    fn stream_exceptions_become_errors() {
        let frames = [
            json_event("messageStart", json!({"role": "assistant"}).to_string()).expect("frame"),
            exception_frame(
                "modelStreamErrorException",
                json!({"message": "boom", "originalStatusCode": 500}).to_string(),
            )
            .expect("frame"),
        ];
        let (_, r) = feed_all(StreamKind::Converse, &frames);
        let e = r.expect_err("exception");
        assert_eq!(e.kind, "modelStreamErrorException");
        assert!(e.message.contains("boom"));

        let mut corrupt = frames[0].clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let (_, r) = feed_all(StreamKind::Converse, &[corrupt]);
        assert_eq!(r.map_err(|e| e.kind), Err("decode".to_string()));
    }

    #[test]
    fn http_errors_take_the_bedrock_code() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            http::HeaderValue::from_static("ThrottlingException:http://internal.amazon.com/coral/"),
        );
        let e = http_error(429, &h, br#"{"message":"slow down"}"#);
        assert_eq!(e.kind, "ThrottlingException");
        assert!(e.message.contains("slow down"));
        let e = http_error(502, &http::HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(e.kind, "http_502");
        assert!(e.message.contains("bad gateway"));
    }
}
