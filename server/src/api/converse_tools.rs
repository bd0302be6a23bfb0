//! Converse's tool shapes (reference/bedrock-api.md 5.1): `toolConfig`,
//! `toolUse` and `toolResult` content blocks, with Bedrock's validation
//! messages where they are known.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::bedrock::BedrockError;
use crate::prompt::{Role, Turn};
use crate::tools::{valid_tool_name, ToolCall, ToolChoice, ToolConfig, ToolResult, ToolSpec};

/// Parses `toolConfig`.
pub fn parse_tool_config(config: &Value) -> Result<ToolConfig, BedrockError> {
    let config = config.as_object().ok_or_else(|| {
        BedrockError::validation("Invalid type for toolConfig: expected an object.")
    })?;
    let mut constraints = Vec::new();
    let list = match config.get("tools").filter(|v| !v.is_null()) {
        None => {
            constraints.push(
                "Value null at 'toolConfig.tools' failed to satisfy constraint: Member must not be null"
                    .to_string(),
            );
            &[][..]
        }
        Some(Value::Array(list)) => {
            if list.is_empty() {
                constraints.push("Value at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1".to_string());
            }
            list.as_slice()
        }
        Some(_) => {
            return Err(BedrockError::validation(
                "Invalid type for toolConfig.tools: expected a list.",
            ))
        }
    };
    let mut tools: Vec<ToolSpec> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let Some((kind, spec)) = single_member(tool) else {
            return Err(BedrockError::validation(format!(
                "The Tool object at toolConfig.tools.{i} must set exactly one of toolSpec, systemTool or cachePoint."
            )));
        };
        match kind {
            "toolSpec" => {
                if let Some(t) = tool_spec(spec, i, &mut constraints)? {
                    tools.push(t);
                }
            }
            // Prompt-cache markers change nothing: the prefix cache is automatic.
            "cachePoint" => {}
            "systemTool" => {
                return Err(BedrockError::validation(format!(
                    "This model doesn't support the systemTool at toolConfig.tools.{i}. Remove it and try again."
                )))
            }
            other => {
                return Err(BedrockError::validation(format!(
                    "The Tool object at toolConfig.tools.{i} has an unknown member {other}."
                )))
            }
        }
    }
    if !constraints.is_empty() {
        return Err(constraint_error(&constraints));
    }
    let mut seen = HashSet::new();
    for t in &tools {
        if !seen.insert(t.name.as_str()) {
            return Err(BedrockError::validation(format!(
                "The toolConfig field contains more than one tool named {}. Tool names must be unique.",
                t.name
            )));
        }
    }
    let choice = match config.get("toolChoice").filter(|v| !v.is_null()) {
        None => ToolChoice::Auto,
        Some(c) => parse_tool_choice(c, &tools)?,
    };
    Ok(ToolConfig {
        tools,
        choice,
        single_call: false,
    })
}

/// Parses `toolConfig.toolChoice` against the parsed tools.
fn parse_tool_choice(choice: &Value, tools: &[ToolSpec]) -> Result<ToolChoice, BedrockError> {
    match single_member(choice) {
        Some(("auto", _)) => Ok(ToolChoice::Auto),
        Some(("any", _)) => Ok(ToolChoice::Any),
        Some(("tool", t)) => {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if !valid_tool_name(name) {
                return Err(constraint_error(&[format!(
                    "Value '{name}' at 'toolConfig.toolChoice.tool.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
                )]));
            }
            if !tools.iter().any(|t| t.name == name) {
                return Err(BedrockError::validation(format!(
                    "The tool {name} named in toolConfig.toolChoice.tool.name isn't defined in toolConfig.tools. Define it or choose another tool and try again."
                )));
            }
            Ok(ToolChoice::Tool(name.to_string()))
        }
        _ => Err(BedrockError::validation(
            "The toolConfig.toolChoice field must set exactly one of auto, any or tool.",
        )),
    }
}

