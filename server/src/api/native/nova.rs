//! Amazon Nova ("messages-v1") InvokeModel bodies (reference/bedrock-api.md 6.5):
//! Converse-shaped, so they are normalised and parsed as Converse.

use serde_json::{json, Map, Value};

use crate::api::converse_output::{completion_stop_reason, content_json, usage_json};
use crate::api::converse_request::parse_converse;
use crate::api::generation::Completion;
use crate::bedrock::BedrockError;
use crate::prompt::Invocation;

/// Parses a Nova body; `inferenceConfig` takes camelCase or snake_case names.
pub fn parse(body: &Map<String, Value>) -> Result<Invocation, BedrockError> {
    let mut r = crate::api::schema::ObjectReader::new(body, "#");
    r.only(&[
        "schemaVersion",
        "system",
        "messages",
        "inferenceConfig",
        "toolConfig",
    ]);
    r.get("messages", true);
    r.finish()?;
    if let Some(v) = body.get("schemaVersion").filter(|v| !v.is_null()) {
        if v.as_str() != Some("messages-v1") {
            return Err(BedrockError::validation(format!(
                "Invalid schemaVersion {v}: expected \"messages-v1\"."
            )));
        }
    }
    let mut converse = Map::new();
    for key in ["system", "messages", "toolConfig"] {
        if let Some(v) = body.get(key) {
            converse.insert(key.into(), v.clone());
        }
    }
    if let Some(config) = body.get("inferenceConfig").and_then(Value::as_object) {
        let mut camel = Map::new();
        let mut extra = Map::new();
        for (key, value) in config {
            let name = match key.as_str() {
                "max_new_tokens" | "maxTokens" => "maxTokens",
                "top_p" | "topP" => "topP",
                "stop_sequences" | "stopSequences" => "stopSequences",
                "temperature" => "temperature",
                "top_k" | "topK" => {
                    extra.insert("top_k".into(), value.clone());
                    continue;
                }
                other => {
                    return Err(BedrockError::validation(format!(
                        "Malformed input request: #/inferenceConfig: extraneous key [{other}] is not permitted, please reformat your input and try again."
                    )))
                }
            };
            camel.insert(name.into(), value.clone());
        }
        converse.insert("inferenceConfig".into(), Value::Object(camel));
        converse.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    parse_converse(&converse)
}

/// The InvokeModel response body.
pub fn response(c: &Completion) -> Value {
    json!({
        "output": {"message": {"role": "assistant", "content": content_json(&c.content)}},
        "stopReason": completion_stop_reason(c),
        "usage": usage_json(&c.usage),
    })
}
