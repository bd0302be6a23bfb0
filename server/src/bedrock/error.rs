//! Bedrock errors as clients see them: HTTP status, `x-amzn-ErrorType`, JSON body.
//!
//! botocore picks the exception class from the text of `x-amzn-ErrorType` before the
//! first `:` and the message from the body's `message` (reference/bedrock-api.md 3.3).

use serde_json::{json, Map, Value};

/// Namespace suffix Bedrock appends to its own modelled error codes.
const BEDROCK_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";
/// Namespace suffix of the errors raised by AWS's request front end (authentication).
const CORAL_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";

/// Which Bedrock error this is; decides status, error type and extra body members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the input fails the operation's constraints (also: unknown model id).
    Validation,
    /// 403: the caller may not use this resource.
    AccessDenied,
    /// 404: the resource does not exist (e.g. an end-of-life model).
    ResourceNotFound,
    /// 408: generation took longer than the model's time limit.
    ModelTimeout,
    /// 424: the model failed while processing the request.
    ModelError {
        /// The model's own status code, 100..=599.
        original_status_code: Option<u16>,
        /// The model resource that failed.
        resource_name: Option<String>,
    },
    /// 424: the model failed while streaming (sent only inside event streams).
    ModelStreamError {
        /// The model's own status code, 100..=599.
        original_status_code: Option<u16>,
        /// The model's own error message.
        original_message: Option<String>,
    },
    /// 429: too many requests; clients back off and retry.
    Throttling,
    /// 429: the model is not ready yet; SDKs retry it.
    ModelNotReady,
    /// 400: the request exceeds a service quota.
    ServiceQuotaExceeded,
    /// 400: the request conflicts with the resource's state.
    Conflict,
    /// 500: an internal error.
    InternalServer,
    /// 503: the service cannot take requests now.
    ServiceUnavailable,
    /// 403: the access key (or API key) is not known.
    UnrecognizedClient,
    /// 403: the signature does not match, or is expired or mis-scoped.
    InvalidSignature,
    /// 400: the `Authorization` header is malformed or incomplete.
    IncompleteSignature,
    /// 403: the request carries no authentication at all.
    MissingAuthenticationToken,
}

impl ErrorKind {
    /// The bare error code, e.g. `ValidationException`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::AccessDenied => "AccessDeniedException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ModelTimeout => "ModelTimeoutException",
            Self::ModelError { .. } => "ModelErrorException",
            Self::ModelStreamError { .. } => "ModelStreamErrorException",
            Self::Throttling => "ThrottlingException",
            Self::ModelNotReady => "ModelNotReadyException",
            Self::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            Self::Conflict => "ConflictException",
            Self::InternalServer => "InternalServerException",
            Self::ServiceUnavailable => "ServiceUnavailableException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
        }
    }

    /// The HTTP status Bedrock answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Validation
            | Self::ServiceQuotaExceeded
            | Self::Conflict
            | Self::IncompleteSignature => 400,
            Self::AccessDenied
            | Self::UnrecognizedClient
            | Self::InvalidSignature
            | Self::MissingAuthenticationToken => 403,
            Self::ResourceNotFound => 404,
            Self::ModelTimeout => 408,
            Self::ModelError { .. } | Self::ModelStreamError { .. } => 424,
            Self::Throttling | Self::ModelNotReady => 429,
            Self::InternalServer => 500,
            Self::ServiceUnavailable => 503,
        }
    }

    /// Whether AWS's request front end, not Bedrock itself, raises this error.
    fn is_front_end(&self) -> bool {
        matches!(
            self,
            Self::UnrecognizedClient
                | Self::InvalidSignature
                | Self::IncompleteSignature
                | Self::MissingAuthenticationToken
        )
    }

    /// The `:exception-type` of this error inside an event stream: the lowerCamelCase
    /// union member name, or `None` if neither stream union models it.
    pub fn stream_exception_type(&self) -> Option<&'static str> {
        match self {
            Self::ModelStreamError { .. } => Some("modelStreamErrorException"),
            Self::InternalServer => Some("internalServerException"),
            Self::Validation => Some("validationException"),
            Self::Throttling => Some("throttlingException"),
            Self::ModelTimeout => Some("modelTimeoutException"),
            Self::ServiceUnavailable => Some("serviceUnavailableException"),
            _ => None,
        }
    }
}

/// An error answered to a Bedrock client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct BedrockError {
    /// Which error.
    pub kind: ErrorKind,
    /// Human-readable text, sent as the body's `message`.
    pub message: String,
}