/// A union's only member.
fn single_member(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object().filter(|o| o.len() == 1)?;
    obj.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// Smithy-style constraint violations in one message, as AWS writes them.
fn constraint_error(violations: &[String]) -> BedrockError {
    let n = violations.len();
    BedrockError::validation(format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        violations.join("; ")
    ))
}

fn tool_spec(
    spec: &Value,
    i: usize,
    constraints: &mut Vec<String>,
) -> Result<Option<ToolSpec>, BedrockError> {
    // AWS numbers list members from 1 in constraint messages.
    let member = format!("toolConfig.tools.{}.member.toolSpec", i + 1);
    let spec = spec.as_object().ok_or_else(|| {
        BedrockError::validation(format!(
            "Invalid type for toolConfig.tools.{i}.toolSpec: expected an object."
        ))
    })?;
    let name = spec.get("name").and_then(Value::as_str);
    match name {
        None => constraints.push(format!(
            "Value null at '{member}.name' failed to satisfy constraint: Member must not be null"
        )),
        Some(n) if !valid_tool_name(n) => {
            // AWS reports the pattern first, then the length (an empty name fails both).
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                constraints.push(format!(
                    "Value '{n}' at '{member}.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
                ));
            }
            if n.is_empty() || n.len() > 64 {
                let bound = if n.is_empty() {
                    "greater than or equal to 1"
                } else {
                    "less than or equal to 64"
                };
                constraints.push(format!(
                    "Value '{n}' at '{member}.name' failed to satisfy constraint: Member must have length {bound}"
                ));
            }
        }
        Some(_) => {}
    }
    let description = match spec.get("description").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::String(d)) if !d.is_empty() => Some(d.clone()),
        Some(Value::String(_)) => {
            constraints.push(format!(
                "Value '' at '{member}.description' failed to satisfy constraint: Member must have length greater than or equal to 1"
            ));
            None
        }
        Some(_) => {
            return Err(BedrockError::validation(format!(
                "Invalid type for toolConfig.tools.{i}.toolSpec.description: expected a string."
            )))
        }
    };
    let schema = match spec.get("inputSchema").filter(|v| !v.is_null()) {
        None => {
            constraints.push(format!(
                "Value null at '{member}.inputSchema' failed to satisfy constraint: Member must not be null"
            ));
            None
        }
        Some(s) => match single_member(s) {
            Some(("json", json)) => Some(check_schema(json, i)?),
            _ => {
                return Err(BedrockError::validation(format!(
                    "The inputSchema at toolConfig.tools.{i}.toolSpec.inputSchema must set exactly one member: json."
                )))
            }
        },
    };
    Ok(match (name, schema) {
        (Some(name), Some(input_schema)) if valid_tool_name(name) => Some(ToolSpec {
            name: name.to_string(),
            description,
            input_schema,
        }),
        _ => None,
    })
}

