//! The OpenAI-compatible API, served beside Bedrock on the same port under
//! `/v1`: chat completions, completions (both streaming as server-sent
//! events), and model listing. Authentication is `Authorization: Bearer` with
//! the same API keys as Bedrock bearer tokens; every error is in OpenAI's
//! `{"error": {...}}` shape.

pub mod auth;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod logprobs;
pub mod models;
pub mod params;
pub mod sse;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Body;

use crate::http::percent::percent_decode;
use crate::http::response::{json_response, new_request_id, set_header};
use crate::http::ResponseBody;
use crate::in_flight::InFlight;
use std::sync::Arc;

use crate::model_slot::{ModelSlot, ModelState};
use crate::observability::{Observability, RequestMetrics};
use crate::served_model::ServedModel;
use crate::service::Auth;
use error::OpenAiError;

/// The header OpenAI's clients read the request id from.
pub const REQUEST_ID: &str = "x-request-id";

/// What the `/v1` routes need from the service.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The configured models (some may still be loading).
    pub models: &'a [Arc<ModelSlot>],
    /// Where requests are measured.
    pub obs: &'a Observability,
    /// Generation requests in flight across all models.
    pub in_flight: &'a InFlight,
    /// How requests authenticate.
    pub auth: &'a Auth,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Tokens generated when a request sets no limit.
    pub default_max_tokens: usize,
    /// Generation requests in flight beyond which new ones get 429.
    pub max_in_flight_requests: usize,
    /// Whether the server is draining (SIGTERM): new generations get 503.
    pub draining: bool,
}

impl<'a> Context<'a> {
    /// Checks that `model` is served and takes a place for one more
    /// generation; the metrics returned hold that place for the request.
    pub fn admit(&self, model: &str) -> Result<(&'a ServedModel, RequestMetrics), OpenAiError> {
        let slot = self
            .models
            .iter()
            .find(|m| m.answers_to(model))
            .ok_or_else(|| OpenAiError::model_not_found(model))?;
        if self.draining {
            return Err(OpenAiError::unavailable(
                "The server is shutting down and accepts no new requests.",
            ));
        }
        let served = match slot.state() {
            ModelState::Ready(m) => m,
            ModelState::Loading => {
                return Err(OpenAiError::unavailable(format!(
                    "The model {model} is loading. Try again shortly."
                )))
            }
            ModelState::Failed(_) => {
                return Err(OpenAiError::unavailable(format!(
                    "The model {model} failed to load."
                )))
            }
        };
        let permit = self
            .in_flight
            .try_acquire(self.max_in_flight_requests)
            .ok_or_else(|| {
                OpenAiError::rate_limited(
                    "Too many requests in flight on this server; please retry shortly.",
                )
            })?;
        Ok((served, self.obs.request_metrics(&served.id).holding(permit)))
    }
}

/// Whether `path` (raw) belongs to the OpenAI API.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// A `/v1` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    ListModels,
    GetModel(String),
}

fn route(method: &str, raw_path: &str) -> Result<Endpoint, OpenAiError> {
    let rest = raw_path.strip_prefix("/v1/").unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["chat", "completions"]) => Ok(Endpoint::ChatCompletions),
        ("POST", ["completions"]) => Ok(Endpoint::Completions),
        ("GET", ["models"] | ["models", ""]) => Ok(Endpoint::ListModels),
        // Ids like `org/name` arrive with their slash as is.
        ("GET", ["models", id @ ..]) => percent_decode(&id.join("/"))
            .filter(|s| !s.is_empty())
            .map(Endpoint::GetModel)
            .ok_or_else(|| OpenAiError::unknown_url(method, raw_path)),
        _ => Err(OpenAiError::unknown_url(method, raw_path)),
    }
}

/// Answers one `/v1` request; every failure is an OpenAI error response.
pub async fn handle<B>(ctx: Context<'_>, req: Request<B>) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request_id = new_request_id();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut resp = match dispatch(ctx, req).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::info!("{method} {path}: {err}");
            err.response()
        }
    };
    tracing::debug!("{method} {path} -> {}", resp.status());
    set_header(&mut resp, HeaderName::from_static(REQUEST_ID), &request_id);
    resp
}

async fn dispatch<B>(
    ctx: Context<'_>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, OpenAiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    match auth::authenticate(ctx.auth, &parts.headers)? {
        Some(key) => tracing::debug!("{} {} by API key {key}", parts.method, parts.uri.path()),
        None => tracing::warn!(
            "authentication is off (--no-auth): {} {} served without credentials",
            parts.method,
            parts.uri.path()
        ),
    }
    match route(parts.method.as_str(), parts.uri.path())? {
        Endpoint::ListModels => Ok(json_response(&models::list(ctx.models))),
        Endpoint::GetModel(id) => Ok(json_response(&models::get(ctx.models, &id)?)),
        Endpoint::ChatCompletions => {
            let body = read_body(body, ctx.max_body_bytes).await?;
            chat::create(&ctx, &body).await
        }
        Endpoint::Completions => {
            let body = read_body(body, ctx.max_body_bytes).await?;
            completions::create(&ctx, &body).await
        }
    }
}

/// Reads the whole body; more than `limit` bytes is 413.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, OpenAiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(OpenAiError {
            status: 413,
            ..OpenAiError::invalid(format!(
                "The request body exceeds the limit of {limit} bytes."
            ))
        }),
        Err(e) => Err(OpenAiError::invalid(format!(
            "The request body could not be read: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(route("POST", "/v1/completions"), Ok(Endpoint::Completions));
        assert_eq!(route("GET", "/v1/models"), Ok(Endpoint::ListModels));
        assert_eq!(
            route("GET", "/v1/models/meta.llama3-1-8b-instruct-v1%3A0"),
            Ok(Endpoint::GetModel("meta.llama3-1-8b-instruct-v1:0".into()))
        );
        assert_eq!(
            route("GET", "/v1/models/org/name"),
            Ok(Endpoint::GetModel("org/name".into()))
        );
        for (m, p) in [
            ("GET", "/v1/chat/completions"),
            ("POST", "/v1/models"),
            ("POST", "/v1/embeddings"),
            ("GET", "/v1"),
            ("GET", "/v1/models/%zz"),
        ] {
            let e = route(m, p).expect_err(p);
            assert_eq!(e.status, 404, "{m} {p}");
            assert!(e.message.contains(p), "{}", e.message);
        }
        assert!(is_openai_path("/v1/models") && is_openai_path("/v1"));
        assert!(!is_openai_path("/v10/models") && !is_openai_path("/model/x/invoke"));
    }
}
