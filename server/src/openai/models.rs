//! `GET /v1/models` and `GET /v1/models/{id}`: the served model under its id
//! and each alias.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::error::OpenAiError;
use super::generate::unix_now;
use crate::served_model::ServedModel;

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

/// Every id the model answers to, primary id first.
pub fn list(model: &ServedModel) -> Value {
    let data: Vec<Value> = std::iter::once(&model.id)
        .chain(&model.aliases)
        .map(|id| entry(id))
        .collect();
    json!({"object": "list", "data": data})
}

/// The model `id`, if it names the served model.
pub fn get(model: &ServedModel, id: &str) -> Result<Value, OpenAiError> {
    if model.answers_to(id) {
        Ok(entry(id))
    } else {
        Err(OpenAiError::model_not_found(id))
    }
}
