//! Why a request failed authentication, and the Bedrock error each reason becomes
//! (reference/bedrock-api.md 3.4, 8.2).

use super::error::{BedrockError, ErrorKind};

/// AWS's text for a signature mismatch; clients and operators recognise it.
const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";

/// An authentication failure; convert with `BedrockError::from` to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    MissingAuthorization,
    /// An `Authorization` header that cannot be parsed; the text says why.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),
    /// The SigV4 access key id is not configured.
    #[error("unknown access key id {0:?}")]
    UnknownAccessKey(String),
    /// The credential scope names another service than `bedrock`.
    #[error("credential scoped to service {0:?}, not bedrock")]
    WrongService(String),
    /// The credential scope names a region outside the configured allow-list.
    #[error("credential scoped to region {0:?}, which is not allowed")]
    RegionNotAllowed(String),
    /// Neither `X-Amz-Date` nor `Date` is present.
    #[error("no X-Amz-Date or Date header")]
    MissingDate,
    /// The request date cannot be parsed.
    #[error("unparseable request date {0:?}")]
    MalformedDate(String),
    /// The credential scope's date is not the request's date.
    #[error("credential scope date {scope_date} differs from request date {request_date}")]
    ScopeDateMismatch {
        /// `yyyymmdd` from the credential.
        scope_date: String,
        /// The request's `YYYYMMDDTHHMMSSZ`.
        request_date: String,
    },
    /// Signed more than 5 minutes before `now`.
    #[error("signature expired: signed at {signed}, now {now}")]
    SignatureExpired {
        /// Signing time, `YYYYMMDDTHHMMSSZ`.
        signed: String,
        /// Server time, `YYYYMMDDTHHMMSSZ`.
        now: String,
        /// `now` minus 5 minutes.
        limit: String,
    },
    /// Signed more than 5 minutes after `now`.
    #[error("signature not yet current: signed at {signed}, now {now}")]
    SignatureNotYetCurrent {
        /// Signing time, `YYYYMMDDTHHMMSSZ`.
        signed: String,
        /// Server time, `YYYYMMDDTHHMMSSZ`.
        now: String,
        /// `now` plus 5 minutes.
        limit: String,
    },
    /// `host` is not among the signed headers.
    #[error("host is not a signed header")]
    HostNotSigned,
    /// A header named in `SignedHeaders` is absent from the request.
    #[error("signed header {0:?} is missing")]
    MissingSignedHeader(String),
    /// `x-amz-content-sha256` is a digest but not the body's.
    #[error("x-amz-content-sha256 does not match the body")]
    ContentSha256Mismatch,
    /// The signature is not the one the secret produces for this request.
    #[error("signature mismatch")]
    SignatureMismatch {
        /// What the canonical request should have been, for the client's debugging.
        canonical_request: String,
        /// What the string to sign should have been.
        string_to_sign: String,
    },
    /// A bearer token that is no configured API key.
    #[error("unknown API key")]
    UnknownApiKey,
}

impl From<AuthError> for BedrockError {
    fn from(err: AuthError) -> Self {
        use ErrorKind::*;
        let (kind, message) = match err {
            AuthError::MissingAuthorization => {
                (MissingAuthenticationToken, "Missing Authentication Token".into())
            }
            AuthError::MalformedAuthorization(why) => (IncompleteSignature, why),
            AuthError::UnknownAccessKey(_) => (
                UnrecognizedClient,
                "The security token included in the request is invalid.".into(),
            ),
            AuthError::WrongService(_) => (
                InvalidSignature,
                "Credential should be scoped to correct service: 'bedrock'. ".into(),
            ),
            AuthError::RegionNotAllowed(region) => (
                InvalidSignature,
                format!("Credential should be scoped to a valid region, not '{region}'. "),
            ),
            AuthError::MissingDate => (
                IncompleteSignature,
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .into(),
            ),
            AuthError::MalformedDate(date) => (
                IncompleteSignature,
                format!("Date must be in ISO-8601 'basic format'. Got '{date}'."),
            ),
            AuthError::ScopeDateMismatch {
                scope_date,
                request_date,
            } => (
                InvalidSignature,
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of \
                     date from HTTP: '{scope_date}' != '{}', from '{request_date}'.",
                    request_date.get(..8).unwrap_or(&request_date)
                ),
            ),
            AuthError::SignatureExpired { signed, now, limit } => (
                InvalidSignature,
                format!("Signature expired: {signed} is now earlier than {limit} ({now} - 5 min.)"),
            ),
            AuthError::SignatureNotYetCurrent { signed, now, limit } => (
                InvalidSignature,
                format!(
                    "Signature not yet current: {signed} is still later than {limit} ({now} + 5 min.)"
                ),
            ),
            AuthError::HostNotSigned => (
                InvalidSignature,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ),
            AuthError::MissingSignedHeader(name) => (
                InvalidSignature,
                format!("{SIGNATURE_MISMATCH} The signed header '{name}' is not in the request."),
            ),
            AuthError::ContentSha256Mismatch => (
                Validation,
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ),
            AuthError::SignatureMismatch {
                canonical_request,
                string_to_sign,
            } => (
                InvalidSignature,
                // Bedrock appends both texts so clients can see where they differ.
                format!(
                    "{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have \
                     been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n\
                     '{string_to_sign}'\n"
                ),
            ),
            AuthError::UnknownApiKey => (
                AccessDenied,
                "Authentication failed: Please make sure your API Key is valid.".into(),
            ),
        };
        BedrockError::new(kind, message)
    }
}
