//! `POST /v1/chat/completions`: messages through the model's chat template,
//! answered as a `chat.completion` or streamed as `chat.completion.chunk`s.

use std::sync::Arc;

use factory_engine::MAX_TOP_LOGPROBS;
use http::Response;
use serde_json::{json, Map, Value};

use super::error::OpenAiError;
use super::generate::{collect, new_id, submit, unix_now, usage_json};
use super::logprobs::{self, TokenInfo};
use super::params::{parse_body, Fields, GenParams};
use super::sse::{spawn_pump, sse_response, ChoiceEncoder, ChunkHead, STREAM_BUFFER};
use super::Context;
use crate::http::response::json_response;
use crate::http::{ChannelBody, ResponseBody};
use crate::served_model::ServedModel;

/// A parsed chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Shared generation settings.
    pub params: GenParams,
    /// `{"role", "content"}` objects as the chat template takes them, content
    /// joined into text and `developer` rendered as `system`.
    pub messages: Vec<Value>,
    /// `Some(top_logprobs)` when `logprobs` is true.
    pub logprobs: Option<usize>,
}

/// Parses a chat completions body.
pub fn parse(obj: &Map<String, Value>) -> Result<ChatRequest, OpenAiError> {
    let f = Fields::new(obj);
    let params = GenParams::parse(&f, &["max_completion_tokens", "max_tokens"])?;
    for key in ["tools", "functions"] {
        if f.get(key)
            .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(OpenAiError::invalid_value(
                key,
                format!("'{key}' (tool calling) is not supported by this server's OpenAI API."),
            ));
        }
    }
    let top = f.int_in("top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
    let logprobs = match (f.bool("logprobs")?.unwrap_or(false), top) {
        (true, top) => Some(top.unwrap_or(0) as usize),
        (false, Some(_)) => return Err(OpenAiError::invalid_value(
            "top_logprobs",
            "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
        )),
        (false, None) => None,
    };
    let messages = match f.get("messages") {
        None => return Err(OpenAiError::missing("messages")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(OpenAiError::param(
                "messages",
                "empty_array",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            ))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(OpenAiError::invalid_type("messages", "an array", v)),
    };
    Ok(ChatRequest {
        params,
        messages,
        logprobs,
    })
}

/// Message `i` as `{"role", "content"}` for the template.
fn message(i: usize, m: &Value) -> Result<Value, OpenAiError> {
    let at = format!("messages[{i}]");
    let Value::Object(obj) = m else {
        return Err(OpenAiError::invalid_type(&at, "an object", m));
    };
    let f = Fields::new(obj);
    let role = match f
        .str("role")
        .map_err(|e| super::params::rename(e, &format!("{at}.role")))?
    {
        Some(r) => r,
        None => return Err(OpenAiError::missing(&format!("{at}.role"))),
    };
    let role = match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" | "function" => {
            return Err(OpenAiError::invalid_value(
                &format!("{at}.role"),
                format!("Messages with role '{role}' (tool results) are not supported by this server."),
            ))
        }
        other => {
            return Err(OpenAiError::invalid_value(
                &format!("{at}.role"),
                format!("Invalid '{at}.role': '{other}' is not one of 'system', 'developer', 'user', 'assistant'."),
            ))
        }
    };
    let content = match f.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts_text(&at, parts)?,
        // An assistant turn that only called tools has no content.
        None if role == "assistant" => String::new(),
        None => return Err(OpenAiError::missing(&format!("{at}.content"))),
        Some(v) => {
            return Err(OpenAiError::invalid_type(
                &format!("{at}.content"),
                "a string or an array of content parts",
                v,
            ))
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// Text parts joined with newlines (as vLLM does); other part types refused.
fn parts_text(at: &str, parts: &[Value]) -> Result<String, OpenAiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let here = format!("{at}.content[{j}]");
        let Value::Object(p) = part else {
            return Err(OpenAiError::invalid_type(&here, "an object", part));
        };
        let f = Fields::new(p);
        match f.str("type").map_err(|e| super::params::rename(e, &format!("{here}.type")))? {
            Some("text") => {
                let text = f
                    .str("text")
                    .map_err(|e| super::params::rename(e, &format!("{here}.text")))?
                    .ok_or_else(|| OpenAiError::missing(&format!("{here}.text")))?;
                texts.push(text);
            }
            // An assistant's earlier refusal is not text to continue from.
            Some("refusal") => {}
            Some(other) => {
                return Err(OpenAiError::invalid_value(
                    &format!("{here}.type"),
                    format!("Content parts of type '{other}' are not supported by this server; only 'text' is."),
                ))
            }
            None => return Err(OpenAiError::missing(&format!("{here}.type"))),
        }
    }
    Ok(texts.join("\n"))
}

/// The prompt's token ids: the messages rendered with the assistant opener.
pub fn prompt_ids(model: &ServedModel, messages: &[Value]) -> Result<Vec<u32>, OpenAiError> {
    let template = model.chat_template.as_ref().ok_or_else(|| {
        OpenAiError::invalid(
            "This model has no chat template, so it cannot take messages; use /v1/completions.",
        )
    })?;
    let text = template.render(messages, true, None).map_err(|e| {
        OpenAiError::invalid_value("messages", format!("The chat template failed: {e}"))
    })?;
    // Templates write their own special tokens.
    model.tokenizer.encode(&text, false).map_err(|e| {
        OpenAiError::invalid_value("messages", format!("The messages cannot be tokenized: {e}"))
    })
}

