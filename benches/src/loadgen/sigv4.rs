//! Signing requests with AWS Signature Version 4 (service `bedrock`), using
//! AWS's own `aws-sigv4` crate, as botocore would sign them.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

/// The SigV4 signing name of Bedrock Runtime (not `bedrock-runtime`).
pub const SERVICE: &str = "bedrock";

/// AWS credentials and the region to sign for.
#[derive(Clone)]
pub struct SigV4Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Region of the credential scope.
    pub region: String,
}

impl std::fmt::Debug for SigV4Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Signing failed (an unsignable header or URI).
#[derive(Debug, thiserror::Error)]
#[error("SigV4 signing failed: {0}")]
pub struct SignError(String);

/// The headers to add to a request so it carries a valid signature:
/// `x-amz-date`, `authorization` and, with a session token, `x-amz-security-token`.
/// `headers` are the request's headers (all of them are signed; include `host`).
pub fn signature_headers(
    creds: &SigV4Credentials,
    method: &str,
    uri: &str,
    headers: &[(String, String)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "factory-bench",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&creds.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        method,
        uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use factory_server::bedrock::sigv4::SigV4Verifier;
    use factory_server::bedrock::RequestParts;

    use super::*;

    /// factory's server-side verifier accepts what this signs, for a model id
    /// that needs percent-encoding in the path.
    #[test]
    fn the_server_verifier_accepts_the_signature() {
        let creds = SigV4Credentials {
            access_key_id: "AKIDBENCH".into(),
            secret_access_key: "bench/secret".into(),
            session_token: None,
            region: "eu-west-1".into(),
        };
        let path = "/model/meta.llama3-1-8b-instruct-v1%3A0/converse-stream";
        let headers = vec![
            ("host".to_string(), "127.0.0.1:9".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        let body = br#"{"messages":[]}"#;
        let now = SystemTime::now();
        let added = signature_headers(
            &creds,
            "POST",
            &format!("http://127.0.0.1:9{path}"),
            &headers,
            body,
            now,
        )
        .expect("signs");
        assert!(added.iter().any(|(n, _)| n == "x-amz-date"));
        let all: Vec<(String, String)> = headers.into_iter().chain(added).collect();
        let refs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let parts = RequestParts {
            method: "POST",
            raw_path: path,
            raw_query: "",
            headers: &refs,
            body,
        };
        let verifier = SigV4Verifier::new(HashMap::from([(
            "AKIDBENCH".to_string(),
            "bench/secret".to_string(),
        )]));
        let id = verifier.verify(&parts, now).expect("verifies");
        assert_eq!(id.region, "eu-west-1");
        // A changed body no longer verifies.
        let tampered = RequestParts {
            body: b"{}",
            ..parts
        };
        assert!(verifier.verify(&tampered, now).is_err());
    }
}
