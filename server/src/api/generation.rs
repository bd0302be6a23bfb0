//! Running an engine request for an API call: submitting (with engine refusals as
//! Bedrock errors) and collecting a whole completion.

use std::time::Instant;

use factory_engine::{GenerateRequest, RequestStream, StopReason, SubmitError, TokenEvent, Usage};

use crate::bedrock::{BedrockError, ErrorKind};
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

/// Submits `req` to the model's engine.
pub fn submit(model: &ServedModel, req: GenerateRequest) -> Result<RequestStream, BedrockError> {
    model.engine.submit(req).map_err(submit_error)
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
    mut stream: RequestStream,
    started: Instant,
) -> Result<Completion, BedrockError> {
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
    model: &ServedModel,
    invocation: &Invocation,
    default_max_tokens: usize,
    ids: IdStyle,
) -> Result<Prepared, BedrockError> {
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
            let name = pick_name(model, invocation).await?;
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
async fn pick_name(model: &ServedModel, invocation: &Invocation) -> Result<String, BedrockError> {
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
    let named = complete(submit(model, req)?, Instant::now()).await?;
    let tool = pick_tool(tools, &named.text).ok_or_else(|| {
        BedrockError::validation("The toolConfig.toolChoice.any field needs at least one tool.")
    })?;
    tracing::debug!(generated = %named.text, picked = %tool.name, "tool choice any");
    Ok(tool.name.clone())
}

/// Submits a prepared request and runs it to its end (or, with tools, until
/// the output is complete: generation stops as soon as a forced call closes).
pub async fn complete_prepared(
    model: &ServedModel,
    prepared: Prepared,
    started: Instant,
) -> Result<Completion, BedrockError> {
    let prompt_tokens = prepared.request.prompt.len();
    let mut stream = submit(model, prepared.request)?;
    let Some(mut output) = prepared.output else {
        return complete(stream, started).await;
    };
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
                    // Dropping the stream aborts the rest of the generation.
                    drop(stream);
                    let usage = Usage {
                        prompt_tokens,
                        output_tokens,
                        cached_prompt_tokens: 0,
                    };
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
