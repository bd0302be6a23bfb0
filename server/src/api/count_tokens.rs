//! CountTokens: the prompt's token count, computed exactly as generation would.

use base64::Engine as _;
use http::Response;
use serde_json::{json, Value};

use super::converse_request::parse_converse;
use super::native;
use super::schema::parse_object;
use super::Call;
use crate::bedrock::BedrockError;
use crate::http::response::json_response;
use crate::http::ResponseBody;

/// `POST /model/{id}/count-tokens` with `{"input": {"invokeModel": {"body"}} | {"converse": {...}}}`.
pub fn count_tokens(call: Call<'_>) -> Result<Response<ResponseBody>, BedrockError> {
    let body = parse_object(call.body)?;
    let input = body
        .get("input")
        .and_then(Value::as_object)
        .filter(|i| i.len() == 1)
        .ok_or_else(|| {
            BedrockError::validation(
                "The input field must set exactly one of invokeModel or converse.",
            )
        })?;
    let invocation = if let Some(converse) = input.get("converse") {
        let converse = converse.as_object().ok_or_else(|| {
            BedrockError::validation("Invalid type for input.converse: expected an object.")
        })?;
        parse_converse(converse)?
    } else if let Some(invoke) = input.get("invokeModel") {
        let encoded = invoke.get("body").and_then(Value::as_str).ok_or_else(|| {
            BedrockError::validation("The input.invokeModel.body field is required.")
        })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| BedrockError::validation("input.invokeModel.body is not valid base64."))?;
        let family = call.model.family_for(call.requested_id);
        native::parse(family, &parse_object(&raw)?)?
    } else {
        return Err(BedrockError::validation(
            "The input field must set exactly one of invokeModel or converse.",
        ));
    };
    let tokens = call.model.encode(&invocation.prompt)?.len();
    Ok(json_response(&json!({ "inputTokens": tokens })))
}
