//! InvokeModel and InvokeModelWithResponseStream with native bodies.

use std::time::Instant;

use http::{HeaderName, Response};

use super::converse::STREAM_BUFFER;
use super::generation::{complete_prepared, prepare, submit};
use super::native;
use super::schema::parse_object;
use super::stream::{spawn_pump, Deadline};
use super::Call;
use crate::bedrock::BedrockError;
use crate::http::response::{event_stream_response, json_response, set_header};
use crate::http::{ChannelBody, Operation, ResponseBody};
use crate::model_id::Family;
use crate::prompt::Invocation;
use crate::tools::IdStyle;

/// Parses the native body for the family the requested id selects.
fn parse(call: &Call<'_>) -> Result<Invocation, BedrockError> {
    if let Some(ct) = call.headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(BedrockError::validation(format!(
                "The content type {ct} is not supported: specify application/json."
            )));
        }
    }
    let family = call.model.family_for(call.requested_id);
    native::parse(family, &parse_object(call.body)?)
}

/// The tool-call ids of a family's responses.
fn id_style(family: Family) -> IdStyle {
    match family {
        Family::Anthropic => IdStyle::Anthropic,
        _ => IdStyle::Converse,
    }
}

/// `POST /model/{id}/invoke`.
pub async fn invoke(call: Call<'_>) -> Result<Response<ResponseBody>, BedrockError> {
    let started = Instant::now();
    let invocation = parse(&call)?;
    let family = call.model.family_for(call.requested_id);
    let prepared = prepare(&call, &invocation, id_style(family), started).await?;
    let completion = complete_prepared(&call, prepared, started).await?;
    let mut resp = json_response(&native::response(family, &completion, call.requested_id));
    let counts = [
        (
            "x-amzn-bedrock-input-token-count",
            completion.usage.prompt_tokens as u64,
        ),
        (
            "x-amzn-bedrock-output-token-count",
            completion.usage.output_tokens as u64,
        ),
        ("x-amzn-bedrock-invocation-latency", completion.latency_ms),
    ];
    for (name, value) in counts {
        set_header(&mut resp, HeaderName::from_static(name), &value.to_string());
    }
    Ok(resp)
}

/// `POST /model/{id}/invoke-with-response-stream`.
pub async fn invoke_stream(call: Call<'_>) -> Result<Response<ResponseBody>, BedrockError> {
    let started = Instant::now();
    let invocation = parse(&call)?;
    let family = call.model.family_for(call.requested_id);
    let prepared = prepare(&call, &invocation, id_style(family), started).await?;
    let prompt_tokens = prepared.request.prompt.len();
    let stream =
        submit(call.model, call.metrics, prepared.request)?.for_operation(Operation::InvokeStream);
    let (tx, body) = ChannelBody::channel(STREAM_BUFFER);
    spawn_pump(
        stream,
        native::encoder(family, call.requested_id, prompt_tokens, prepared.output),
        tx,
        started,
        Deadline::invoke_stream(started, call.request_timeout),
    );
    let mut resp = event_stream_response(body);
    set_header(
        &mut resp,
        HeaderName::from_static("x-amzn-bedrock-content-type"),
        "application/json",
    );
    Ok(resp)
}
