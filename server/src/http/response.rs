//! Building responses: JSON, Bedrock errors and event streams, each with an
//! `x-amzn-RequestId`.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::body::{ChannelBody, ResponseBody};
use crate::bedrock::BedrockError;

/// The request-id header botocore copies into `ResponseMetadata.RequestId`.
pub const REQUEST_ID: &str = "x-amzn-requestid";
/// The header carrying a Bedrock error's code.
pub const ERROR_TYPE: &str = "x-amzn-errortype";
/// The media type of event streams.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const JSON: &str = "application/json";

/// A fresh random request id in UUID v4 text form.
pub fn new_request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A response with `status`, `content_type` and `body`.
pub fn bytes_response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    set_header(&mut resp, CONTENT_TYPE, content_type);
    resp
}

/// A 200 JSON response.
pub fn json_response(value: &serde_json::Value) -> Response<ResponseBody> {
    bytes_response(StatusCode::OK, JSON, value.to_string())
}

/// The HTTP form of a Bedrock error: status, `x-amzn-ErrorType`, `{"message"}`.
pub fn error_response(err: &BedrockError) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = bytes_response(status, JSON, err.body());
    set_header(
        &mut resp,
        HeaderName::from_static(ERROR_TYPE),
        &err.error_type(),
    );
    resp
}

/// A 200 event-stream response fed by `body`.
pub fn event_stream_response(body: ChannelBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body.boxed());
    set_header(&mut resp, CONTENT_TYPE, EVENT_STREAM);
    resp
}

/// Sets header `name`; values that are not valid header text are dropped.
pub fn set_header<B>(resp: &mut Response<B>, name: impl Into<HeaderName>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name.into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn errors_carry_status_type_and_message() {
        let resp = error_response(&BedrockError::validation("bad"));
        assert_eq!(resp.status(), 400);
        let t = resp.headers()[ERROR_TYPE].to_str().unwrap_or_default();
        assert!(t.starts_with("ValidationException:"), "{t}");
    }
}
