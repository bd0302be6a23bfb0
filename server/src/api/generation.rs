//! Running an engine request for an API call: submitting (with engine refusals as
//! Bedrock errors) and collecting a whole completion.

use std::time::{Duration, Instant};

use factory_engine::{GenerateRequest, StopReason, SubmitError, TokenEvent, Usage};

use super::Call;
use crate::bedrock::{BedrockError, ErrorKind};
use crate::observability::{MeteredStream, RequestMetrics};
use crate::prompt::{Invocation, Prompt};
use crate::served_model::ServedModel;
use crate::tools::output::{Block, BlockCollector, Ending, ToolOutput};
use crate::tools::{pick_tool, Forced, IdStyle, ToolChoice};

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
    /// The text as content blocks: one text block, or text and tool calls.
    pub content: Vec<Block>,
    /// The model called tools: the APIs' stop reason is `tool_use`.
    pub tool_use: bool,
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
                    content: vec![Block::Text(text.clone())],
                    text,
                    reason,
                    usage,
                    latency_ms: millis_since(started),
                    tool_use: false,
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

/// An engine request ready to submit, and how to read its output.
#[derive(Debug)]
pub struct Prepared {
    /// The request.
    pub request: GenerateRequest,
    /// Splits the output into text and tool calls; `None` without tools.
    pub output: Option<ToolOutput>,
}

/// The engine request for `invocation`, with a tool-call reader when it
/// offers tools. `any` among several tools first runs a short generation
/// that lets the model write the tool's name (prefilled up to it), then
/// forces that tool; the name pass's tokens are not counted in the usage.
pub async fn prepare(
    call: &Call<'_>,
    invocation: &Invocation,
    ids: IdStyle,
    started: Instant,
) -> Result<Prepared, BedrockError> {
    let (model, default_max_tokens) = (call.model, call.default_max_tokens);
    let Some(config) = invocation.prompt.tools() else {
        return Ok(Prepared {
            request: model.generate_request(invocation, default_max_tokens)?,
            output: None,
        });
    };
    match config.forced() {
        Forced::No => Ok(Prepared {
            request: model.generate_request(invocation, default_max_tokens)?,
            output: config
                .offers_tools()
                .then(|| ToolOutput::new(config, ids, None)),
        }),
        Forced::Tool(name) => Ok(Prepared {
            request: model.generate_request(invocation, default_max_tokens)?,
            output: Some(ToolOutput::new(config, ids, Some(name))),
        }),
        Forced::Pick => {
            let name = pick_name(call, invocation, started).await?;
            let mut forced = invocation.clone();
            if let Prompt::Chat { tools: Some(t), .. } = &mut forced.prompt {
                t.choice = ToolChoice::Tool(name.clone());
            }
            Ok(Prepared {
                request: model.generate_request(&forced, default_max_tokens)?,
                output: Some(ToolOutput::new(config, ids, Some(&name))),
            })
        }
    }
}

/// Lets the model write a tool name after the prefilled opener and maps it
/// to an offered tool ([`pick_tool`]).
async fn pick_name(
    call: &Call<'_>,
    invocation: &Invocation,
    started: Instant,
) -> Result<String, BedrockError> {
    let model = call.model;
    let tools = invocation
        .prompt
        .tools()
        .map(|c| c.tools.as_slice())
        .unwrap_or_default();
    let longest = tools
        .iter()
        .map(|t| {
            model
                .tokenizer
                .encode(&t.name, false)
                .map_or(t.name.len(), |ids| ids.len())
        })
        .max()
        .unwrap_or(1);
    let mut req = model.generate_request(invocation, longest + 1)?;
    req.max_tokens = longest + 1;
    req.stop_strings = vec!["\"".to_string()];
    let named = complete(
        submit(model, call.metrics, req)?,
        started,
        call.request_timeout,
    )
    .await?;
    let tool = pick_tool(tools, &named.text).ok_or_else(|| {
        BedrockError::validation("The toolConfig.toolChoice.any field needs at least one tool.")
    })?;
    tracing::debug!(generated = %named.text, picked = %tool.name, "tool choice any");
    Ok(tool.name.clone())
}

/// Submits a prepared request and runs it to its end (or, with tools, until
/// the output is complete: generation stops as soon as a forced call closes),
/// failing with ModelTimeoutException past the request timeout.
pub async fn complete_prepared(
    call: &Call<'_>,
    prepared: Prepared,
    started: Instant,
) -> Result<Completion, BedrockError> {
    let prompt_tokens = prepared.request.prompt.len();
    let stream = submit(call.model, call.metrics, prepared.request)?;
    let timeout = call.request_timeout;
    let Some(output) = prepared.output else {
        return complete(stream, started, timeout).await;
    };
    let collect = collect_tools(stream, output, started, prompt_tokens);
    match tokio::time::timeout_at(deadline(started, timeout), collect).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("request aborted after the request timeout of {timeout:?}");
            Err(timeout_error(timeout))
        }
    }
}

async fn collect_tools(
    mut stream: MeteredStream,
    mut output: ToolOutput,
    started: Instant,
    prompt_tokens: usize,
) -> Result<Completion, BedrockError> {
    let mut blocks = BlockCollector::default();
    blocks.add(output.start());
    let mut text = String::new();
    let mut output_tokens = 0;
    let (reason, usage) = loop {
        match stream.next().await {
            Some(TokenEvent::Token { text: t, .. }) => {
                output_tokens += 1;
                text.push_str(&t);
                blocks.add(output.push(&t));
                if output.is_complete() {
                    let usage = Usage {
                        prompt_tokens,
                        output_tokens,
                        cached_prompt_tokens: 0,
                        ..Usage::default()
                    };
                    // Ends the rest of the generation; a finish, not an abort.
                    stream.stop_early(&StopReason::EndTurn, &usage);
                    break (StopReason::EndTurn, usage);
                }
            }
            Some(TokenEvent::Finished { reason, usage }) => {
                blocks.add(output.finish());
                break (reason, usage);
            }
            Some(TokenEvent::Error { message }) => return Err(model_error(&message)),
            None => {
                return Err(BedrockError::new(
                    ErrorKind::InternalServer,
                    "The engine stopped before the request finished.",
                ))
            }
        }
    };
    let tool_use = output.ending(reason.clone()) == Ending::ToolUse;
    Ok(Completion {
        text,
        reason,
        usage,
        latency_ms: millis_since(started),
        content: blocks.into_blocks(),
        tool_use,
    })
}
