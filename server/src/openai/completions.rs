//! `POST /v1/completions` (legacy): a raw prompt continued as is, answered as
//! a `text_completion` or streamed as `text_completion` chunks.

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

/// What to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Text, tokenized with the tokenizer's special tokens (BOS) added.
    Text(String),
    /// Token ids, fed as they are.
    Tokens(Vec<u32>),
}

/// A parsed completions request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// Shared generation settings.
    pub params: GenParams,
    /// The prompt.
    pub prompt: PromptInput,
    /// `logprobs`: alternatives per token, when given.
    pub logprobs: Option<usize>,
}

/// Parses a completions body.
pub fn parse(obj: &Map<String, Value>) -> Result<CompletionRequest, OpenAiError> {
    let f = Fields::new(obj);
    let params = GenParams::parse(&f, &["max_tokens"])?;
    let logprobs = f
        .int_in("logprobs", 0, MAX_TOP_LOGPROBS as i64)?
        .map(|n| n as usize);
    if f.bool("echo")? == Some(true) {
        return Err(OpenAiError::invalid_value(
            "echo",
            "echo is not supported by this server.",
        ));
    }
    if let Some(n) = f.int("best_of")? {
        if n != 1 {
            return Err(OpenAiError::invalid_value(
                "best_of",
                format!("Invalid 'best_of': this server generates one candidate (best_of = 1), but got {n}."),
            ));
        }
    }
    if f.str("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(OpenAiError::invalid_value(
            "suffix",
            "suffix (insertion) is not supported by this server.",
        ));
    }
    let prompt = match f.get("prompt") {
        None => return Err(OpenAiError::missing("prompt")),
        Some(v) => prompt_input(v)?,
    };
    Ok(CompletionRequest {
        params,
        prompt,
        logprobs,
    })
}

/// `prompt`: a string, token ids, or an array of exactly one of those.
fn prompt_input(v: &Value) -> Result<PromptInput, OpenAiError> {
    let one = |v: &Value| -> Option<PromptInput> {
        match v {
            Value::String(s) => Some(PromptInput::Text(s.clone())),
            Value::Array(ids) => ids
                .iter()
                .map(|t| t.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .map(PromptInput::Tokens),
            _ => None,
        }
    };
    let expected = "a string, an array of token ids, or an array of one of those";
    match v {
        Value::Array(items) if items.first().is_some_and(|x| x.is_string() || x.is_array()) => {
            if items.len() > 1 {
                return Err(OpenAiError::invalid_value(
                    "prompt",
                    format!(
                        "This server completes one prompt per request, but got {}.",
                        items.len()
                    ),
                ));
            }
            items
                .first()
                .and_then(one)
                .ok_or_else(|| OpenAiError::invalid_type("prompt", expected, v))
        }
        _ => one(v).ok_or_else(|| OpenAiError::invalid_type("prompt", expected, v)),
    }
}

/// The prompt's token ids.
pub fn prompt_ids(model: &ServedModel, prompt: &PromptInput) -> Result<Vec<u32>, OpenAiError> {
    match prompt {
        PromptInput::Tokens(ids) => Ok(ids.clone()),
        PromptInput::Text(text) => model.tokenizer.encode(text, true).map_err(|e| {
            OpenAiError::invalid_value("prompt", format!("The prompt cannot be tokenized: {e}"))
        }),
    }
}

/// Answers `POST /v1/completions`.
pub async fn create(ctx: &Context<'_>, body: &[u8]) -> Result<Response<ResponseBody>, OpenAiError> {
    let req = parse(&parse_body(body)?)?;
    let (model, metrics) = ctx.admit(&req.params.model)?;
    let prompt = prompt_ids(model, &req.prompt)?;
    let engine_req = req
        .params
        .request(prompt, ctx.default_max_tokens, req.logprobs);
    let stream = submit(model, &metrics, engine_req, "prompt")?;
    let id = new_id("cmpl");
    let created = unix_now();
    if req.params.stream {
        let head = ChunkHead {
            id,
            object: "text_completion",
            created,
            model: req.params.model.clone(),
            include_usage: req.params.include_usage,
        };
        let (tx, body) = ChannelBody::channel(STREAM_BUFFER);
        let encoder = CompletionChunks {
            logprobs: req.logprobs.is_some(),
            offset: 0,
        };
        spawn_pump(stream, Arc::clone(&model.tokenizer), head, encoder, tx);
        return Ok(sse_response(body));
    }
    let g = collect(stream, &model.tokenizer).await?;
    let logprobs = match req.logprobs {
        Some(_) => logprobs::completion(&g.tokens, 0).0,
        None => Value::Null,
    };
    Ok(json_response(&json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": req.params.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "text": g.text,
            "logprobs": logprobs,
            "finish_reason": g.finish_reason,
        }],
        "usage": usage_json(&g.usage),
    })))
}