impl BedrockError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A 400 `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The `x-amzn-ErrorType` header value, code plus namespace as Bedrock sends it.
    pub fn error_type(&self) -> String {
        let namespace = if self.kind.is_front_end() {
            CORAL_NAMESPACE
        } else {
            BEDROCK_NAMESPACE
        };
        format!("{}:{namespace}", self.kind.code())
    }

    /// The JSON body: `{"message": ...}` plus the members modelled for this kind.
    pub fn body(&self) -> String {
        self.body_value().to_string()
    }

    /// The body as a JSON value, also the payload of event-stream exception frames.
    pub fn body_value(&self) -> Value {
        let mut body = Map::new();
        body.insert("message".into(), json!(self.message));
        match &self.kind {
            ErrorKind::ModelError {
                original_status_code,
                resource_name,
            } => {
                if let Some(code) = original_status_code {
                    body.insert("originalStatusCode".into(), json!(code));
                }
                if let Some(name) = resource_name {
                    body.insert("resourceName".into(), json!(name));
                }
            }
            ErrorKind::ModelStreamError {
                original_status_code,
                original_message,
            } => {
                if let Some(code) = original_status_code {
                    body.insert("originalStatusCode".into(), json!(code));
                }
                if let Some(message) = original_message {
                    body.insert("originalMessage".into(), json!(message));
                }
            }
            _ => {}
        }
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// botocore's code normalisation (parsers.py `_inject_error_code`): text before
    /// the first `:`, then after the last `#`.
    fn botocore_code(error_type: &str) -> &str {
        let head = error_type.split(':').next().unwrap_or_default();
        head.rsplit('#').next().unwrap_or_default()
    }

    fn all_kinds() -> Vec<ErrorKind> {
        vec![
            ErrorKind::Validation,
            ErrorKind::AccessDenied,
            ErrorKind::ResourceNotFound,
            ErrorKind::ModelTimeout,
            ErrorKind::ModelError {
                original_status_code: Some(500),
                resource_name: Some("m".into()),
            },
            ErrorKind::ModelStreamError {
                original_status_code: Some(500),
                original_message: Some("x".into()),
            },
            ErrorKind::Throttling,
            ErrorKind::ModelNotReady,
            ErrorKind::ServiceQuotaExceeded,
            ErrorKind::Conflict,
            ErrorKind::InternalServer,
            ErrorKind::ServiceUnavailable,
            ErrorKind::UnrecognizedClient,
            ErrorKind::InvalidSignature,
            ErrorKind::IncompleteSignature,
            ErrorKind::MissingAuthenticationToken,
        ]
    }

    #[test]
    fn status_codes_match_the_model() {
        let expected = [
            400, 403, 404, 408, 424, 424, 429, 429, 400, 400, 500, 503, 403, 403, 400, 403,
        ];
        for (kind, status) in all_kinds().into_iter().zip(expected) {
            assert_eq!(kind.status(), status, "{}", kind.code());
        }
    }

    #[test]
    fn error_type_header_is_exactly_what_bedrock_sends() {
        let err = BedrockError::validation("x");
        assert_eq!(
            err.error_type(),
            "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        let err = BedrockError::new(ErrorKind::InvalidSignature, "x");
        assert_eq!(
            err.error_type(),
            "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"
        );
    }

    #[test]
    fn botocore_recovers_code_and_message_for_every_kind() {
        for kind in all_kinds() {
            let err = BedrockError::new(kind.clone(), "it's \"broken\"\n");
            assert_eq!(botocore_code(&err.error_type()), kind.code());
            assert!(err.status() >= 301, "botocore treats < 301 as success");
            let body: Value = serde_json::from_str(&err.body()).expect("body is JSON");
            assert_eq!(body["message"], "it's \"broken\"\n");
        }
    }

    #[test]
    fn body_is_message_only_for_plain_kinds() {
        let err = BedrockError::validation("The provided model identifier is invalid.");
        assert_eq!(
            err.body(),
            r#"{"message":"The provided model identifier is invalid."}"#
        );
    }

    #[test]
    fn body_carries_modelled_extra_members() {
        let err = BedrockError::new(
            ErrorKind::ModelStreamError {
                original_status_code: Some(500),
                original_message: Some("x".into()),
            },
            "boom",
        );
        // Byte-identical to the payload of golden event-stream vector 3.
        assert_eq!(
            err.body(),
            r#"{"message":"boom","originalStatusCode":500,"originalMessage":"x"}"#
        );
        let err = BedrockError::new(
            ErrorKind::ModelError {
                original_status_code: Some(503),
                resource_name: Some("llama".into()),
            },
            "failed",
        );
        assert_eq!(
            err.body(),
            r#"{"message":"failed","originalStatusCode":503,"resourceName":"llama"}"#
        );
        let err = BedrockError::new(
            ErrorKind::ModelError {
                original_status_code: None,
                resource_name: None,
            },
            "failed",
        );
        assert_eq!(err.body(), r#"{"message":"failed"}"#);
    }

    #[test]
    fn stream_exception_types_are_lower_camel_union_members() {
        assert_eq!(
            ErrorKind::Throttling.stream_exception_type(),
            Some("throttlingException")
        );
        assert_eq!(ErrorKind::AccessDenied.stream_exception_type(), None);
        for kind in all_kinds() {
            if let Some(t) = kind.stream_exception_type() {
                let mut upper = t.to_string();
                upper[..1].make_ascii_uppercase();
                assert_eq!(upper, kind.code());
            }
        }
    }

    #[test]
    fn display_names_code_and_message() {
        let err = BedrockError::new(ErrorKind::Throttling, "slow down");
        assert_eq!(err.to_string(), "ThrottlingException: slow down");
    }
}
