//! Mistral text-completion InvokeModel bodies (reference/bedrock-api.md 6.2).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use super::{stop_or_length, templated};
use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation};

/// Parses `{"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop"}`.
pub fn parse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    let mut r = ObjectReader::new(body, "#");
    r.only(&[
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
    ]);
    let prompt = r.string("prompt", true).unwrap_or_default().to_string();
    let generation = Generation {
        max_tokens: r.integer("max_tokens", 1, 1 << 20),
        temperature: r.number("temperature", 0.0, 1.0),
        top_p: r.number("top_p", 0.0, 1.0),
        top_k: r.integer("top_k", 0, 200),
        stop_sequences: r.strings("stop", 10),
        ..Generation::default()
    };
    r.finish()?;
    Ok(templated(prompt, generation))
}

/// The InvokeModel response body.
pub fn response(c: &Completion) -> Value {
    json!({"outputs": [{"text": c.text, "stop_reason": stop_or_length(&c.reason)}]})
}

/// Stream chunks `{"outputs": [{"text", "stop_reason"}]}`.
#[derive(Debug, Default)]
pub struct Encoder;

impl StreamEncoder for Encoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        Vec::new()
    }

    fn text(&mut self, text: &str, _: usize) -> Vec<StreamEvent> {
        vec![StreamEvent::Chunk(
            json!({"outputs": [{"text": text, "stop_reason": null}]}),
        )]
    }

    fn finish(&mut self, reason: &StopReason, _: &Usage, _: Timing) -> Vec<StreamEvent> {
        vec![StreamEvent::Chunk(
            json!({"outputs": [{"text": "", "stop_reason": stop_or_length(reason)}]}),
        )]
    }
}
