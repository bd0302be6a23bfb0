//! Converse and ConverseStream.

use std::time::Instant;

use http::Response;

use super::converse_output::{response, ConverseEncoder};
use super::converse_request::parse_converse;
use super::generation::{complete_prepared, prepare, submit};
use super::schema::parse_object;
use super::stream::{spawn_pump, Deadline};
use super::Call;
use crate::bedrock::BedrockError;
use crate::http::response::{event_stream_response, json_response};
use crate::http::{ChannelBody, Operation, ResponseBody};
use crate::tools::IdStyle;

/// Frames that may wait unsent before generation waits for the client.
pub const STREAM_BUFFER: usize = 64;

/// `POST /model/{id}/converse`.
pub async fn converse(call: Call<'_>) -> Result<Response<ResponseBody>, BedrockError> {
    let started = Instant::now();
    let invocation = parse_converse(&parse_object(call.body)?)?;
    let prepared = prepare(&call, &invocation, IdStyle::Converse, started).await?;
    let completion = complete_prepared(&call, prepared, started).await?;
    Ok(json_response(&response(&completion)))
}

/// `POST /model/{id}/converse-stream`. Errors before the first event are plain
/// HTTP errors; later ones end the stream with an exception frame.
pub async fn converse_stream(call: Call<'_>) -> Result<Response<ResponseBody>, BedrockError> {
    let started = Instant::now();
    let invocation = parse_converse(&parse_object(call.body)?)?;
    let prepared = prepare(&call, &invocation, IdStyle::Converse, started).await?;
    let prompt_tokens = prepared.request.prompt.len();
    let stream = submit(call.model, call.metrics, prepared.request)?
        .for_operation(Operation::ConverseStream);
    let encoder = ConverseEncoder::frames().with_tools(prepared.output, prompt_tokens);
    let (tx, body) = ChannelBody::channel(STREAM_BUFFER);
    let deadline = Deadline::converse_stream(started, call.request_timeout);
    spawn_pump(stream, encoder, tx, started, deadline);
    Ok(event_stream_response(body))
}