/// The structural checks Bedrock applies to an input schema: an object
/// schema whose `properties` is an object of schemas and `required` a list
/// of names. (Not a full JSON Schema meta-validation.)
fn check_schema(json: &Value, i: usize) -> Result<Value, BedrockError> {
    let at = format!("toolConfig.tools.{i}.toolSpec.inputSchema");
    let Some(obj) = json.as_object() else {
        return Err(BedrockError::validation(format!(
            "The json schema definition at {at} is invalid. Fix the following errors and try again: $: {} found, object expected",
            json_type(json)
        )));
    };
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        return Err(BedrockError::validation(format!(
            "The value at {at}.json.type must be one of the following: object."
        )));
    }
    let mut problems = Vec::new();
    match obj.get("properties") {
        None => {}
        Some(Value::Object(props)) => {
            for (k, v) in props {
                if !matches!(v, Value::Object(_) | Value::Bool(_)) {
                    problems.push(format!(
                        "$.properties.{k}: {} found, object expected",
                        json_type(v)
                    ));
                }
            }
        }
        Some(v) => problems.push(format!(
            "$.properties: {} found, object expected",
            json_type(v)
        )),
    }
    match obj.get("required") {
        None => {}
        Some(Value::Array(names)) => {
            for (j, n) in names.iter().enumerate() {
                if !n.is_string() {
                    problems.push(format!(
                        "$.required[{j}]: {} found, string expected",
                        json_type(n)
                    ));
                }
            }
        }
        Some(v) => problems.push(format!(
            "$.required: {} found, array expected",
            json_type(v)
        )),
    }
    if problems.is_empty() {
        Ok(json.clone())
    } else {
        Err(BedrockError::validation(format!(
            "The json schema definition at {at} is invalid. Fix the following errors and try again: {}",
            problems.join(", ")
        )))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses a `toolUse` block (`at` is the block's path, e.g. `messages.1.content.0`).
pub fn parse_tool_use(block: &Value, at: &str) -> Result<ToolCall, BedrockError> {
    let b = block.as_object().ok_or_else(|| {
        BedrockError::validation(format!(
            "Invalid type for {at}.toolUse: expected an object."
        ))
    })?;
    let id = tool_use_id(b, &format!("{at}.toolUse"))?;
    let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_tool_name(name) {
        return Err(constraint_error(&[format!(
            "Value '{name}' at '{at}.toolUse.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
        )]));
    }
    let input = match b.get("input") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => {
            return Err(BedrockError::validation(format!(
                "The input field of the toolUse block at {at} must be a JSON object."
            )))
        }
    };
    Ok(ToolCall {
        id,
        name: name.to_string(),
        input,
    })
}

fn tool_use_id(b: &Map<String, Value>, at: &str) -> Result<String, BedrockError> {
    let id = b
        .get("toolUseId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c));
    if ok {
        Ok(id.to_string())
    } else {
        Err(constraint_error(&[format!(
            "Value '{id}' at '{at}.toolUseId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.:-]+"
        )]))
    }
}

/// Parses a `toolResult` block: `text` and `json` content, `status`.
pub fn parse_tool_result(block: &Value, at: &str) -> Result<ToolResult, BedrockError> {
    let b = block.as_object().ok_or_else(|| {
        BedrockError::validation(format!(
            "Invalid type for {at}.toolResult: expected an object."
        ))
    })?;
    let tool_use_id = tool_use_id(b, &format!("{at}.toolResult"))?;
    let is_error = match b.get("status").filter(|v| !v.is_null()) {
        None => false,
        Some(Value::String(s)) if s == "success" => false,
        Some(Value::String(s)) if s == "error" => true,
        Some(v) => {
            return Err(constraint_error(&[format!(
                "Value {v} at '{at}.toolResult.status' failed to satisfy constraint: Member must satisfy enum value set: [success, error]"
            )]))
        }
    };
    let items = b.get("content").and_then(Value::as_array).ok_or_else(|| {
        BedrockError::validation(format!(
            "The content field is required in the toolResult block at {at}."
        ))
    })?;
    if items.is_empty() && is_error {
        return Err(BedrockError::validation(format!(
            "The content field at {at}.toolResult cannot be empty when status value is error."
        )));
    }
    let mut parts = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        match single_member(item) {
            Some(("text", Value::String(t))) => parts.push(t.clone()),
            Some(("json", doc)) => parts.push(doc.to_string()),
            Some((kind, _)) => {
                return Err(BedrockError::validation(format!(
                    "This model doesn't support {kind} content in toolResult blocks ({at}.toolResult.content.{k}). Use text or json."
                )))
            }
            None => {
                return Err(BedrockError::validation(format!(
                    "The ToolResultContentBlock object at {at}.toolResult.content.{k} must set exactly one field."
                )))
            }
        }
    }
    Ok(ToolResult {
        tool_use_id,
        content: parts.join("\n"),
        is_error,
    })
}

/// Conversation-wide rules: tool blocks need a `toolConfig`; the turn after
/// an assistant's calls answers each of them, and only them.
pub fn check_history(turns: &[Turn], config: Option<&ToolConfig>) -> Result<(), BedrockError> {
    let uses_tools = turns
        .iter()
        .any(|t| !t.tool_calls.is_empty() || !t.tool_results.is_empty());
    if uses_tools && config.is_none() {
        return Err(BedrockError::validation(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ));
    }
    for (i, turn) in turns.iter().enumerate() {
        if turn.role != Role::User {
            continue;
        }
        let asked: Vec<&str> = match i.checked_sub(1) {
            Some(prev) => turns[prev]
                .tool_calls
                .iter()
                .map(|c| c.id.as_str())
                .collect(),
            None => Vec::new(),
        };
        if turn.tool_results.len() > asked.len() {
            return Err(BedrockError::validation(format!(
                "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn."
            )));
        }
        let answered: HashSet<&str> = turn
            .tool_results
            .iter()
            .map(|r| r.tool_use_id.as_str())
            .collect();
        if let Some(r) = turn
            .tool_results
            .iter()
            .find(|r| !asked.contains(&r.tool_use_id.as_str()))
        {
            return Err(BedrockError::validation(format!(
                "The toolResult block at messages.{i}.content refers to toolUseId {}, which matches no toolUse block of the previous turn.",
                r.tool_use_id
            )));
        }
        let missing: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(BedrockError::validation(format!(
                "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                missing.join(", ")
            )));
        }
    }
    if turns.last().is_some_and(|t| !t.tool_calls.is_empty()) {
        return Err(BedrockError::validation(format!(
            "The last message (messages.{}) is an assistant message with toolUse blocks: send their toolResult blocks in a user message.",
            turns.len() - 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Result<ToolConfig, BedrockError> {
        parse_tool_config(&v)
    }

    fn weather() -> Value {
        json!({"toolSpec": {"name": "get_weather", "description": "Weather.",
               "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}})
    }

    #[test]
    fn a_tool_config_parses() {
        let c = config(
            json!({"tools": [weather(), {"cachePoint": {"type": "default"}}],
                              "toolChoice": {"tool": {"name": "get_weather"}}}),
        )
        .expect("valid");
        assert_eq!(c.tools.len(), 1);
        assert_eq!(c.tools[0].description.as_deref(), Some("Weather."));
        assert_eq!(c.choice, ToolChoice::Tool("get_weather".into()));
        assert_eq!(
            config(json!({"tools": [weather()], "toolChoice": {"any": {}}}))
                .map(|c| c.choice)
                .ok(),
            Some(ToolChoice::Any)
        );
        assert_eq!(
            config(json!({"tools": [weather()]})).map(|c| c.choice).ok(),
            Some(ToolChoice::Auto)
        );
    }

    #[test]
    fn bad_tool_configs_get_bedrock_messages() {
        let spec = |name: &str, schema: Value| json!({"toolSpec": {"name": name, "inputSchema": {"json": schema}}});
        let obj = json!({"type": "object"});
        let cases = [
            (json!({"tools": []}), "1 validation error detected: Value at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1"),
            (json!({}), "'toolConfig.tools' failed to satisfy constraint: Member must not be null"),
            (json!({"tools": [spec("a b", obj.clone())]}), "Value 'a b' at 'toolConfig.tools.1.member.toolSpec.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"),
            (json!({"tools": [spec("", obj.clone()), spec("ok", obj.clone())]}), "2 validation errors detected"),
            (json!({"tools": [spec("a", obj.clone()), spec("a", obj.clone())]}), "more than one tool named a"),
            (json!({"tools": [spec("a", json!({"type": "string"}))]}), "The value at toolConfig.tools.0.toolSpec.inputSchema.json.type must be one of the following: object."),
            (json!({"tools": [spec("a", json!({"type": "object", "properties": null}))]}), "The json schema definition at toolConfig.tools.0.toolSpec.inputSchema is invalid. Fix the following errors and try again: $.properties: null found, object expected"),
            (json!({"tools": [spec("a", json!({"type": "object", "required": "x"}))]}), "$.required: string found, array expected"),
            (json!({"tools": [{"toolSpec": {"name": "a"}}]}), "'toolConfig.tools.1.member.toolSpec.inputSchema' failed to satisfy constraint: Member must not be null"),
            (json!({"tools": [spec("a", obj.clone())], "toolChoice": {"tool": {"name": "b"}}}), "The tool b named in toolConfig.toolChoice.tool.name isn't defined in toolConfig.tools"),
            (json!({"tools": [spec("a", obj.clone())], "toolChoice": {"auto": {}, "any": {}}}), "exactly one of auto, any or tool"),
            (json!({"tools": [{"systemTool": {"name": "web"}}]}), "doesn't support the systemTool"),
        ];
        for (body, want) in cases {
            let err = config(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status(), 400);
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
    }

    #[test]
    fn tool_blocks_parse_and_validate() {
        let call = parse_tool_use(
            &json!({"toolUseId": "tooluse_1", "name": "f", "input": {"a": 1}}),
            "messages.1.content.0",
        )
        .expect("valid");
        assert_eq!(call.input, json!({"a": 1}));
        assert!(parse_tool_use(
            &json!({"toolUseId": "bad id", "name": "f", "input": {}}),
            "m"
        )
        .is_err());
        assert!(
            parse_tool_use(&json!({"toolUseId": "x", "name": "f", "input": [1]}), "m").is_err()
        );
        let r = parse_tool_result(
            &json!({"toolUseId": "tooluse_1", "content": [{"text": "21 C"}, {"json": {"sky": "clear"}}], "status": "error"}),
            "m",
        )
        .expect("valid");
        assert_eq!(r.content, "21 C\n{\"sky\":\"clear\"}");
        assert!(r.is_error);
        let empty_error = parse_tool_result(
            &json!({"toolUseId": "t", "content": [], "status": "error"}),
            "messages.2.content.0",
        );
        assert!(empty_error.is_err_and(|e| e
            .message
            .contains("cannot be empty when status value is error")));
        assert!(parse_tool_result(
            &json!({"toolUseId": "t", "content": [], "status": "done"}),
            "m"
        )
        .is_err());
        assert!(
            parse_tool_result(&json!({"toolUseId": "t", "content": [{"image": {}}]}), "m").is_err()
        );
    }

    fn assistant_calls(ids: &[&str]) -> Turn {
        Turn {
            role: Role::Assistant,
            text: String::new(),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall {
                    id: id.to_string(),
                    name: "f".into(),
                    input: json!({}),
                })
                .collect(),
            tool_results: Vec::new(),
        }
    }

    fn user_results(ids: &[&str]) -> Turn {
        Turn {
            role: Role::User,
            text: String::new(),
            tool_calls: Vec::new(),
            tool_results: ids
                .iter()
                .map(|id| ToolResult {
                    tool_use_id: id.to_string(),
                    content: "ok".into(),
                    is_error: false,
                })
                .collect(),
        }
    }

    #[test]
    fn results_must_answer_the_previous_calls() {
        let c = config(json!({"tools": [weather()]})).expect("valid");
        let q = Turn::text(Role::User, "q");
        let ok = [
            q.clone(),
            assistant_calls(&["a", "b"]),
            user_results(&["b", "a"]),
        ];
        check_history(&ok, Some(&c)).expect("valid");
        let msg = |turns: &[Turn], config: Option<&ToolConfig>| {
            check_history(turns, config).expect_err("invalid").message
        };
        assert!(msg(&ok, None).contains("The toolConfig field must be defined"));
        assert!(msg(&[q.clone(), assistant_calls(&["a"]), user_results(&["a", "b"])], Some(&c))
            .contains("The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks of previous turn."));
        assert!(msg(
            &[
                q.clone(),
                assistant_calls(&["a", "b"]),
                user_results(&["a"])
            ],
            Some(&c)
        )
        .contains("Expected toolResult blocks at messages.2.content for the following Ids: b"));
        assert!(msg(
            &[q.clone(), assistant_calls(&["a"]), user_results(&["z"])],
            Some(&c)
        )
        .contains("toolUseId z"));
        assert!(msg(&[q.clone(), assistant_calls(&["a"])], Some(&c)).contains("messages.1"));
        assert!(msg(&[user_results(&["a"])], Some(&c)).contains("exceeds"));
    }
}
