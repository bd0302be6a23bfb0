//! Control-plane ListFoundationModels and GetFoundationModel
//! (reference/bedrock-api.md 10), so clients can discover the served ids.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::bedrock::{BedrockError, ErrorKind};
use crate::model_slot::ModelSlot;

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

/// Every id the models answer to (loading ones included), filtered by the
/// `byProvider` / `byOutputModality` query parameters (values already decoded).
pub fn list(models: &[Arc<ModelSlot>], region: &str, query: &[(String, String)]) -> Value {
    let wanted = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let ids = models
        .iter()
        .flat_map(|m| std::iter::once(m.id()).chain(m.aliases().iter().map(String::as_str)));
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
pub fn get(
    models: &[Arc<ModelSlot>],
    region: &str,
    requested: &str,
) -> Result<Value, BedrockError> {
    if !models.iter().any(|m| m.answers_to(requested)) {
        return Err(BedrockError::new(
            ErrorKind::ResourceNotFound,
            format!("Could not resolve the foundation model from the provided model identifier {requested}."),
        ));
    }
    let base = crate::model_id::base_model_id(requested);
    Ok(json!({ "modelDetails": summary(base, region) }))
}
