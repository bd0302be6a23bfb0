//! Amazon Titan Text InvokeModel bodies (reference/bedrock-api.md 6.4).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation, Prompt};

/// Parses `{"inputText", "textGenerationConfig": {...}}`.
pub fn parse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    let mut r = ObjectReader::new(body, "#");
    r.only(&["inputText", "textGenerationConfig"]);
    let text = r.string("inputText", true).unwrap_or_default().to_string();
    let mut generation = Generation::default();
    if let Some(config) = r.object("textGenerationConfig", false) {
        let mut c = ObjectReader::new(config, "#/textGenerationConfig");
        c.only(&["maxTokenCount", "temperature", "topP", "stopSequences"]);
        generation = Generation {
            max_tokens: c.integer("maxTokenCount", 1, 1 << 20),
            temperature: c.number("temperature", 0.0, 1.0),
            top_p: c.number("topP", 0.0, 1.0),
            top_k: None,
            stop_sequences: c.strings("stopSequences", 4),
            ..Generation::default()
        };
        r.absorb(c);
    }
    r.finish()?;
    Ok(Invocation {
        // Titan takes plain text; the tokenizer adds what the model expects.
        prompt: Prompt::Text {
            text,
            add_special_tokens: true,
        },
        generation,
    })
}

fn completion_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "FINISH",
        StopReason::StopSequence(_) => "STOP_CRITERIA_MET",
        StopReason::MaxTokens | StopReason::ContextLength => "LENGTH",
    }
}

/// The InvokeModel response body.
pub fn response(c: &Completion) -> Value {
    json!({
        "inputTextTokenCount": c.usage.prompt_tokens,
        "results": [{
            "tokenCount": c.usage.output_tokens,
            "outputText": c.text,
            "completionReason": completion_reason(&c.reason),
        }],
    })
}

/// Stream chunks with running token counts.
#[derive(Debug)]
pub struct Encoder {
    prompt_tokens: usize,
}

impl Encoder {
    /// An encoder for a prompt of `prompt_tokens` tokens.
    pub fn new(prompt_tokens: usize) -> Self {
        Self { prompt_tokens }
    }

    fn chunk(&self, text: &str, tokens: usize, reason: Option<&str>) -> StreamEvent {
        StreamEvent::Chunk(json!({
            "outputText": text,
            "index": 0,
            "totalOutputTextTokenCount": tokens,
            "completionReason": reason,
            "inputTextTokenCount": self.prompt_tokens,
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
        vec![self.chunk("", usage.output_tokens, Some(completion_reason(reason)))]
    }
}
