//! Converse / ConverseStream request bodies (reference/bedrock-api.md 5.1) into
//! an [`Invocation`], with Bedrock's own validation messages (3.4).

use serde_json::{Map, Value};

use super::converse_tools::{check_history, parse_tool_config, parse_tool_result, parse_tool_use};
use crate::bedrock::BedrockError;
use crate::prompt::{Generation, Invocation, Prompt, Role, Turn};

/// Parses a Converse body (also CountTokens' `converse` input).
pub fn parse_converse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    for (key, what) in [
        (
            "guardrailConfig",
            "Guardrails are not supported by this endpoint.",
        ),
        (
            "promptVariables",
            "Prompt variables are only valid with a prompt resource.",
        ),
        (
            "outputConfig",
            "Structured output is not supported by this endpoint.",
        ),
    ] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(BedrockError::validation(what));
        }
    }
    let turns = parse_messages(body.get("messages"))?;
    let system = parse_system(body.get("system"))?;
    let mut generation = parse_inference_config(body.get("inferenceConfig"))?;
    apply_additional_fields(body.get("additionalModelRequestFields"), &mut generation)?;
    let tools = match body.get("toolConfig").filter(|v| !v.is_null()) {
        Some(config) => Some(parse_tool_config(config)?),
        None => None,
    };
    check_history(&turns, tools.as_ref())?;
    Ok(Invocation {
        prompt: Prompt::Chat {
            system,
            turns,
            tools,
        },
        generation,
    })
}

fn invalid_type(field: &str, expected: &str) -> BedrockError {
    BedrockError::validation(format!("Invalid type for {field}: expected {expected}."))
}

fn parse_messages(messages: Option<&Value>) -> Result<Vec<Turn>, BedrockError> {
    let Some(messages) = messages.filter(|v| !v.is_null()) else {
        return Err(BedrockError::validation(
            "The messages field is required. Add at least one message and try again.",
        ));
    };
    let list = messages
        .as_array()
        .ok_or_else(|| invalid_type("messages", "a list"))?;
    if list.is_empty() {
        return Err(BedrockError::validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let mut turns = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| invalid_type(&format!("messages.{i}"), "an object"))?;
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(BedrockError::validation(format!(
                    "Value '{other}' at 'messages.{i}.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]"
                )))
            }
            None => {
                return Err(BedrockError::validation(format!(
                    "The role field is required in messages.{i}."
                )))
            }
        };
        if i == 0 && role != Role::User {
            return Err(BedrockError::validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if turns.last().is_some_and(|t: &Turn| t.role == role) {
            return Err(BedrockError::validation(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        turns.push(content(m.get("content"), role, &format!("messages.{i}"))?);
    }
    Ok(turns)
}

/// A message's blocks: text joined, tool calls (assistant) and results (user);
/// other block kinds are refused.
fn content(content: Option<&Value>, role: Role, at: &str) -> Result<Turn, BedrockError> {
    let blocks = content
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_type(&format!("{at}.content"), "a list"))?;
    if blocks.is_empty() {
        return Err(BedrockError::validation(format!(
            "The content field in the Message object at {at} is empty. Add a ContentBlock object to the content field and try again."
        )));
    }
    let mut parts = Vec::new();
    let mut turn = Turn::text(role, String::new());
    for (j, block) in blocks.iter().enumerate() {
        let block = block.as_object().filter(|b| b.len() == 1).ok_or_else(|| {
            BedrockError::validation(format!(
                "The ContentBlock object at {at}.content.{j} must set exactly one field."
            ))
        })?;
        match block.iter().next() {
            Some((k, Value::String(text))) if k == "text" => {
                if text.trim().is_empty() {
                    return Err(BedrockError::validation(format!(
                        "The text field in the ContentBlock object at {at}.content.{j} is blank. Add text to the text field, and try again."
                    )));
                }
                parts.push(text.as_str());
            }
            Some((k, _)) if k == "text" => {
                return Err(invalid_type(&format!("{at}.content.{j}.text"), "a string"))
            }
            // A prompt-cache marker changes nothing here: the prefix cache is automatic.
            Some((k, _)) if k == "cachePoint" => {}
            Some((k, v)) if k == "toolUse" && role == Role::Assistant => {
                turn.tool_calls
                    .push(parse_tool_use(v, &format!("{at}.content.{j}"))?);
            }
            Some((k, v)) if k == "toolResult" && role == Role::User => {
                turn.tool_results
                    .push(parse_tool_result(v, &format!("{at}.content.{j}"))?);
            }
            Some((k, _)) if k == "toolUse" || k == "toolResult" => {
                let (kind, owner) = if k == "toolUse" {
                    ("toolUse", "assistant")
                } else {
                    ("toolResult", "user")
                };
                return Err(BedrockError::validation(format!(
                    "The {kind} block at {at}.content.{j} is only allowed in {owner} messages."
                )));
            }
            Some((k, _)) => {
                return Err(BedrockError::validation(format!(
                    "This model doesn't support the {k} content block at {at}.content.{j}. Remove it and try again."
                )))
            }
            None => {}
        }
    }
    turn.text = parts.join("\n");
    Ok(turn)
}

fn parse_system(system: Option<&Value>) -> Result<Option<String>, BedrockError> {
    let Some(system) = system.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let blocks = system
        .as_array()
        .ok_or_else(|| invalid_type("system", "a list"))?;
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.as_object().and_then(|b| b.iter().next()) {
            Some((k, Value::String(text))) if k == "text" => {
                if text.trim().is_empty() {
                    return Err(BedrockError::validation(format!(
                        "The text field in the SystemContentBlock object at system.{i} is blank. Add text to the text field, and try again."
                    )));
                }
                parts.push(text.as_str());
            }
            Some((k, _)) if k == "cachePoint" => {}
            _ => {
                return Err(BedrockError::validation(format!(
                    "The SystemContentBlock object at system.{i} is not supported: only text is."
                )))
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("\n")))
}

fn parse_inference_config(config: Option<&Value>) -> Result<Generation, BedrockError> {
    let mut g = Generation::default();
    let Some(config) = config.filter(|v| !v.is_null()) else {
        return Ok(g);
    };
    let config = config
        .as_object()
        .ok_or_else(|| invalid_type("inferenceConfig", "an object"))?;
    if let Some(v) = config.get("maxTokens").filter(|v| !v.is_null()) {
        let n = v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
            range_error("inferenceConfig.maxTokens", v, "greater than or equal to 1")
        })?;
        g.max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    g.temperature = unit_interval(config, "temperature")?;
    g.top_p = unit_interval(config, "topP")?;
    if let Some(v) = config.get("stopSequences").filter(|v| !v.is_null()) {
        let list = v
            .as_array()
            .ok_or_else(|| invalid_type("inferenceConfig.stopSequences", "a list"))?;
        if list.len() > 2500 {
            return Err(BedrockError::validation(
                "inferenceConfig.stopSequences holds more than 2500 items.",
            ));
        }
        for (i, s) in list.iter().enumerate() {
            match s.as_str() {
                Some(s) if !s.is_empty() => g.stop_sequences.push(s.to_string()),
                _ => {
                    return Err(BedrockError::validation(format!(
                        "inferenceConfig.stopSequences.{i} must be a non-empty string."
                    )))
                }
            }
        }
    }
    Ok(g)
}

fn unit_interval(config: &Map<String, Value>, key: &str) -> Result<Option<f32>, BedrockError> {
    let Some(v) = config.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x as f32)),
        _ => Err(range_error(
            &format!("inferenceConfig.{key}"),
            v,
            "less than or equal to 1 and greater than or equal to 0",
        )),
    }
}

