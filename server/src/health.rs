//! `GET /ping` and `/health`: whether the server takes requests now, for load
//! balancers and orchestrators (unauthenticated).
//!
//! - 200 `{"status": "ok", "models": [...]}`: every configured model is ready.
//! - 200 `{"status": "degraded", ...}`: some models failed to load, the rest
//!   serve (the failures are in the server log).
//! - 503 ServiceUnavailableException while any model is still loading
//!   (`"status": "loading"`), after SIGTERM while draining (`"draining"`), or
//!   when no model could be loaded (`"failed"`).
//!
//! `models` lists `{"id", "status": "ready" | "loading" | "failed"}`; load errors
//! are left out (the caller is not authenticated).

use std::sync::Arc;

use http::{HeaderName, Response, StatusCode};
use serde_json::{json, Value};

use crate::bedrock::{BedrockError, ErrorKind};
use crate::http::response::{bytes_response, set_header, ERROR_TYPE};
use crate::http::ResponseBody;
use crate::model_slot::{ModelSlot, ModelState};

/// The server's state as `/ping` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Every model serves.
    Ok,
    /// Some models failed to load; the others serve.
    Degraded,
    /// A model is still loading.
    Loading,
    /// Shutting down: requests in flight finish, new ones are refused.
    Draining,
    /// No model could be loaded.
    Failed,
}

impl Health {
    /// The `status` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Loading => "loading",
            Health::Draining => "draining",
            Health::Failed => "failed",
        }
    }

    /// Whether the server takes requests (`/ping` answers 200).
    pub fn is_serving(self) -> bool {
        matches!(self, Health::Ok | Health::Degraded)
    }
}

/// The health of a server over `models`.
pub fn health(models: &[Arc<ModelSlot>], draining: bool) -> Health {
    if draining {
        return Health::Draining;
    }
    let (mut loading, mut ready, mut failed) = (0, 0, 0);
    for m in models {
        match m.state() {
            ModelState::Loading => loading += 1,
            ModelState::Ready(_) => ready += 1,
            ModelState::Failed(_) => failed += 1,
        }
    }
    match (loading, ready, failed) {
        (l, _, _) if l > 0 => Health::Loading,
        (_, 0, _) => Health::Failed,
        (_, _, 0) => Health::Ok,
        _ => Health::Degraded,
    }
}

/// The `/ping` response.
pub fn response(models: &[Arc<ModelSlot>], draining: bool) -> Response<ResponseBody> {
    let h = health(models, draining);
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            let status = match m.state() {
                ModelState::Loading => "loading",
                ModelState::Ready(_) => "ready",
                ModelState::Failed(_) => "failed",
            };
            json!({"id": m.id(), "status": status})
        })
        .collect();
    let mut body = json!({"status": h.as_str(), "models": list});
    if h.is_serving() {
        return bytes_response(StatusCode::OK, "application/json", body.to_string());
    }
    let err = unavailable(h, models);
    body["message"] = json!(err.message);
    let mut resp = bytes_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "application/json",
        body.to_string(),
    );
    set_header(
        &mut resp,
        HeaderName::from_static(ERROR_TYPE),
        &err.error_type(),
    );
    resp
}

/// The ServiceUnavailableException for a server that is not serving.
fn unavailable(h: Health, models: &[Arc<ModelSlot>]) -> BedrockError {
    let message = match h {
        Health::Loading => {
            let ids: Vec<&str> = models
                .iter()
                .filter(|m| matches!(m.state(), ModelState::Loading))
                .map(|m| m.id())
                .collect();
            format!("Loading models: {}. Try again shortly.", ids.join(", "))
        }
        Health::Draining => draining_error().message,
        _ => "No model could be loaded; see the server log.".to_string(),
    };
    BedrockError::new(ErrorKind::ServiceUnavailable, message)
}

/// The error for requests that arrive while the server drains.
pub fn draining_error() -> BedrockError {
    BedrockError::new(
        ErrorKind::ServiceUnavailable,
        "The server is shutting down and takes no new requests. Try again later.",
    )
}

/// The error for a request addressed to a model that is not ready.
pub fn model_unavailable(slot: &ModelSlot) -> Option<BedrockError> {
    let message = match slot.state() {
        ModelState::Ready(_) => return None,
        ModelState::Loading => format!("The model {} is loading. Try again shortly.", slot.id()),
        ModelState::Failed(why) => format!("The model {} failed to load: {why}", slot.id()),
    };
    Some(BedrockError::new(ErrorKind::ServiceUnavailable, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_models() {
        let loading = || Arc::new(ModelSlot::loading("a", vec![]));
        let failed = || {
            let s = ModelSlot::loading("b", vec![]);
            s.set_failed("no file");
            Arc::new(s)
        };
        assert_eq!(health(&[loading()], false), Health::Loading);
        assert_eq!(health(&[loading(), failed()], false), Health::Loading);
        assert_eq!(health(&[failed()], false), Health::Failed);
        assert_eq!(health(&[], false), Health::Failed);
        assert_eq!(health(&[loading()], true), Health::Draining);
        let resp = response(&[failed()], false);
        assert_eq!(resp.status(), 503);
        let e = model_unavailable(&failed()).expect("failed is unavailable");
        assert_eq!(e.status(), 503);
        assert!(e.message.contains("no file"), "{}", e.message);
    }
}
