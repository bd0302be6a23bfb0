//! Native InvokeModel bodies, one module per model family; the family follows
//! the model id's provider prefix.

pub mod anthropic;
pub mod anthropic_tools;
pub mod meta;
pub mod mistral;
pub mod nova;
pub mod titan;

use factory_engine::StopReason;
use serde_json::{Map, Value};

use super::converse_output::ConverseEncoder;
use super::generation::Completion;
use super::stream::StreamEncoder;
use crate::bedrock::BedrockError;
use crate::model_id::Family;
use crate::prompt::{Generation, Invocation, Prompt};
use crate::tools::output::ToolOutput;

/// The `stop`/`length` stop reason that Llama and Mistral bodies share.
fn stop_or_length(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextLength => "length",
    }
}

/// A prompt the caller already templated (special tokens included), as Llama
/// and Mistral bodies carry it.
fn templated(text: String, generation: Generation) -> Invocation {
    Invocation {
        prompt: Prompt::Text {
            text,
            add_special_tokens: false,
        },
        generation,
    }
}

/// Parses a native body of `family`.
pub fn parse(family: Family, body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    match family {
        Family::Meta => meta::parse(body),
        Family::Mistral => mistral::parse(body),
        Family::Anthropic => anthropic::parse(body),
        Family::Titan => titan::parse(body),
        Family::Nova => nova::parse(body),
    }
}

/// The native response body; `model` is the id the client used.
pub fn response(family: Family, c: &Completion, model: &str) -> Value {
    match family {
        Family::Meta => meta::response(c),
        Family::Mistral => mistral::response(c),
        Family::Anthropic => anthropic::response(c, model),
        Family::Titan => titan::response(c),
        Family::Nova => nova::response(c),
    }
}

/// The stream-chunk encoder of `family`; `tools` reads tool calls from the
/// output (only the families whose bodies take tools get one).
pub fn encoder(
    family: Family,
    model: &str,
    prompt_tokens: usize,
    tools: Option<ToolOutput>,
) -> Box<dyn StreamEncoder> {
    match family {
        Family::Meta => Box::new(meta::Encoder::new(prompt_tokens)),
        Family::Mistral => Box::new(mistral::Encoder),
        Family::Anthropic => {
            Box::new(anthropic::Encoder::new(model, prompt_tokens).with_tools(tools))
        }
        Family::Titan => Box::new(titan::Encoder::new(prompt_tokens)),
        Family::Nova => Box::new(ConverseEncoder::chunks().with_tools(tools, prompt_tokens)),
    }
}