/// Answers `POST /v1/chat/completions`.
pub async fn create(ctx: &Context<'_>, body: &[u8]) -> Result<Response<ResponseBody>, OpenAiError> {
    let req = parse(&parse_body(body)?)?;
    let (model, metrics) = ctx.admit(&req.params.model)?;
    let prompt = prompt_ids(model, &req.messages)?;
    let engine_req = req
        .params
        .request(prompt, ctx.default_max_tokens, req.logprobs);
    let stream = submit(model, &metrics, engine_req, "messages")?;
    let id = new_id("chatcmpl");
    let created = unix_now();
    if req.params.stream {
        let head = ChunkHead {
            id,
            object: "chat.completion.chunk",
            created,
            model: req.params.model.clone(),
            include_usage: req.params.include_usage,
        };
        let (tx, body) = ChannelBody::channel(STREAM_BUFFER);
        let encoder = ChatChunks {
            logprobs: req.logprobs.is_some(),
        };
        spawn_pump(stream, Arc::clone(&model.tokenizer), head, encoder, tx);
        return Ok(sse_response(body));
    }
    let g = collect(stream, &model.tokenizer).await?;
    let logprobs = match req.logprobs {
        Some(_) => logprobs::chat(&g.tokens),
        None => Value::Null,
    };
    Ok(json_response(&json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.params.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.text, "refusal": null},
            "logprobs": logprobs,
            "finish_reason": g.finish_reason,
        }],
        "usage": usage_json(&g.usage),
    })))
}

/// Choices of `chat.completion.chunk`s: the role first, then content deltas.
#[derive(Debug, Clone, Copy)]
pub struct ChatChunks {
    /// Whether chunks carry `logprobs.content`.
    pub logprobs: bool,
}

impl ChatChunks {
    fn logprobs(&self, tokens: &[TokenInfo]) -> Value {
        if self.logprobs {
            logprobs::chat(tokens)
        } else {
            Value::Null
        }
    }
}

impl ChoiceEncoder for ChatChunks {
    fn start(&mut self) -> Option<Value> {
        Some(json!({
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": null},
            "logprobs": null,
            "finish_reason": null,
        }))
    }

    fn text(&mut self, text: &str, tokens: &[TokenInfo]) -> Value {
        json!({
            "index": 0,
            "delta": {"content": text},
            "logprobs": self.logprobs(tokens),
            "finish_reason": null,
        })
    }

    fn finish(&mut self, finish_reason: &str, tokens: &[TokenInfo]) -> Value {
        let logprobs = if tokens.is_empty() {
            Value::Null
        } else {
            self.logprobs(tokens)
        };
        json!({"index": 0, "delta": {}, "logprobs": logprobs, "finish_reason": finish_reason})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<ChatRequest, OpenAiError> {
        let Value::Object(m) = v else {
            panic!("object expected")
        };
        parse(&m)
    }

    #[test]
    fn roles_and_content_forms() {
        let r = parse_json(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": "Hi", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "user", "content": "Again"},
            ],
            "logprobs": true, "top_logprobs": 3,
        }))
        .expect("ok");
        assert_eq!(
            r.messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(r.messages[1]["content"], "a\nb");
        assert_eq!(r.messages[3], json!({"role": "assistant", "content": ""}));
        assert_eq!(r.logprobs, Some(3));
        let r = parse_json(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
        )
        .expect("ok");
        assert_eq!(r.logprobs, Some(0));
        let r = parse_json(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": false}))
            .expect("ok");
        assert_eq!(r.logprobs, None);
    }

    #[test]
    fn bad_messages_name_the_param() {
        let m = |messages: Value| json!({"model": "m", "messages": messages});
        let cases = [
            (json!({"model": "m"}), "messages"),
            (m(json!("hi")), "messages"),
            (m(json!([])), "messages"),
            (m(json!(["hi"])), "messages[0]"),
            (m(json!([{"content": "x"}])), "messages[0].role"),
            (m(json!([{"role": 1, "content": "x"}])), "messages[0].role"),
            (
                m(json!([{"role": "wizard", "content": "x"}])),
                "messages[0].role",
            ),
            (
                m(json!([{"role": "tool", "content": "x"}])),
                "messages[0].role",
            ),
            (m(json!([{"role": "user"}])), "messages[0].content"),
            (
                m(json!([{"role": "user", "content": 5}])),
                "messages[0].content",
            ),
            (
                m(json!([{"role": "user", "content": [{"type": "image_url"}]}])),
                "messages[0].content[0].type",
            ),
            (
                m(json!([{"role": "user", "content": [{"type": "text"}]}])),
                "messages[0].content[0].text",
            ),
            (
                m(json!([{"role": "user", "content": ["x"]}])),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
                "top_logprobs",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": 1}),
                "logprobs",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
                "tools",
            ),
        ];
        for (body, param) in cases {
            let e = parse_json(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
    }

    #[test]
    fn chunks_start_with_the_role_and_end_with_the_reason() {
        let mut c = ChatChunks { logprobs: false };
        assert_eq!(c.start().expect("role")["delta"]["role"], "assistant");
        let t = c.text("Hel", &[]);
        assert_eq!(t["delta"], json!({"content": "Hel"}));
        assert_eq!(t["logprobs"], Value::Null);
        let f = c.finish("length", &[]);
        assert_eq!(f["delta"], json!({}));
        assert_eq!(f["finish_reason"], "length");
        let mut c = ChatChunks { logprobs: true };
        assert_eq!(c.text("x", &[])["logprobs"]["content"], json!([]));
    }
}
