//! Request authentication: picks SigV4 or bearer by the `Authorization` scheme.

use std::time::SystemTime;

use super::auth_error::AuthError;
use super::bearer::{bearer_token, ApiKeys};
use super::request::RequestParts;
use super::sigv4::{parse_authorization, CredentialStore, SigV4Identity, SigV4Verifier, ALGORITHM};

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A SigV4 signature by this access key.
    AccessKey(SigV4Identity),
    /// A bearer token matching the API key with this name.
    ApiKey(String),
}

/// Both schemes botocore may use for Bedrock; either can be left unconfigured.
#[derive(Debug, Clone)]
pub struct Authenticator<C> {
    sigv4: Option<SigV4Verifier<C>>,
    api_keys: ApiKeys,
}

impl<C: CredentialStore> Authenticator<C> {
    /// An authenticator for SigV4 (if `sigv4` is given) and the bearer `api_keys`.
    pub fn new(sigv4: Option<SigV4Verifier<C>>, api_keys: ApiKeys) -> Self {
        Self { sigv4, api_keys }
    }

    /// The bearer API keys (what `/v1` OpenAI requests authenticate with).
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// Authenticates `request` as of `now`.
    pub fn authenticate(
        &self,
        request: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let value = request
            .header("authorization")
            .ok_or(AuthError::MissingAuthorization)?;
        if let Some(token) = bearer_token(value) {
            return self
                .api_keys
                .verify(token)
                .map(|name| Principal::ApiKey(name.to_string()));
        }
        if !value.starts_with(ALGORITHM) {
            return Err(AuthError::MalformedAuthorization(format!(
                "Authorization header must use '{ALGORITHM}' or 'Bearer'."
            )));
        }
        let auth = parse_authorization(value).map_err(AuthError::MalformedAuthorization)?;
        match &self.sigv4 {
            Some(verifier) => verifier
                .verify_parsed(&auth, request, now)
                .map(Principal::AccessKey),
            // With no access keys configured, every access key is unknown.
            None => Err(AuthError::UnknownAccessKey(auth.access_key_id.to_string())),
        }
    }
}
