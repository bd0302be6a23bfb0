//! Running an engine request for an API call: submitting (with engine refusals as
//! Bedrock errors) and collecting a whole completion.

use std::time::Instant;

use factory_engine::{GenerateRequest, StopReason, SubmitError, TokenEvent, Usage};

use crate::bedrock::{BedrockError, ErrorKind};
use crate::observability::MeteredStream;
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

/// Submits `req` to the model's engine; its events are measured as they are read.
pub fn submit(model: &ServedModel, req: GenerateRequest) -> Result<MeteredStream, BedrockError> {
    let prompt_tokens = req.prompt.len();
    let stream = model.engine.submit(req).map_err(submit_error)?;
    Ok(model.metrics.track(stream, prompt_tokens))
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

/// Runs `stream` to its end.
pub async fn complete(
    mut stream: MeteredStream,
    started: Instant,
) -> Result<Completion, BedrockError> {
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
