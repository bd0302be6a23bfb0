//! Tool calls in generated text. Models write them in one of a few forms:
//!
//! - Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
//!   one or several (also what the generic prompt asks for);
//! - Llama 3.1: the whole message is `{"name": ..., "parameters": {...}}`;
//! - Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
//!
//! A call counts only if its JSON is valid and its name is one of the
//! request's tools; anything else stays text. [`extract`] splits a whole
//! text; streams use [`super::output::ToolOutput`], which this wraps.

use serde_json::{Map, Value};

use super::output::{Block, BlockCollector, ToolOutput};
use super::{IdStyle, ToolConfig};

/// Opens a Hermes-style call.
pub const HERMES_OPEN: &str = "<tool_call>";
/// Closes a Hermes-style call.
pub const HERMES_CLOSE: &str = "</tool_call>";
/// Opens Mistral's list of calls.
pub const MISTRAL_OPEN: &str = "[TOOL_CALLS]";

/// A call found in text, before it gets an id.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCall {
    /// The tool's name (one of the request's).
    pub name: String,
    /// Its arguments (a JSON object).
    pub input: Value,
}

/// The calls `value` describes: one call object or a non-empty array of
/// them, each `{"name", "arguments" | "parameters"}` (arguments an object or
/// a JSON string of one; OpenAI's `{"function": {...}}` wrapping accepted).
/// `None` unless every call is well-formed and names one of `config`'s tools.
pub fn calls_in_json(value: &Value, config: &ToolConfig) -> Option<Vec<FoundCall>> {
    let items: Vec<&Value> = match value {
        Value::Array(list) if !list.is_empty() => list.iter().collect(),
        Value::Object(_) => vec![value],
        _ => return None,
    };
    items.into_iter().map(|v| call_in_json(v, config)).collect()
}

fn call_in_json(value: &Value, config: &ToolConfig) -> Option<FoundCall> {
    let obj = value.as_object()?;
    let obj = obj
        .get("function")
        .and_then(Value::as_object)
        .unwrap_or(obj);
    let name = obj.get("name")?.as_str()?;
    config.tool(name)?;
    let input = match obj.get("arguments").or_else(|| obj.get("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s).ok()? {
            v @ Value::Object(_) => v,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(FoundCall {
        name: name.to_string(),
        input,
    })
}

/// Splits a whole generated text into text and tool-call blocks (auto mode).
pub fn extract(text: &str, config: &ToolConfig, ids: IdStyle) -> Vec<Block> {
    let mut output = ToolOutput::new(config, ids, None);
    let mut blocks = BlockCollector::default();
    blocks.add(output.push(text));
    blocks.add(output.finish());
    blocks.into_blocks()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{ToolChoice, ToolSpec};
    use serde_json::json;

    fn config() -> ToolConfig {
        ToolConfig {
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: None,
                input_schema: json!({"type": "object"}),
            }],
            choice: ToolChoice::Auto,
            single_call: false,
        }
    }

    #[test]
    fn call_objects_in_every_known_shape() {
        let c = config();
        for v in [
            json!({"name": "get_weather", "arguments": {"city": "Rome"}}),
            json!({"name": "get_weather", "parameters": {"city": "Rome"}}),
            json!({"type": "function", "name": "get_weather", "parameters": {"city": "Rome"}}),
            json!({"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}),
            json!({"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}),
            json!([{"name": "get_weather", "arguments": {"city": "Rome"}}]),
        ] {
            let calls = calls_in_json(&v, &c).unwrap_or_else(|| panic!("{v}"));
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].input, json!({"city": "Rome"}), "{v}");
        }
        assert_eq!(
            calls_in_json(&json!({"name": "get_weather"}), &c).map(|c| c[0].input.clone()),
            Some(json!({}))
        );
    }

    #[test]
    fn malformed_or_unknown_calls_are_not_calls() {
        let c = config();
        for v in [
            json!({"name": "other", "arguments": {}}),
            json!({"arguments": {}}),
            json!({"name": 3}),
            json!({"name": "get_weather", "arguments": [1]}),
            json!({"name": "get_weather", "arguments": "not json"}),
            json!([]),
            json!([{"name": "get_weather"}, {"name": "other"}]),
            json!("get_weather"),
        ] {
            assert_eq!(calls_in_json(&v, &c), None, "{v}");
        }
    }

    #[test]
    fn extract_splits_text_and_calls() {
        let blocks = extract(
            "Checking.<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call> Done.",
            &config(),
            IdStyle::Converse,
        );
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert_eq!(blocks[0], Block::Text("Checking.".into()));
        assert!(
            matches!(&blocks[1], Block::ToolUse(c) if c.name == "get_weather" && c.input == json!({"city": "Rome"}))
        );
        assert_eq!(blocks[2], Block::Text("Done.".into()));
    }
}