/// Choices of streamed `text_completion` chunks.
#[derive(Debug, Clone, Copy)]
pub struct CompletionChunks {
    /// Whether chunks carry `logprobs`.
    pub logprobs: bool,
    /// Characters of the completion so far (`text_offset`).
    pub offset: usize,
}

impl CompletionChunks {
    fn choice(&mut self, text: &str, tokens: &[TokenInfo], finish_reason: Option<&str>) -> Value {
        let logprobs = if self.logprobs && !(finish_reason.is_some() && tokens.is_empty()) {
            let (v, next) = logprobs::completion(tokens, self.offset);
            self.offset = next;
            v
        } else {
            Value::Null
        };
        json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason})
    }
}

impl ChoiceEncoder for CompletionChunks {
    fn start(&mut self) -> Option<Value> {
        None
    }

    fn text(&mut self, text: &str, tokens: &[TokenInfo]) -> Value {
        self.choice(text, tokens, None)
    }

    fn finish(&mut self, finish_reason: &str, tokens: &[TokenInfo]) -> Value {
        self.choice("", tokens, Some(finish_reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<CompletionRequest, OpenAiError> {
        let Value::Object(m) = v else {
            panic!("object expected")
        };
        parse(&m)
    }

    #[test]
    fn every_prompt_form() {
        let p =
            |prompt: Value| parse_json(json!({"model": "m", "prompt": prompt})).map(|r| r.prompt);
        assert_eq!(p(json!("hi")), Ok(PromptInput::Text("hi".into())));
        assert_eq!(p(json!(["hi"])), Ok(PromptInput::Text("hi".into())));
        assert_eq!(p(json!([1, 2, 3])), Ok(PromptInput::Tokens(vec![1, 2, 3])));
        assert_eq!(p(json!([[4, 5]])), Ok(PromptInput::Tokens(vec![4, 5])));
        assert_eq!(p(json!([])), Ok(PromptInput::Tokens(vec![])));
        for bad in [
            json!(5),
            json!([1.5]),
            json!([-1]),
            json!({"a": 1}),
            json!([["x"]]),
            json!(["a", "b"]),
        ] {
            let e = p(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(e.param.as_deref(), Some("prompt"), "{bad}");
        }
    }

    #[test]
    fn unsupported_options_are_refused() {
        let base = |k: &str, v: Value| {
            let mut m = json!({"model": "m", "prompt": "x"});
            m[k] = v;
            m
        };
        for (k, v) in [
            ("echo", json!(true)),
            ("best_of", json!(2)),
            ("suffix", json!("tail")),
            ("logprobs", json!(21)),
            ("logprobs", json!(true)),
            ("max_completion_tokens", json!("x")),
        ] {
            let r = parse_json(base(k, v.clone()));
            if k == "max_completion_tokens" {
                // Not a completions field: ignored like any unknown member.
                assert!(r.is_ok());
                continue;
            }
            let e = r.expect_err(k);
            assert_eq!(e.param.as_deref(), Some(k), "{k}={v}");
        }
        let ok = parse_json(json!({"model": "m", "prompt": "x", "echo": false, "best_of": 1, "suffix": "", "logprobs": 2}))
            .expect("ok");
        assert_eq!(ok.logprobs, Some(2));
    }

    #[test]
    fn chunk_offsets_run_on_across_chunks() {
        let tok = |t: &str| TokenInfo {
            token: t.into(),
            bytes: t.as_bytes().to_vec(),
            logprob: -1.0,
            top: Vec::new(),
        };
        let mut c = CompletionChunks {
            logprobs: true,
            offset: 0,
        };
        let a = c.text("ab", &[tok("ab")]);
        let b = c.text("c", &[tok("c")]);
        assert_eq!(a["logprobs"]["text_offset"], json!([0]));
        assert_eq!(b["logprobs"]["text_offset"], json!([2]));
        let f = c.finish("stop", &[]);
        assert_eq!(
            (f["text"].clone(), f["logprobs"].clone()),
            (json!(""), Value::Null)
        );
    }
}
