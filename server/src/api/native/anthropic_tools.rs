//! Tool use in Anthropic Messages bodies (reference/bedrock-api.md 6.3):
//! `tools`, `tool_choice`, `tool_use` / `tool_result` content blocks, with
//! Anthropic's own messages where they are known.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::api::schema::{malformed, ObjectReader};
use crate::bedrock::BedrockError;
use crate::prompt::{Role, Turn};
use crate::tools::output::Block;
use crate::tools::{valid_tool_name, ToolCall, ToolChoice, ToolConfig, ToolResult, ToolSpec};

/// Parses `tools` and `tool_choice`; `None` when the body has neither.
pub fn parse_tools(body: &Map<String, Value>) -> Result<Option<ToolConfig>, BedrockError> {
    let tools = body.get("tools").filter(|v| !v.is_null());
    let choice = body.get("tool_choice").filter(|v| !v.is_null());
    let Some(tools) = tools else {
        return match choice {
            None => Ok(None),
            Some(_) => Err(BedrockError::validation(
                "tool_choice may only be specified while providing tools.",
            )),
        };
    };
    let list = tools.as_array().ok_or_else(|| {
        malformed(&[format!(
            "#/tools: expected type: JSONArray, found: {}",
            crate::api::schema::type_name(tools)
        )])
    })?;
    let mut specs = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        specs.push(parse_tool(tool, i)?);
    }
    let mut seen = HashSet::new();
    if specs.iter().any(|t| !seen.insert(t.name.clone())) {
        return Err(BedrockError::validation(
            "tools: Tool names must be unique.",
        ));
    }
    let mut config = ToolConfig {
        tools: specs,
        choice: ToolChoice::Auto,
        single_call: false,
    };
    if let Some(choice) = choice {
        parse_choice(choice, &mut config)?;
    }
    Ok(Some(config))
}

fn parse_tool(tool: &Value, i: usize) -> Result<ToolSpec, BedrockError> {
    let at = format!("#/tools/{i}");
    let obj = tool.as_object().ok_or_else(|| {
        malformed(&[format!(
            "{at}: expected type: JSONObject, found: {}",
            crate::api::schema::type_name(tool)
        )])
    })?;
    if let Some(kind) = obj.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(BedrockError::validation(format!(
                "{at}: tools of type {kind} are not supported by this model; only custom tools are."
            )));
        }
    }
    let mut r = ObjectReader::new(obj, &at);
    r.only(&[
        "name",
        "description",
        "input_schema",
        "type",
        "cache_control",
    ]);
    let name = r.string("name", true).map(str::to_string);
    let description = r.string("description", false).map(str::to_string);
    let schema = r.object("input_schema", true);
    if let Some(n) = &name {
        if !valid_tool_name(n) {
            r.violation(
                "name",
                format!("string [{n}] does not match pattern ^[a-zA-Z0-9_-]{{1,64}}$"),
            );
        }
    }
    if let Some(s) = schema {
        if s.get("type").and_then(Value::as_str) != Some("object") {
            r.violation("input_schema/type", "expected: object");
        }
        if let Some(p) = s.get("properties").filter(|p| !p.is_object()) {
            r.violation(
                "input_schema/properties",
                format!(
                    "expected type: JSONObject, found: {}",
                    crate::api::schema::type_name(p)
                ),
            );
        }
    }
    r.finish()?;
    Ok(ToolSpec {
        name: name.unwrap_or_default(),
        description,
        input_schema: schema.map(|s| Value::Object(s.clone())).unwrap_or_default(),
    })
}

fn parse_choice(choice: &Value, config: &mut ToolConfig) -> Result<(), BedrockError> {
    let obj = choice
        .as_object()
        .ok_or_else(|| malformed(&["#/tool_choice: expected type: JSONObject".to_string()]))?;
    let mut r = ObjectReader::new(obj, "#/tool_choice");
    r.only(&["type", "name", "disable_parallel_tool_use"]);
    let kind = r.string("type", true);
    let name = r.string("name", kind == Some("tool"));
    let single = match r.get("disable_parallel_tool_use", false) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            r.violation("disable_parallel_tool_use", "expected type: Boolean");
            false
        }
    };
    r.finish()?;
    config.single_call = single;
    config.choice = match kind {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Any,
        Some("none") => ToolChoice::None,
        Some("tool") => {
            let name = name.unwrap_or_default();
            if config.tool(name).is_none() {
                return Err(BedrockError::validation(format!(
                    "tool_choice.name: the tool {name} is not in tools."
                )));
            }
            ToolChoice::Tool(name.to_string())
        }
        other => {
            return Err(malformed(&[format!(
                "#/tool_choice/type: {} is not a valid enum value [auto, any, tool, none]",
                other.unwrap_or("null")
            )]))
        }
    };
    if matches!(config.choice, ToolChoice::Any | ToolChoice::Tool(_)) && config.tools.is_empty() {
        return Err(BedrockError::validation(
            "tool_choice may only be specified while providing tools.",
        ));
    }
    Ok(())
}

