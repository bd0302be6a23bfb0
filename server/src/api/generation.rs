//! Running an engine request for an API call: submitting (with engine refusals as
//! Bedrock errors) and collecting a whole completion.

use std::time::{Duration, Instant};

use factory_engine::{GenerateRequest, StopReason, SubmitError, TokenEvent, Usage};

use crate::bedrock::{BedrockError, ErrorKind};
use crate::observability::{MeteredStream, RequestMetrics};
use crate::served_model::ServedModel;

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The generated text (stop strings excluded).
    pub text: String,
    /// Why it ended.
    pub reason: StopReason,
    /// Token counts.
    pub usage: Usage,
    /// Milliseconds from submission to the end.
    pub latency_ms: u64,
}

/// Submits `req` to the model's engine, refused with ThrottlingException when
/// the model already holds [`ServedModel::max_requests`] requests; its events
/// are measured as they are read.
pub fn submit(
    model: &ServedModel,
    metrics: &RequestMetrics,
    req: GenerateRequest,
) -> Result<MeteredStream, BedrockError> {
    let prompt_tokens = req.prompt.len();
    let stream = model
        .engine
        .submit_within(req, model.max_requests())
        .map_err(submit_error)?;
    Ok(metrics.track(stream, prompt_tokens))
}

/// The Bedrock error for an engine refusal: the caller's mistake, or 503 when the
/// engine is gone.
pub fn submit_error(err: SubmitError) -> BedrockError {
    match err {
        SubmitError::Closed => BedrockError::new(
            ErrorKind::ServiceUnavailable,
            "The model is not running. Try again later.",
        ),
        SubmitError::PromptTooLong { prompt, limit } => BedrockError::validation(format!(
            "Input is too long for requested model: the prompt has {prompt} tokens and the model's context is {limit}."
        )),
        SubmitError::Admit(e) => BedrockError::validation(format!(
            "Input is too long for requested model: {e}."
        )),
        SubmitError::Busy { .. } => BedrockError::new(
            ErrorKind::Throttling,
            "Too many requests, please wait before trying again.",
        ),
        other => BedrockError::validation(other.to_string()),
    }
}

/// The error for an engine failure during generation.
pub fn model_error(message: &str) -> BedrockError {
    BedrockError::new(
        ErrorKind::ModelError {
            original_status_code: Some(500),
            resource_name: None,
        },
        format!("The model failed while generating: {message}"),
    )
}

/// The ModelTimeoutException of a request that ran past `timeout`.
pub fn timeout_error(timeout: Duration) -> BedrockError {
    BedrockError::new(
        ErrorKind::ModelTimeout,
        format!(
            "Model has timed out in processing the request: it did not finish within {} seconds. Try a smaller maximum tokens value, or a streaming operation.",
            timeout.as_secs_f64()
        ),
    )
}

/// `timeout` after `started`; a timeout too large to represent never passes.
pub fn deadline(started: Instant, timeout: Duration) -> tokio::time::Instant {
    let start = tokio::time::Instant::from_std(started);
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Runs `stream` to its end, or fails with ModelTimeoutException once `timeout`
/// has passed since `started`; the stream is then dropped, which aborts the
/// request in the engine.
pub async fn complete(
    stream: MeteredStream,
    started: Instant,
    timeout: Duration,
) -> Result<Completion, BedrockError> {
    match tokio::time::timeout_at(deadline(started, timeout), collect(stream, started)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("request aborted after the request timeout of {timeout:?}");
            Err(timeout_error(timeout))
        }
    }
}

async fn collect(mut stream: MeteredStream, started: Instant) -> Result<Completion, BedrockError> {
    let mut text = String::new();
    while let Some(ev) = stream.next().await {
        match ev {
            TokenEvent::Token { text: t, .. } => text.push_str(&t),
            TokenEvent::Finished { reason, usage } => {
                return Ok(Completion {
                    text,
                    reason,
                    usage,
                    latency_ms: millis_since(started),
                })
            }
            TokenEvent::Error { message } => return Err(model_error(&message)),
        }
    }
    Err(BedrockError::new(
        ErrorKind::InternalServer,
        "The engine stopped before the request finished.",
    ))
}

/// Whole milliseconds elapsed since `t`.
pub fn millis_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
