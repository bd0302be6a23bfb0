//! Server-side AWS Signature Version 4 verification (reference/bedrock-api.md 8.1, 8.2).

mod amz_date;
mod auth_header;
mod canonical;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

pub use auth_header::{parse_authorization, AuthorizationHeader, ALGORITHM};

use super::auth_error::AuthError;
use super::request::RequestParts;
use canonical::{canonical_header_value, canonical_query, canonical_uri, CanonicalRequest};

/// The SigV4 service name Bedrock Runtime signs with (not `bedrock-runtime`).
pub const SERVICE: &str = "bedrock";
/// How far the signing time may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

type HmacSha256 = hmac::Hmac<Sha256>;

/// Maps access key ids to secret access keys.
pub trait CredentialStore {
    /// The secret for `access_key_id`, or `None` if the key is unknown.
    fn secret_access_key(&self, access_key_id: &str) -> Option<Cow<'_, str>>;
}

impl<S: BuildHasher> CredentialStore for HashMap<String, String, S> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<Cow<'_, str>> {
        self.get(access_key_id).map(|s| Cow::Borrowed(s.as_str()))
    }
}

/// Who signed a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Identity {
    /// The access key id from the credential scope.
    pub access_key_id: String,
    /// The region the client signed for.
    pub region: String,
}

/// Verifies SigV4-signed requests against a credential store.
#[derive(Debug, Clone)]
pub struct SigV4Verifier<C> {
    credentials: C,
    allowed_regions: Option<Vec<String>>,
}

impl<C: CredentialStore> SigV4Verifier<C> {
    /// A verifier accepting any region (the signature binds the region anyway).
    pub fn new(credentials: C) -> Self {
        Self {
            credentials,
            allowed_regions: None,
        }
    }

    /// Accepts only credentials scoped to one of `regions`.
    pub fn with_allowed_regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_regions = Some(regions.into_iter().map(Into::into).collect());
        self
    }

    /// Verifies `request`'s `Authorization` header as of `now`.
    pub fn verify(
        &self,
        request: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<SigV4Identity, AuthError> {
        let value = request
            .header("authorization")
            .ok_or(AuthError::MissingAuthorization)?;
        let auth = parse_authorization(value).map_err(AuthError::MalformedAuthorization)?;
        self.verify_parsed(&auth, request, now)
    }

    /// Verifies an already parsed `Authorization` header against `request`.
    pub fn verify_parsed(
        &self,
        auth: &AuthorizationHeader<'_>,
        request: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<SigV4Identity, AuthError> {
        let secret = self
            .credentials
            .secret_access_key(auth.access_key_id)
            .ok_or_else(|| AuthError::UnknownAccessKey(auth.access_key_id.to_string()))?;
        if auth.service != SERVICE {
            return Err(AuthError::WrongService(auth.service.to_string()));
        }
        if let Some(allowed) = &self.allowed_regions {
            if !allowed.iter().any(|r| r == auth.region) {
                return Err(AuthError::RegionNotAllowed(auth.region.to_string()));
            }
        }
        let amz_date = request_time(request, now)?;
        if amz_date.get(..8) != Some(auth.scope_date) {
            return Err(AuthError::ScopeDateMismatch {
                scope_date: auth.scope_date.to_string(),
                request_date: amz_date,
            });
        }
        let canonical = canonical_request_text(auth, request)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{}\n{}",
            auth.scope(),
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = signing_key(&secret, auth.scope_date, auth.region, auth.service);
        let expected = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
        // Constant time, so response timing does not reveal how much of a guess was right.
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(SigV4Identity {
                access_key_id: auth.access_key_id.to_string(),
                region: auth.region.to_string(),
            })
        } else {
            Err(AuthError::SignatureMismatch {
                canonical_request: canonical,
                string_to_sign,
            })
        }
    }
}

/// The signing time as `YYYYMMDDTHHMMSSZ`, from `X-Amz-Date` or else `Date`,
/// checked against `now` within `MAX_CLOCK_SKEW`.
fn request_time(request: &RequestParts<'_>, now: SystemTime) -> Result<String, AuthError> {
    let (unix, amz_date) = match (request.header("x-amz-date"), request.header("date")) {
        (Some(value), _) => {
            let unix = amz_date::parse_amz_date(value)
                .ok_or_else(|| AuthError::MalformedDate(value.to_string()))?;
            (unix, value.to_string())
        }
        (None, Some(value)) => {
            let unix = amz_date::parse_http_date(value)
                .ok_or_else(|| AuthError::MalformedDate(value.to_string()))?;
            (unix, amz_date::format_amz_date(unix))
        }
        (None, None) => return Err(AuthError::MissingDate),
    };
    let now = unix_seconds(now);
    let skew = MAX_CLOCK_SKEW.as_secs() as i64;
    if unix < now - skew {
        return Err(AuthError::SignatureExpired {
            signed: amz_date,
            now: amz_date::format_amz_date(now),
            limit: amz_date::format_amz_date(now - skew),
        });
    }
    if unix > now + skew {
        return Err(AuthError::SignatureNotYetCurrent {
            signed: amz_date,
            now: amz_date::format_amz_date(now),
            limit: amz_date::format_amz_date(now + skew),
        });
    }
    Ok(amz_date)
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// The canonical request for `request` as the client must have built it.
fn canonical_request_text(
    auth: &AuthorizationHeader<'_>,
    request: &RequestParts<'_>,
) -> Result<String, AuthError> {
    if !auth.signed_header_names().any(|name| name == "host") {
        return Err(AuthError::HostNotSigned);
    }
    let mut headers = String::new();
    for name in auth.signed_header_names() {
        let values: Vec<String> = request
            .header_values(name)
            .map(canonical_header_value)
            .collect();
        if values.is_empty() {
            return Err(AuthError::MissingSignedHeader(name.to_string()));
        }
        // Repeated headers are signed as one, values comma-joined in arrival order.
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    let payload_hash = payload_hash(request)?;
    Ok(CanonicalRequest {
        method: request.method,
        uri: &canonical_uri(request.raw_path),
        query: &canonical_query(request.raw_query),
        headers: &headers,
        signed_headers: auth.signed_headers,
        payload_hash: &payload_hash,
    }
    .to_text())
}

/// `x-amz-content-sha256` when sent (it must be right if it is a digest), else the
/// body's SHA-256.
fn payload_hash(request: &RequestParts<'_>) -> Result<String, AuthError> {
    let body_hash = || hex(&Sha256::digest(request.body));
    match request.header("x-amz-content-sha256") {
        Some(claimed) => {
            let is_digest = claimed.len() == 64 && claimed.bytes().all(|b| b.is_ascii_hexdigit());
            if is_digest && !claimed.eq_ignore_ascii_case(&body_hash()) {
                return Err(AuthError::ContentSha256Mismatch);
            }
            Ok(claimed.to_string())
        }
        None => Ok(body_hash()),
    }
}

/// `kSigning` = HMAC chain over date, region, service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    let mut out = [0; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_signing_key() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20240101",
            "us-east-1",
            "bedrock",
        );
        assert_eq!(
            hex(&key),
            "21089d499243805272d09b1eadc838ec9bedda1a512030b640901ab384b28a19"
        );
    }

    #[test]
    fn empty_body_hash() {
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
