//! Control-plane ListFoundationModels and GetFoundationModel
//! (reference/bedrock-api.md 10), so clients can discover the served ids.

use serde_json::{json, Value};

use crate::bedrock::{BedrockError, ErrorKind};
use crate::served_model::ServedModel;

/// The provider name shown for `id` (Bedrock's, or `factory` for local ids).
fn provider_name(id: &str) -> &'static str {
    match id.split_once('.').map(|(p, _)| p) {
        Some("meta") => "Meta",
        Some("mistral") => "Mistral AI",
        Some("anthropic") => "Anthropic",
        Some("amazon") => "Amazon",
        _ => "factory",
    }
}

fn summary(id: &str, region: &str) -> Value {
    json!({
        "modelArn": format!("arn:aws:bedrock:{region}::foundation-model/{id}"),
        "modelId": id,
        "modelName": id,
        "providerName": provider_name(id),
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": true,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    })
}

/// Every id the model answers to, filtered by the `byProvider` / `byOutputModality`
/// query parameters (values already decoded).
pub fn list(model: &ServedModel, region: &str, query: &[(String, String)]) -> Value {
    let wanted = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let ids = std::iter::once(&model.id).chain(&model.aliases);
    let summaries: Vec<Value> = ids
        .filter(|id| {
            wanted("byProvider").is_none_or(|p| {
                provider_name(id).eq_ignore_ascii_case(p)
                    || id
                        .split('.')
                        .next()
                        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(p))
            })
        })
        .filter(|_| wanted("byOutputModality").is_none_or(|m| m == "TEXT"))
        .map(|id| summary(id, region))
        .collect();
    json!({ "modelSummaries": summaries })
}

/// The details of `requested`, or 404 when no served model answers to it.
pub fn get(model: &ServedModel, region: &str, requested: &str) -> Result<Value, BedrockError> {
    if !model.answers_to(requested) {
        return Err(BedrockError::new(
            ErrorKind::ResourceNotFound,
            format!("Could not resolve the foundation model from the provided model identifier {requested}."),
        ));
    }
    let base = crate::model_id::base_model_id(requested);
    Ok(json!({ "modelDetails": summary(base, region) }))
}
