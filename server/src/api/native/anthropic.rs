//! Anthropic Claude Messages InvokeModel bodies (reference/bedrock-api.md 6.3).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use super::anthropic_tools::{add_block, check_history, content_json, parse_tools};
use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation, Prompt, Role, Turn};
use crate::tools::output::{BlockEvent, BlockIndexer, Ending, OutputEvent, ToolOutput};

/// The only `anthropic_version` Bedrock accepts.
pub const VERSION: &str = "bedrock-2023-05-31";

/// Parses a Messages body.
pub fn parse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    let mut r = ObjectReader::new(body, "#");
    r.only(&[
        "anthropic_version",
        "anthropic_beta",
        "max_tokens",
        "system",
        "messages",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
    ]);
    let version = r.string("anthropic_version", true);
    let max_tokens = r.integer("max_tokens", 1, 1 << 20);
    if max_tokens.is_none() && !body.contains_key("max_tokens") {
        r.get("max_tokens", true);
    }
    let generation = Generation {
        max_tokens,
        temperature: r.number("temperature", 0.0, 1.0),
        top_p: r.number("top_p", 0.0, 1.0),
        top_k: r.integer("top_k", 0, 500),
        stop_sequences: r.strings("stop_sequences", 8191),
        ..Generation::default()
    };
    let messages = r.get("messages", true);
    r.finish()?;
    if let Some(v) = version.filter(|v| *v != VERSION) {
        return Err(BedrockError::validation(format!(
            "Invalid API version: {v}"
        )));
    }
    let tools = parse_tools(body)?;
    let system = match body.get("system") {
        None | Some(Value::Null) => None,
        Some(s) => Some(system_text(s)?),
    };
    let (turns, first_message) = parse_messages(messages)?;
    check_history(&turns, &first_message, tools.as_ref())?;
    Ok(Invocation {
        prompt: Prompt::Chat {
            system,
            turns,
            tools,
        },
        generation,
    })
}

/// The system prompt: a string or text blocks.
fn system_text(system: &Value) -> Result<String, BedrockError> {
    let turn = turn_of(Role::User, system, "#/system")?;
    if !turn.tool_results.is_empty() {
        return Err(BedrockError::validation(
            "#/system: only text blocks are allowed in the system prompt.",
        ));
    }
    Ok(turn.text)
}

/// The turns, consecutive messages of one role merged, and the index of the
/// first message of each turn.
fn parse_messages(messages: Option<&Value>) -> Result<(Vec<Turn>, Vec<usize>), BedrockError> {
    let list = messages.and_then(Value::as_array).ok_or_else(|| {
        crate::api::schema::malformed(&["#/messages: expected type: JSONArray".into()])
    })?;
    if list.is_empty() {
        return Err(crate::api::schema::malformed(&[
            "#/messages: expected minimum item count: 1, found: 0".into(),
        ]));
    }
    let mut turns: Vec<Turn> = Vec::with_capacity(list.len());
    let mut first_message = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = format!("#/messages/{i}");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(crate::api::schema::malformed(&[format!(
                    "{at}/role: must be one of [user, assistant]"
                )]))
            }
        };
        let content = m.get("content").ok_or_else(|| {
            crate::api::schema::malformed(&[format!("{at}: required key [content] not found")])
        })?;
        let turn = turn_of(role, content, &format!("{at}/content"))?;
        // Anthropic merges consecutive turns of one role.
        match turns.last_mut() {
            Some(last) if last.role == role => {
                if !turn.text.is_empty() {
                    if !last.text.is_empty() {
                        last.text.push('\n');
                    }
                    last.text.push_str(&turn.text);
                }
                last.tool_calls.extend(turn.tool_calls);
                last.tool_results.extend(turn.tool_results);
            }
            _ => {
                turns.push(turn);
                first_message.push(i);
            }
        }
    }
    Ok((turns, first_message))
}

/// A message's content: a string, or an array of text / tool blocks.
fn turn_of(role: Role, content: &Value, at: &str) -> Result<Turn, BedrockError> {
    let mut turn = Turn::text(role, String::new());
    match content {
        Value::String(s) => {
            turn.text = s.clone();
            Ok(turn)
        }
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => parts.push(t.as_str()),
                    (Some(kind @ ("tool_use" | "tool_result")), _) => {
                        add_block(kind, b, &mut turn, &format!("{at}/{j}"))?
                    }
                    (Some(kind), _) => {
                        return Err(BedrockError::validation(format!(
                        "{at}/{j}: content blocks of type {kind} are not supported by this model."
                    )))
                    }
                    (None, _) => {
                        return Err(crate::api::schema::malformed(&[format!(
                            "{at}/{j}: required key [type] not found"
                        )]))
                    }
                }
            }
            turn.text = parts.join("\n");
            Ok(turn)
        }
        _ => Err(crate::api::schema::malformed(&[format!(
            "{at}: expected type: String or JSONArray"
        )])),
    }
}

/// Messages' `stop_reason` for a finished generation.
fn completion_stop_reason(c: &Completion) -> &'static str {
    if c.tool_use {
        "tool_use"
    } else {
        stop_reason(&c.reason)
    }
}

fn stop_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::StopSequence(_) => "stop_sequence",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ContextLength => "model_context_window_exceeded",
    }
}

fn stop_sequence(reason: &StopReason) -> Value {
    match reason {
        StopReason::StopSequence(s) => json!(s),
        _ => Value::Null,
    }
}

