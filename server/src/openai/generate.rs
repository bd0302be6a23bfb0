//! Running an OpenAI request on the engine: submission (engine refusals as
//! OpenAI errors), collecting a whole generation, and the pieces both
//! response shapes share (ids, `finish_reason`, `usage`).

use std::time::{SystemTime, UNIX_EPOCH};

use factory_engine::{StopReason, SubmitError, TokenEvent, TokenLogprobs, Usage};
use factory_models::tokenizer::Tokenizer;
use rand::distr::{Alphanumeric, SampleString as _};
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::logprobs::{token_info, TokenInfo};
use crate::observability::{MeteredStream, RequestMetrics};
use crate::served_model::ServedModel;

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (stop sequences excluded).
    pub text: String,
    /// Per-token logprobs, when asked for.
    pub tokens: Vec<TokenInfo>,
    /// OpenAI's `finish_reason`.
    pub finish_reason: &'static str,
    /// What the engine counted.
    pub usage: Usage,
}

/// OpenAI's `finish_reason` for an engine stop: `stop` for an end-of-turn token
/// or a stop sequence, `length` for the token limit or the context's end.
pub fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextLength => "length",
    }
}

/// The `usage` object: the engine's counts, prompt tokens served from the
/// prefix cache as `prompt_tokens_details.cached_tokens`.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    })
}

/// A fresh response id such as `chatcmpl-...`.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        Alphanumeric.sample_string(&mut rand::rng(), 29)
    )
}

/// Seconds since the Unix epoch (`created`).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The logprob entry of generated token `id`, if the request asked for
/// logprobs. Special tokens (the end-of-turn token) are content of no
/// message, so they are left out, as OpenAI does.
pub fn token_entry(
    tokenizer: &Tokenizer,
    id: u32,
    logprobs: Option<&TokenLogprobs>,
) -> Option<TokenInfo> {
    let lp = logprobs?;
    (!tokenizer.is_special(id)).then(|| token_info(tokenizer, id, lp))
}

/// Submits `req`; `prompt_param` names the field prompt errors point at.
pub fn submit(
    model: &ServedModel,
    metrics: &RequestMetrics,
    req: factory_engine::GenerateRequest,
    prompt_param: &str,
) -> Result<MeteredStream, OpenAiError> {
    let prompt_tokens = req.prompt.len();
    let stream = model
        .engine
        .submit_within(req, model.max_requests())
        .map_err(|e| submit_error(e, prompt_param))?;
    Ok(metrics.track(stream, prompt_tokens))
}

/// The OpenAI error for an engine refusal.
pub fn submit_error(err: SubmitError, prompt_param: &str) -> OpenAiError {
    match err {
        SubmitError::Busy { .. } => OpenAiError::rate_limited(
            "Too many requests for this model; please retry shortly.",
        ),
        SubmitError::Closed => {
            OpenAiError::unavailable("The model is not running. Try again later.")
        }
        SubmitError::PromptTooLong { prompt, limit } => OpenAiError::param(
            prompt_param,
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {limit} tokens. However, your prompt has {prompt} tokens. Please reduce the length of the {prompt_param}."
            ),
        ),
        SubmitError::Admit(e) => OpenAiError::param(
            prompt_param,
            "context_length_exceeded",
            format!("The request is too large for this server: {e}."),
        ),
        SubmitError::EmptyPrompt | SubmitError::TokenOutOfRange { .. } => {
            OpenAiError::invalid_value(prompt_param, format!("Invalid '{prompt_param}': {err}."))
        }
        SubmitError::ZeroMaxTokens => OpenAiError::invalid_value("max_tokens", err.to_string()),
        SubmitError::Stop(e) => OpenAiError::invalid_value("stop", format!("Invalid 'stop': {e}.")),
        SubmitError::TopLogprobs(_) => OpenAiError::invalid_value("top_logprobs", err.to_string()),
        SubmitError::Sampling(e) => OpenAiError::invalid(e.to_string()),
    }
}

/// Runs `stream` to its end.
pub async fn collect(
    mut stream: MeteredStream,
    tokenizer: &Tokenizer,
) -> Result<Generation, OpenAiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            TokenEvent::Token {
                id,
                text: t,
                logprobs,
            } => {
                text.push_str(&t);
                tokens.extend(token_entry(tokenizer, id, logprobs.as_ref()));
            }
            TokenEvent::Finished { reason, usage } => {
                return Ok(Generation {
                    text,
                    tokens,
                    finish_reason: finish_reason(&reason),
                    usage,
                })
            }
            TokenEvent::Error { message } => return Err(model_failed(&message)),
        }
    }
    Err(engine_stopped())
}

/// The error for an engine failure during generation.
pub fn model_failed(message: &str) -> OpenAiError {
    OpenAiError::server(format!("The model failed while generating: {message}"))
}

/// The error for an engine that went away mid-request.
pub fn engine_stopped() -> OpenAiError {
    OpenAiError::server("The engine stopped before the request finished.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_stop_and_length() {
        assert_eq!(finish_reason(&StopReason::EndTurn), "stop");
        assert_eq!(finish_reason(&StopReason::StopSequence("x".into())), "stop");
        assert_eq!(finish_reason(&StopReason::MaxTokens), "length");
        assert_eq!(finish_reason(&StopReason::ContextLength), "length");
    }

    #[test]
    fn usage_totals_and_cached_tokens() {
        let u = Usage {
            prompt_tokens: 7,
            output_tokens: 3,
            cached_prompt_tokens: 4,
            ..Usage::default()
        };
        assert_eq!(
            usage_json(&u),
            json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                   "prompt_tokens_details": {"cached_tokens": 4}})
        );
    }

    #[test]
    fn engine_refusals_are_400s_naming_the_field_or_503() {
        let e = submit_error(
            SubmitError::PromptTooLong {
                prompt: 9,
                limit: 8,
            },
            "messages",
        );
        assert_eq!((e.status, e.param.as_deref()), (400, Some("messages")));
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(submit_error(SubmitError::Closed, "prompt").status, 503);
        let e = submit_error(
            SubmitError::TokenOutOfRange { token: 9, vocab: 2 },
            "prompt",
        );
        assert_eq!(e.param.as_deref(), Some("prompt"));
    }

    #[test]
    fn ids_have_the_prefix_and_differ() {
        let a = new_id("chatcmpl");
        assert!(a.starts_with("chatcmpl-") && a.len() == 38);
        assert_ne!(a, new_id("chatcmpl"));
    }
}
