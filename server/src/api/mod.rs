//! The Bedrock operations, one module each, over a shared [`Call`].

pub mod converse;
pub mod converse_output;
pub mod converse_request;
pub mod converse_tools;
pub mod count_tokens;
pub mod foundation_models;
pub mod generation;
pub mod invoke;
pub mod native;
pub mod schema;
pub mod stream;

use http::{HeaderMap, Response};

use crate::bedrock::BedrockError;
use crate::http::{Operation, ResponseBody};
use crate::observability::RequestMetrics;
use crate::served_model::ServedModel;

/// Everything an operation needs about one authenticated request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The model the id resolved to.
    pub model: &'a ServedModel,
    /// The id as the client sent it (decoded): it picks the native family.
    pub requested_id: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The whole request body.
    pub body: &'a [u8],
    /// Tokens to generate when the request names no limit.
    pub default_max_tokens: usize,
    /// How long the request may take before it is aborted (ModelTimeoutException).
    pub request_timeout: std::time::Duration,
    /// Where the model's requests are measured.
    pub metrics: &'a RequestMetrics,
}

/// Runs `operation`.
pub async fn run(
    operation: Operation,
    call: Call<'_>,
) -> Result<Response<ResponseBody>, BedrockError> {
    match operation {
        Operation::Converse => converse::converse(call).await,
        Operation::ConverseStream => converse::converse_stream(call).await,
        Operation::Invoke => invoke::invoke(call).await,
        Operation::InvokeStream => invoke::invoke_stream(call).await,
        Operation::CountTokens => count_tokens::count_tokens(call),
    }
}
