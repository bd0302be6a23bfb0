//! Mistral text-completion InvokeModel bodies (reference/bedrock-api.md 6.2).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation, Prompt};

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
    };
    r.finish()?;
    Ok(Invocation {
        prompt: Prompt::Text {
            text: prompt,
            add_special_tokens: false,
        },
        generation,
    })
}

fn stop_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextLength => "length",
    }
}

/// The InvokeModel response body.
pub fn response(c: &Completion) -> Value {
    json!({"outputs": [{"text": c.text, "stop_reason": stop_reason(&c.reason)}]})
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
            json!({"outputs": [{"text": "", "stop_reason": stop_reason(reason)}]}),
        )]
    }
}