fn range_error(at: &str, v: &Value, constraint: &str) -> BedrockError {
    BedrockError::validation(format!(
        "1 validation error detected: Value '{v}' at '{at}' failed to satisfy constraint: Member must be {constraint}"
    ))
}

/// `additionalModelRequestFields`: the model-native extras this server knows.
fn apply_additional_fields(fields: Option<&Value>, g: &mut Generation) -> Result<(), BedrockError> {
    let Some(fields) = fields.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let fields = fields
        .as_object()
        .ok_or_else(|| invalid_type("additionalModelRequestFields", "an object"))?;
    for (key, value) in fields {
        let conflicts = match key.as_str() {
            "max_tokens" | "max_gen_len" => Some("maxTokens"),
            "temperature" => Some("temperature"),
            "top_p" => Some("topP"),
            "stop_sequences" | "stop" => Some("stopSequences"),
            _ => None,
        };
        if let Some(existing) = conflicts {
            return Err(BedrockError::validation(format!(
                "The additional field {key} conflicts with the existing field {existing}. Remove {key} and try again."
            )));
        }
        let x = &mut g.extra;
        match key.as_str() {
            "top_k" | "topK" => g.top_k = Some(extra_int(key, value)? as usize),
            "seed" => x.seed = Some(extra_int(key, value)?),
            "min_p" => x.min_p = Some(extra_number(key, value, 0.0, 1.0)?),
            "repetition_penalty" => {
                x.repetition_penalty = Some(extra_number(key, value, 0.01, 10.0)?)
            }
            "presence_penalty" => x.presence_penalty = Some(extra_number(key, value, -2.0, 2.0)?),
            "frequency_penalty" => {
                x.frequency_penalty = Some(extra_number(key, value, -2.0, 2.0)?)
            }
            _ => {
                return Err(BedrockError::validation(format!(
                    "The model returned the following errors: Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
                )))
            }
        }
    }
    Ok(())
}

/// A non-negative integer extra field (`top_k`, `seed`).
fn extra_int(key: &str, value: &Value) -> Result<u64, BedrockError> {
    value.as_u64().filter(|&v| v <= u64::from(u32::MAX)).ok_or_else(|| {
        BedrockError::validation(format!(
            "The model returned the following errors: Malformed input request: #/{key}: expected a non-negative integer, please reformat your input and try again."
        ))
    })
}

