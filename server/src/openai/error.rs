//! OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with
//! the HTTP status its clients map to exception classes.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::http::response::{bytes_response, set_header};
use crate::http::ResponseBody;

/// An error answered in OpenAI's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct OpenAiError {
    /// HTTP status.
    pub status: u16,
    /// `error.type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.param`: the request field at fault, if one is.
    pub param: Option<String>,
    /// `error.code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
}

impl OpenAiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 400 about request field `param`, with `code`.
    pub fn param(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            code: Some(code),
            ..Self::invalid(message)
        }
    }

    /// A field of the wrong JSON type.
    pub fn invalid_type(param: &str, expected: &str, got: &Value) -> Self {
        Self::param(
            param,
            "invalid_type",
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                json_type(got)
            ),
        )
    }

    /// A field whose value is out of range or not allowed.
    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::param(param, "invalid_value", message)
    }

    /// A required field that is absent.
    pub fn missing(param: &str) -> Self {
        Self::param(
            param,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
    }

    /// 404 for a model this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: 404,
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::invalid(format!(
                "The model `{model}` does not exist or you do not have access to it."
            ))
        }
    }

    /// 404 for a path or method this server does not answer.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        Self {
            status: 404,
            ..Self::invalid(format!("Invalid URL ({method} {path})"))
        }
    }

    /// 401 with OpenAI's `code` for the case (`invalid_api_key`, or none when
    /// no key was sent).
    pub fn unauthorized(code: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: 401,
            code,
            ..Self::invalid(message)
        }
    }

    /// 429: the server is at its limit of requests in flight.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self {
            status: 429,
            kind: "requests",
            message: message.into(),
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 500: a failure on the server's side.
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 503: the model is not running.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            code: Some("service_unavailable"),
            ..Self::server(message)
        }
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The HTTP response: status and JSON body (plus `retry-after` on 429,
    /// which the official clients honour).
    pub fn response(&self) -> Response<ResponseBody> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = bytes_response(status, "application/json", self.body().to_string());
        if self.status == 429 {
            set_header(&mut resp, http::header::RETRY_AFTER, "1");
        }
        resp
    }
}

/// How OpenAI's messages name a JSON value's type.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_all_four_members() {
        let e = OpenAiError::invalid_type("max_tokens", "an integer", &json!("x"));
        assert_eq!(
            e.body(),
            json!({"error": {
                "message": "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "invalid_type",
            }})
        );
        let e = OpenAiError::unknown_url("GET", "/v1/nope");
        assert_eq!(e.status, 404);
        assert_eq!(e.body()["error"]["param"], Value::Null);
        assert_eq!(e.body()["error"]["code"], Value::Null);
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let resp = OpenAiError::rate_limited("busy").response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
    }
}
