//! `/v1` authentication: `Authorization: Bearer <key>` against the same API
//! keys as Bedrock bearer tokens. SigV4 is never accepted here.

use http::HeaderMap;

use super::error::OpenAiError;
use crate::bedrock::bearer::bearer_token;
use crate::service::Auth;

/// Checks the request's bearer key; the key's name on success (`None` with
/// authentication off).
pub fn authenticate(auth: &Auth, headers: &HeaderMap) -> Result<Option<String>, OpenAiError> {
    let authenticator = match auth {
        Auth::Disabled => return Ok(None),
        Auth::Required(a) => a,
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            OpenAiError::unauthorized(
                None,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        })?;
    let token = bearer_token(value).ok_or_else(|| {
        OpenAiError::unauthorized(
            Some("invalid_api_key"),
            "The Authorization header must be 'Bearer YOUR_KEY' (SigV4 signatures are accepted only by the Bedrock routes).",
        )
    })?;
    authenticator
        .api_keys()
        .verify(token)
        .map(|name| Some(name.to_string()))
        .map_err(|_| {
            OpenAiError::unauthorized(
                Some("invalid_api_key"),
                "Incorrect API key provided. Use a key from the server's [auth] api_keys, FACTORY_API_KEY, or the generated credentials file.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::bearer::ApiKeys;
    use crate::bedrock::Authenticator;
    use std::collections::HashMap;

    fn auth() -> Auth {
        let mut keys = ApiKeys::new();
        keys.insert("ci", "sk-good");
        Auth::Required(Authenticator::<HashMap<String, String>>::new(None, keys))
    }

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(http::header::AUTHORIZATION, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn bearer_keys_pass_and_everything_else_is_401() {
        assert_eq!(
            authenticate(&auth(), &headers(Some("Bearer sk-good"))),
            Ok(Some("ci".into()))
        );
        for value in [
            None,
            Some("Bearer sk-bad"),
            Some("sk-good"),
            Some("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00"),
        ] {
            let e = authenticate(&auth(), &headers(value)).expect_err("refused");
            assert_eq!(e.status, 401, "{value:?}");
        }
        assert_eq!(authenticate(&Auth::Disabled, &headers(None)), Ok(None));
    }
}