/// A number extra field within `lo..=hi`.
fn extra_number(key: &str, value: &Value, lo: f64, hi: f64) -> Result<f32, BedrockError> {
    match value.as_f64() {
        Some(v) if (lo..=hi).contains(&v) => Ok(v as f32),
        _ => Err(BedrockError::validation(format!(
            "The model returned the following errors: Malformed input request: #/{key}: expected a number from {lo} to {hi}, please reformat your input and try again."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn additional_fields_reach_the_sampler_settings() {
        let inv = parse(json!({
            "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
            "additionalModelRequestFields": {
                "top_k": 40, "min_p": 0.05, "seed": 7, "repetition_penalty": 1.1,
                "presence_penalty": 0.5, "frequency_penalty": -0.5
            }
        }))
        .map_err(|e| e.to_string());
        let g = inv.expect("parses").generation;
        assert_eq!(g.top_k, Some(40));
        assert_eq!(g.extra.min_p, Some(0.05));
        assert_eq!(g.extra.seed, Some(7));
        assert_eq!(g.extra.repetition_penalty, Some(1.1));
        assert_eq!(g.extra.presence_penalty, Some(0.5));
        assert_eq!(g.extra.frequency_penalty, Some(-0.5));
        for bad in [
            json!({"min_p": 2}),
            json!({"seed": -1}),
            json!({"top_k": "x"}),
            json!({"repetition_penalty": 0}),
            json!({"presence_penalty": 3}),
            json!({"typical_p": 0.9}),
        ] {
            let r = parse(json!({
                "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                "additionalModelRequestFields": bad
            }));
            assert!(r.is_err(), "{bad} accepted");
        }
    }

    fn parse(v: Value) -> Result<Invocation, BedrockError> {
        parse_converse(v.as_object().unwrap_or(&Map::new()))
    }

    #[test]
    fn a_full_request_parses() {
        let inv = parse(json!({
            "messages": [
                {"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]},
                {"role": "assistant", "content": [{"text": "Hello"}]},
                {"role": "user", "content": [{"text": "Bye"}, {"cachePoint": {"type": "default"}}]}
            ],
            "system": [{"text": "Be terse."}],
            "inferenceConfig": {"maxTokens": 7, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "additionalModelRequestFields": {"top_k": 40}
        }))
        .expect("valid");
        let Prompt::Chat { system, turns, .. } = inv.prompt else {
            panic!("chat expected");
        };
        assert_eq!(system.as_deref(), Some("Be terse."));
        assert_eq!(turns.len(), 3);
        assert_eq!(turns[0].text, "Hi\nthere");
        assert_eq!(inv.generation.max_tokens, Some(7));
        assert_eq!(inv.generation.top_k, Some(40));
        assert_eq!(inv.generation.stop_sequences, vec!["END".to_string()]);
    }

    #[test]
    fn tool_blocks_land_in_their_turns() {
        let inv = parse(json!({
            "messages": [
                {"role": "user", "content": [{"text": "Weather?"}]},
                {"role": "assistant", "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Oslo"}}}]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"c": 3}}]}},
                    {"text": "Thanks"}]}
            ],
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather",
                "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"any": {}}}
        }))
        .expect("valid");
        let Prompt::Chat { turns, tools, .. } = inv.prompt else {
            panic!("chat expected");
        };
        assert_eq!(tools.map(|t| t.choice), Some(crate::tools::ToolChoice::Any));
        assert_eq!(turns[1].text, "Checking.");
        assert_eq!(turns[1].tool_calls[0].input, json!({"city": "Oslo"}));
        assert_eq!(turns[2].text, "Thanks");
        assert_eq!(turns[2].tool_results[0].content, "{\"c\":3}");
    }

    #[test]
    fn conversation_rules_use_bedrock_messages() {
        let cases = [
            (json!({"messages": []}), "must start with a user message"),
            (
                json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
                "must start with a user message",
            ),
            (
                json!({"messages": [
                    {"role": "user", "content": [{"text": "a"}]},
                    {"role": "user", "content": [{"text": "b"}]}]}),
                "must alternate",
            ),
            (
                json!({"messages": [
                    {"role": "user", "content": [{"text": "a"}]},
                    {"role": "assistant", "content": [{"text": " "}]}]}),
                "at messages.1.content.0 is blank",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}],
                       "inferenceConfig": {"temperature": 5}}),
                "inferenceConfig.temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}],
                       "inferenceConfig": {"maxTokens": 5},
                       "additionalModelRequestFields": {"max_tokens": 5}}),
                "conflicts with the existing field maxTokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}],
                       "toolConfig": {"tools": []}}),
                "Member must have length greater than or equal to 1",
            ),
            (
                json!({"messages": [
                    {"role": "user", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]}],
                    "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]}}),
                "The toolUse block at messages.0.content.0 is only allowed in assistant messages.",
            ),
            (
                json!({"messages": [
                    {"role": "user", "content": [{"text": "q"}]},
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}]}]}),
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status(), 400);
            assert!(err.message.contains(expected), "{}: {}", body, err.message);
        }
    }
}