fn message_id() -> String {
    format!("msg_bdrk_{:024x}", rand::random::<u128>() >> 32)
}

/// The InvokeModel response body for a request addressed as `model`.
pub fn response(c: &Completion, model: &str) -> Value {
    json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_json(&c.content),
        "stop_reason": completion_stop_reason(c),
        "stop_sequence": if c.tool_use { Value::Null } else { stop_sequence(&c.reason) },
        "usage": {"input_tokens": c.usage.prompt_tokens, "output_tokens": c.usage.output_tokens},
    })
}

/// Anthropic's streaming events, one per chunk. Blocks start when their
/// first content arrives (a reply made only of a tool call has no text block).
#[derive(Debug)]
pub struct Encoder {
    model: String,
    prompt_tokens: usize,
    blocks: BlockIndexer,
    tools: Option<ToolOutput>,
}

impl Encoder {
    /// An encoder for a request addressed as `model` with `prompt_tokens` tokens.
    pub fn new(model: &str, prompt_tokens: usize) -> Self {
        Self {
            model: model.to_string(),
            prompt_tokens,
            blocks: BlockIndexer::default(),
            tools: None,
        }
    }

    /// With tool calls read from the output.
    pub fn with_tools(mut self, tools: Option<ToolOutput>) -> Self {
        self.tools = tools;
        self
    }

    fn events(&mut self, output: Vec<OutputEvent>) -> Vec<StreamEvent> {
        let blocks = self.blocks.map(output);
        chunks(blocks)
    }
}

/// The chunks of block events.
fn chunks(blocks: Vec<BlockEvent>) -> Vec<StreamEvent> {
    blocks
        .into_iter()
        .filter_map(|b| {
            let chunk = match b {
                BlockEvent::Start { index, tool: None } => json!({
                    "type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""},
                }),
                BlockEvent::Start {
                    index,
                    tool: Some((id, name)),
                } => json!({
                    "type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                }),
                BlockEvent::Text(_, t) | BlockEvent::Input(_, t) if t.is_empty() => return None,
                BlockEvent::Text(index, text) => json!({
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text},
                }),
                BlockEvent::Input(index, piece) => json!({
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }),
                BlockEvent::Stop(index) => json!({"type": "content_block_stop", "index": index}),
            };
            Some(StreamEvent::Chunk(chunk))
        })
        .collect()
}

impl StreamEncoder for Encoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Chunk(json!({
            "type": "message_start",
            "message": {
                "id": message_id(), "type": "message", "role": "assistant",
                "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
            },
        }))];
        if let Some(tools) = &mut self.tools {
            let start = tools.start();
            events.extend(self.events(start));
        }
        events
    }

    fn text(&mut self, text: &str, _: usize) -> Vec<StreamEvent> {
        let output = match &mut self.tools {
            Some(tools) => tools.push(text),
            None => vec![OutputEvent::Text(text.to_string())],
        };
        self.events(output)
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, _: Timing) -> Vec<StreamEvent> {
        let (rest, tool_use) = match &mut self.tools {
            Some(tools) => {
                let rest = tools.finish();
                (rest, tools.ending(reason.clone()) == Ending::ToolUse)
            }
            None => (Vec::new(), false),
        };
        let mut events = self.events(rest);
        let closing = self.blocks.finish();
        events.extend(chunks(closing));
        let (stop, sequence) = if tool_use {
            ("tool_use", Value::Null)
        } else {
            (stop_reason(reason), stop_sequence(reason))
        };
        events.push(StreamEvent::Chunk(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": sequence},
            "usage": {"output_tokens": usage.output_tokens},
        })));
        events.push(StreamEvent::Chunk(json!({"type": "message_stop"})));
        events
    }

    fn stop_now(&self, output_tokens: usize) -> Option<Usage> {
        self.tools
            .as_ref()
            .filter(|t| t.is_complete())
            .map(|_| Usage {
                prompt_tokens: self.prompt_tokens,
                output_tokens,
                cached_prompt_tokens: 0,
                ..Usage::default()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<Invocation, BedrockError> {
        parse(v.as_object().unwrap_or(&Map::new()))
    }

    #[test]
    fn stream_and_model_keys_are_extraneous() {
        let err = parse_json(json!({
            "anthropic_version": VERSION, "max_tokens": 5, "stream": true, "model": "x",
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .expect_err("invalid");
        assert!(err
            .message
            .contains("#: extraneous key [stream] is not permitted"));
        assert!(err
            .message
            .contains("#: extraneous key [model] is not permitted"));
    }

    #[test]
    fn missing_required_keys_are_listed() {
        let err = parse_json(json!({"anthropic_version": VERSION})).expect_err("invalid");
        assert!(
            err.message.contains("required key [max_tokens] not found"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("required key [messages] not found"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_version_is_named() {
        let err = parse_json(json!({
            "anthropic_version": "2023-01-01", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .expect_err("invalid");
        assert_eq!(err.message, "Invalid API version: 2023-01-01");
    }

    #[test]
    fn string_and_block_content_both_parse() {
        let inv = parse_json(json!({
            "anthropic_version": VERSION, "max_tokens": 5, "system": [{"type": "text", "text": "S"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"}
            ]
        }))
        .expect("valid");
        let Prompt::Chat { system, turns, .. } = inv.prompt else {
            panic!("chat expected");
        };
        assert_eq!(system.as_deref(), Some("S"));
        assert_eq!(turns[0].text, "a\nb");
        assert_eq!(turns[1].role, Role::Assistant);
    }
}
