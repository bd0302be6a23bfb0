//! Which operation a request is, from its method and RAW path: model ids arrive
//! percent-encoded and ARNs hold `%2F`, so the path is split before decoding.

use super::percent::percent_decode;
use crate::bedrock::BedrockError;

/// A Bedrock Runtime operation on one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /model/{id}/converse`
    Converse,
    /// `POST /model/{id}/converse-stream`
    ConverseStream,
    /// `POST /model/{id}/invoke`
    Invoke,
    /// `POST /model/{id}/invoke-with-response-stream`
    InvokeStream,
    /// `POST /model/{id}/count-tokens`
    CountTokens,
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A runtime operation on the (decoded) model id.
    Model {
        /// Which operation.
        operation: Operation,
        /// The model id, percent-decoded.
        model_id: String,
    },
    /// `GET /foundation-models`
    ListFoundationModels,
    /// `GET /foundation-models/{id}` (decoded).
    GetFoundationModel(String),
    /// `GET /ping` (or `/health`): readiness, unauthenticated.
    Ping,
}

/// Routes `method` + `raw_path`; unknown operations are Bedrock errors.
pub fn route(method: &str, raw_path: &str) -> Result<Route, BedrockError> {
    let segments: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let decode = |label: &str| {
        percent_decode(label)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BedrockError::validation("The provided model identifier is invalid."))
    };
    match (method, segments.as_slice()) {
        ("GET" | "HEAD", ["ping" | "health"]) => Ok(Route::Ping),
        ("GET", ["foundation-models"]) => Ok(Route::ListFoundationModels),
        ("GET", ["foundation-models", id]) => Ok(Route::GetFoundationModel(decode(id)?)),
        (_, ["model", id, op]) => {
            let operation = match *op {
                "converse" => Operation::Converse,
                "converse-stream" => Operation::ConverseStream,
                "invoke" => Operation::Invoke,
                "invoke-with-response-stream" => Operation::InvokeStream,
                "count-tokens" => Operation::CountTokens,
                other => return Err(unsupported(method, &format!("/model/{{modelId}}/{other}"))),
            };
            if method != "POST" {
                return Err(unsupported(method, raw_path));
            }
            Ok(Route::Model {
                operation,
                model_id: decode(id)?,
            })
        }
        _ => Err(unsupported(method, raw_path)),
    }
}

fn unsupported(method: &str, path: &str) -> BedrockError {
    // 400, not 404/501: the SDK retries 5xx, and an unknown path is the caller's mistake.
    BedrockError::validation(format!(
        "The operation {method} {path} is not supported by this endpoint."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(operation: Operation, id: &str) -> Route {
        Route::Model {
            operation,
            model_id: id.into(),
        }
    }

    #[test]
    fn routes_every_operation() {
        let cases = [
            ("converse", Operation::Converse),
            ("converse-stream", Operation::ConverseStream),
            ("invoke", Operation::Invoke),
            ("invoke-with-response-stream", Operation::InvokeStream),
            ("count-tokens", Operation::CountTokens),
        ];
        for (op, operation) in cases {
            let path = format!("/model/meta.llama3-8b-instruct-v1%3A0/{op}");
            assert_eq!(
                route("POST", &path),
                Ok(model(operation, "meta.llama3-8b-instruct-v1:0"))
            );
        }
        assert_eq!(route("GET", "/ping"), Ok(Route::Ping));
        assert_eq!(route("GET", "/health"), Ok(Route::Ping));
        assert_eq!(
            route("GET", "/foundation-models"),
            Ok(Route::ListFoundationModels)
        );
        assert_eq!(
            route("GET", "/foundation-models/a%3Ab"),
            Ok(Route::GetFoundationModel("a:b".into()))
        );
    }

    #[test]
    fn arn_slashes_stay_inside_the_label() {
        let path =
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x%3A0/invoke";
        assert_eq!(
            route("POST", path),
            Ok(model(
                Operation::Invoke,
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.x:0"
            ))
        );
    }

    #[test]
    fn unknown_operations_are_validation_errors() {
        for (method, path) in [
            ("POST", "/model/x/invoke-with-bidirectional-stream"),
            ("GET", "/model/x/invoke"),
            ("POST", "/async-invoke"),
            ("POST", "/model/x/y/invoke"),
            ("POST", "/model/%zz/invoke"),
        ] {
            let err = route(method, path).expect_err(path);
            assert_eq!(err.status(), 400, "{path}");
        }
    }
}