/// Adds a `tool_use` / `tool_result` block to `turn` (`at` is its pointer).
pub fn add_block(kind: &str, block: &Value, turn: &mut Turn, at: &str) -> Result<(), BedrockError> {
    let obj = block
        .as_object()
        .ok_or_else(|| malformed(&[format!("{at}: expected type: JSONObject")]))?;
    match (kind, turn.role) {
        ("tool_use", Role::Assistant) => {
            let mut r = ObjectReader::new(obj, at);
            r.only(&["type", "id", "name", "input", "cache_control"]);
            let id = r.string("id", true).unwrap_or_default().to_string();
            let name = r.string("name", true).unwrap_or_default().to_string();
            let input = r.object("input", true).cloned();
            if !id.is_empty()
                && !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                r.violation(
                    "id",
                    format!("string [{id}] does not match pattern ^[a-zA-Z0-9_-]+$"),
                );
            }
            r.finish()?;
            turn.tool_calls.push(ToolCall {
                id,
                name,
                input: Value::Object(input.unwrap_or_default()),
            });
        }
        ("tool_result", Role::User) => {
            let mut r = ObjectReader::new(obj, at);
            r.only(&[
                "type",
                "tool_use_id",
                "content",
                "is_error",
                "cache_control",
            ]);
            let tool_use_id = r
                .string("tool_use_id", true)
                .unwrap_or_default()
                .to_string();
            let is_error = match r.get("is_error", false) {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    r.violation("is_error", "expected type: Boolean");
                    false
                }
            };
            let content = r.get("content", false).cloned();
            r.finish()?;
            let content = match content {
                None => String::new(),
                Some(Value::String(s)) => s,
                Some(Value::Array(items)) => result_text(&items, at)?,
                Some(other) => {
                    return Err(malformed(&[format!(
                        "{at}/content: expected type: String or JSONArray, found: {}",
                        crate::api::schema::type_name(&other)
                    )]))
                }
            };
            turn.tool_results.push(ToolResult {
                tool_use_id,
                content,
                is_error,
            });
        }
        _ => {
            return Err(BedrockError::validation(format!(
                "{at}: {kind} blocks are not allowed in {} messages.",
                turn.role.as_str()
            )))
        }
    }
    Ok(())
}

fn result_text(items: &[Value], at: &str) -> Result<String, BedrockError> {
    let mut parts = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        match (item.get("type").and_then(Value::as_str), item.get("text")) {
            (Some("text"), Some(Value::String(t))) => parts.push(t.as_str()),
            (Some(kind), _) => {
                return Err(BedrockError::validation(format!(
                    "{at}/content/{k}: content blocks of type {kind} are not supported in tool results by this model."
                )))
            }
            (None, _) => {
                return Err(malformed(&[format!(
                    "{at}/content/{k}: required key [type] not found"
                )]))
            }
        }
    }
    Ok(parts.join("\n"))
}

