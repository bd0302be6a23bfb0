//! Meta Llama InvokeModel bodies (reference/bedrock-api.md 6.1).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use super::{stop_or_length, templated};
use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation};

/// Parses `{"prompt", "temperature", "top_p", "max_gen_len"}`.
pub fn parse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    let mut r = ObjectReader::new(body, "#");
    r.only(&["prompt", "temperature", "top_p", "max_gen_len", "images"]);
    let prompt = r.string("prompt", true).unwrap_or_default().to_string();
    let generation = Generation {
        temperature: r.number("temperature", 0.0, 1.0),
        top_p: r.number("top_p", 0.0, 1.0),
        max_tokens: Some(r.integer("max_gen_len", 1, 2048).unwrap_or(512)),
        ..Generation::default()
    };
    if body.contains_key("images") {
        r.violation("images", "images are not supported by this model");
    }
    r.finish()?;
    Ok(templated(prompt, generation))
}

/// The InvokeModel response body.
pub fn response(c: &Completion) -> Value {
    json!({
        "generation": c.text,
        "prompt_token_count": c.usage.prompt_tokens,
        "generation_token_count": c.usage.output_tokens,
        "stop_reason": stop_or_length(&c.reason),
    })
}

/// Stream chunks: the first carries the prompt's token count, the last the stop reason.
#[derive(Debug)]
pub struct Encoder {
    prompt_tokens: usize,
    sent_first: bool,
}

impl Encoder {
    /// An encoder for a prompt of `prompt_tokens` tokens.
    pub fn new(prompt_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            sent_first: false,
        }
    }

    fn chunk(&mut self, text: &str, tokens: usize, reason: Option<&str>) -> StreamEvent {
        let prompt_tokens = (!self.sent_first).then_some(self.prompt_tokens);
        self.sent_first = true;
        StreamEvent::Chunk(json!({
            "generation": text,
            "prompt_token_count": prompt_tokens,
            "generation_token_count": tokens,
            "stop_reason": reason,
        }))
    }
}

impl StreamEncoder for Encoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        Vec::new()
    }

    fn text(&mut self, text: &str, output_tokens: usize) -> Vec<StreamEvent> {
        vec![self.chunk(text, output_tokens, None)]
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, _: Timing) -> Vec<StreamEvent> {
        vec![self.chunk("", usage.output_tokens, Some(stop_or_length(reason)))]
    }
}
