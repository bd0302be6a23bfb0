//! Anthropic Claude Messages InvokeModel bodies (reference/bedrock-api.md 6.3).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Map, Value};

use crate::api::generation::Completion;
use crate::api::schema::ObjectReader;
use crate::api::stream::{StreamEncoder, StreamEvent, Timing};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation, Prompt, Role, Turn};

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
    };
    let messages = r.get("messages", true);
    r.finish()?;
    if let Some(v) = version.filter(|v| *v != VERSION) {
        return Err(BedrockError::validation(format!(
            "Invalid API version: {v}"
        )));
    }
    if body.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(BedrockError::validation(
            "This model doesn't support tool use.",
        ));
    }
    let system = match body.get("system") {
        None | Some(Value::Null) => None,
        Some(s) => Some(text_of(s, "#/system")?),
    };
    let turns = parse_messages(messages)?;
    Ok(Invocation {
        prompt: Prompt::Chat { system, turns },
        generation,
    })
}

fn parse_messages(messages: Option<&Value>) -> Result<Vec<Turn>, BedrockError> {
    let list = messages.and_then(Value::as_array).ok_or_else(|| {
        crate::api::schema::malformed(&["#/messages: expected type: JSONArray".into()])
    })?;
    if list.is_empty() {
        return Err(crate::api::schema::malformed(&[
            "#/messages: expected minimum item count: 1, found: 0".into(),
        ]));
    }
    let mut turns: Vec<Turn> = Vec::with_capacity(list.len());
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
        let text = text_of(content, &format!("{at}/content"))?;
        // Anthropic merges consecutive turns of one role.
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.text.push('\n');
                last.text.push_str(&text);
            }
            _ => turns.push(Turn { role, text }),
        }
    }
    Ok(turns)
}

/// The text of a string or an array of `{"type": "text", "text"}` blocks.
fn text_of(content: &Value, at: &str) -> Result<String, BedrockError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => parts.push(t.as_str()),
                    (Some("tool_use" | "tool_result"), _) => {
                        return Err(BedrockError::validation(
                            "This model doesn't support tool use.",
                        ))
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
            Ok(parts.join("\n"))
        }
        _ => Err(crate::api::schema::malformed(&[format!(
            "{at}: expected type: String or JSONArray"
        )])),
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
        "content": [{"type": "text", "text": c.text}],
        "stop_reason": stop_reason(&c.reason),
        "stop_sequence": stop_sequence(&c.reason),
        "usage": {"input_tokens": c.usage.prompt_tokens, "output_tokens": c.usage.output_tokens},
    })
}

/// Anthropic's streaming events, one per chunk.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    prompt_tokens: usize,
}

impl Encoder {
    /// An encoder for a request addressed as `model` with `prompt_tokens` tokens.
    pub fn new(model: &str, prompt_tokens: usize) -> Self {
        Self {
            model: model.to_string(),
            prompt_tokens,
        }
    }
}

impl StreamEncoder for Encoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        vec![
            StreamEvent::Chunk(json!({
                "type": "message_start",
                "message": {
                    "id": message_id(), "type": "message", "role": "assistant",
                    "model": self.model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
                },
            })),
            StreamEvent::Chunk(json!({
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""},
            })),
        ]
    }

    fn text(&mut self, text: &str, _: usize) -> Vec<StreamEvent> {
        vec![StreamEvent::Chunk(json!({
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }))]
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, _: Timing) -> Vec<StreamEvent> {
        vec![
            StreamEvent::Chunk(json!({"type": "content_block_stop", "index": 0})),
            StreamEvent::Chunk(json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reason), "stop_sequence": stop_sequence(reason)},
                "usage": {"output_tokens": usage.output_tokens},
            })),
            StreamEvent::Chunk(json!({"type": "message_stop"})),
        ]
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
        let Prompt::Chat { system, turns } = inv.prompt else {
            panic!("chat expected");
        };
        assert_eq!(system.as_deref(), Some("S"));
        assert_eq!(turns[0].text, "a\nb");
        assert_eq!(turns[1].role, Role::Assistant);
    }
}