/// Conversation-wide rules, as Anthropic words them; `first_message[i]` is
/// the index of the first body message merged into `turns[i]`.
pub fn check_history(
    turns: &[Turn],
    first_message: &[usize],
    config: Option<&ToolConfig>,
) -> Result<(), BedrockError> {
    let uses_tools = turns
        .iter()
        .any(|t| !t.tool_calls.is_empty() || !t.tool_results.is_empty());
    if uses_tools && config.is_none() {
        return Err(BedrockError::validation(
            "Requests which include `tool_use` or `tool_result` blocks must define tools.",
        ));
    }
    let at = |i: usize| first_message.get(i).copied().unwrap_or(i);
    for (i, turn) in turns.iter().enumerate() {
        let answered: HashSet<&str> = turns
            .get(i + 1)
            .map(|next| {
                next.tool_results
                    .iter()
                    .map(|r| r.tool_use_id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&str> = turn
            .tool_calls
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(BedrockError::validation(format!(
                "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                at(i),
                missing.join(", ")
            )));
        }
        let asked: HashSet<&str> = match i.checked_sub(1) {
            Some(prev) => turns[prev]
                .tool_calls
                .iter()
                .map(|c| c.id.as_str())
                .collect(),
            None => HashSet::new(),
        };
        if let Some(r) = turn
            .tool_results
            .iter()
            .find(|r| !asked.contains(r.tool_use_id.as_str()))
        {
            return Err(BedrockError::validation(format!(
                "messages.{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                at(i),
                r.tool_use_id
            )));
        }
    }
    Ok(())
}

/// A Messages `content` array.
pub fn content_json(blocks: &[Block]) -> Value {
    let mut out: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse(c) => {
                json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input})
            }
        })
        .collect();
    if out.is_empty() {
        out.push(json!({"type": "text", "text": ""}));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(v: Value) -> Result<Option<ToolConfig>, BedrockError> {
        parse_tools(v.as_object().unwrap_or(&Map::new()))
    }

    fn weather() -> Value {
        json!({"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {}}})
    }

    #[test]
    fn tools_and_choice_parse() {
        let c = tools(json!({"tools": [weather()], "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}}))
            .expect("valid")
            .expect("tools");
        assert_eq!(c.choice, ToolChoice::Tool("get_weather".into()));
        assert!(c.single_call);
        assert_eq!(tools(json!({})).expect("valid"), None);
        let none =
            tools(json!({"tools": [weather()], "tool_choice": {"type": "none"}})).expect("valid");
        assert_eq!(none.map(|c| c.choice), Some(ToolChoice::None));
    }

    #[test]
    fn bad_tools_are_reported() {
        let cases = [
            (
                json!({"tool_choice": {"type": "auto"}}),
                "tool_choice may only be specified while providing tools.",
            ),
            (
                json!({"tools": [weather(), weather()]}),
                "tools: Tool names must be unique.",
            ),
            (
                json!({"tools": [{"name": "x y", "input_schema": {"type": "object"}}]}),
                "#/tools/0/name: string [x y] does not match pattern",
            ),
            (
                json!({"tools": [{"name": "x"}]}),
                "#/tools/0: required key [input_schema] not found",
            ),
            (
                json!({"tools": [{"name": "x", "input_schema": {"type": "array"}}]}),
                "#/tools/0/input_schema/type: expected: object",
            ),
            (
                json!({"tools": [{"type": "bash_20250124", "name": "bash"}]}),
                "only custom tools",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "tool", "name": "other"}}),
                "the tool other is not in tools",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "maybe"}}),
                "#/tool_choice/type: maybe is not a valid enum value",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "tool"}}),
                "#/tool_choice: required key [name] not found",
            ),
        ];
        for (body, want) in cases {
            let err = tools(body.clone()).expect_err(&body.to_string());
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
    }

    #[test]
    fn tool_blocks_land_in_their_turns() {
        let mut a = Turn::text(Role::Assistant, "");
        add_block(
            "tool_use",
            &json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}),
            &mut a,
            "#/messages/1/content/0",
        )
        .expect("valid");
        assert_eq!(a.tool_calls[0].input, json!({"x": 1}));
        let mut u = Turn::text(Role::User, "");
        add_block("tool_result", &json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}], "is_error": true}), &mut u, "#/messages/2/content/0").expect("valid");
        assert_eq!(u.tool_results[0].content, "one\ntwo");
        assert!(u.tool_results[0].is_error);
        assert!(add_block(
            "tool_use",
            &json!({"type": "tool_use", "id": "x", "name": "f", "input": {}}),
            &mut u,
            "#"
        )
        .is_err());
        assert!(add_block(
            "tool_result",
            &json!({"type": "tool_result", "tool_use_id": "x", "content": [{"type": "image"}]}),
            &mut u,
            "#"
        )
        .is_err());
        let config = tools(json!({"tools": [weather()]})).expect("valid");
        let q = Turn::text(Role::User, "q");
        check_history(
            &[q.clone(), a.clone(), u.clone()],
            &[0, 1, 2],
            config.as_ref(),
        )
        .expect("valid");
        let err = check_history(&[q.clone(), a.clone()], &[0, 1], config.as_ref())
            .expect_err("unanswered");
        assert!(err.message.starts_with("messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1."), "{}", err.message);
        let err = check_history(
            &[q.clone(), Turn::text(Role::Assistant, "a"), u.clone()],
            &[0, 1, 2],
            config.as_ref(),
        )
        .expect_err("unexpected");
        assert!(
            err.message
                .contains("unexpected `tool_use_id` found in `tool_result` blocks: toolu_1"),
            "{}",
            err.message
        );
        let err = check_history(&[q, a, u], &[0, 1, 2], None).expect_err("no tools");
        assert_eq!(
            err.message,
            "Requests which include `tool_use` or `tool_result` blocks must define tools."
        );
    }
}
