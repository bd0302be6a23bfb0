//! The frames Bedrock sends (reference/bedrock-api.md 4.3, 4.4).
//!
//! Header order follows real Bedrock and the golden vectors, so encodings are
//! byte-for-byte reproducible.

use base64::Engine as _;

use super::{encode, EncodeError, Header, Message};
use crate::bedrock::error::BedrockError;

const JSON: &str = "application/json";

/// An InvokeModelWithResponseStream `chunk` event: payload `{"bytes":"<base64>"}`
/// wrapping one native model chunk (JSON bytes).
pub fn chunk_event(model_chunk: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(model_chunk);
    // Base64 needs no JSON escaping, so the payload can be assembled directly.
    let payload = format!(r#"{{"bytes":"{encoded}"}}"#);
    json_event("chunk", payload.into_bytes())
}

/// A ConverseStream event such as `messageStart` or `contentBlockDelta`; the payload
/// is the event structure's JSON members (not wrapped in the event name).
pub fn json_event(
    event_type: &str,
    payload_json: impl Into<Vec<u8>>,
) -> Result<Vec<u8>, EncodeError> {
    encode(&Message {
        headers: vec![
            Header::string(":event-type", event_type),
            Header::string(":content-type", JSON),
            Header::string(":message-type", "event"),
        ],
        payload: payload_json.into(),
    })
}

/// A modelled exception frame, e.g. `modelStreamErrorException`, with the error
/// structure's JSON members as payload. The HTTP response ends after it.
pub fn exception_frame(
    exception_type: &str,
    payload_json: impl Into<Vec<u8>>,
) -> Result<Vec<u8>, EncodeError> {
    encode(&Message {
        headers: vec![
            Header::string(":exception-type", exception_type),
            Header::string(":content-type", JSON),
            Header::string(":message-type", "exception"),
        ],
        payload: payload_json.into(),
    })
}

/// The frame reporting `err` mid-stream: a modelled exception frame when the stream
/// unions model its kind, else an unmodelled `:message-type error` frame.
pub fn error_frame(err: &BedrockError) -> Result<Vec<u8>, EncodeError> {
    match err.kind.stream_exception_type() {
        Some(exception_type) => exception_frame(exception_type, err.body()),
        None => encode(&Message {
            headers: vec![
                Header::string(":error-code", err.kind.code()),
                Header::string(
                    ":error-message",
                    truncate(&err.message, usize::from(u16::MAX)),
                ),
                Header::string(":message-type", "error"),
            ],
            payload: Vec::new(),
        }),
    }
}

/// The longest prefix of `s` within `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
