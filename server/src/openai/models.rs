//! `GET /v1/models` and `GET /v1/models/{id}`: the served model under its id
//! and each alias.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use super::error::OpenAiError;
use super::generate::unix_now;
use crate::model_slot::ModelSlot;

/// `owned_by` of every model.
pub const OWNER: &str = "factory";

/// `created`: when this process first listed its models (stable afterwards).
fn created() -> u64 {
    static CREATED: OnceLock<u64> = OnceLock::new();
    *CREATED.get_or_init(unix_now)
}

fn entry(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": created(), "owned_by": OWNER})
}

/// Every id each configured model answers to, primary ids first.
pub fn list(models: &[Arc<ModelSlot>]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .flat_map(|m| std::iter::once(m.id()).chain(m.aliases().iter().map(String::as_str)))
        .map(entry)
        .collect();
    json!({"object": "list", "data": data})
}

/// The model `id`, if it names a configured model.
pub fn get(models: &[Arc<ModelSlot>], id: &str) -> Result<Value, OpenAiError> {
    if models.iter().any(|m| m.answers_to(id)) {
        Ok(entry(id))
    } else {
        Err(OpenAiError::model_not_found(id))
    }
}
