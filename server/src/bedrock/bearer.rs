//! `Authorization: Bearer <key>`: Bedrock API keys (reference/bedrock-api.md 8.6).

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::auth_error::AuthError;

/// The configured API keys, each with a name to report who called.
///
/// Keys are kept as SHA-256 digests so every comparison is over 32 bytes: the
/// time taken then depends neither on the key's length nor on where a guess differs.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: digests of short keys would be guessable offline.
        f.debug_list()
            .entries(self.keys.iter().map(|(name, _)| name))
            .finish()
    }
}

impl ApiKeys {
    /// No keys: every bearer token is rejected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key`, reported as `name` when it authenticates a request.
    pub fn insert(&mut self, name: impl Into<String>, key: &str) {
        self.keys.push((name.into(), digest(key)));
    }

    /// The name of the key equal to `token`. Every configured key is compared, so
    /// the time taken does not reveal which one (if any) matched.
    pub fn verify(&self, token: &str) -> Result<&str, AuthError> {
        let candidate = digest(token);
        let mut found: Option<&str> = None;
        for (name, key) in &self.keys {
            let equal: Choice = key.ct_eq(&candidate);
            if bool::from(equal) && found.is_none() {
                found = Some(name);
            }
        }
        found.ok_or(AuthError::UnknownApiKey)
    }

    /// Verifies a whole `Authorization` value of the form `Bearer <token>`.
    pub fn verify_header(&self, authorization: &str) -> Result<&str, AuthError> {
        let token = bearer_token(authorization).ok_or_else(|| {
            AuthError::MalformedAuthorization(
                "Authorization header is not 'Bearer <token>'.".into(),
            )
        })?;
        self.verify(token)
    }
}

/// The token of a `Bearer <token>` value (scheme case-insensitive), if it is one.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(key: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(&Sha256::digest(key.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let mut keys = ApiKeys::new();
        keys.insert("alice", "key-alice-123");
        keys.insert("bob", "key-bob-456");
        keys
    }

    #[test]
    fn known_keys_verify() {
        let keys = keys();
        assert_eq!(keys.verify("key-alice-123"), Ok("alice"));
        assert_eq!(keys.verify_header("Bearer key-bob-456"), Ok("bob"));
        assert_eq!(keys.verify_header("bearer  key-bob-456 "), Ok("bob"));
    }

    #[test]
    fn unknown_keys_fail() {
        let keys = keys();
        for token in ["key-alice-12", "key-alice-1234", "KEY-ALICE-123", "", " "] {
            assert_eq!(
                keys.verify(token),
                Err(AuthError::UnknownApiKey),
                "{token:?}"
            );
        }
        assert_eq!(
            ApiKeys::new().verify("key-alice-123"),
            Err(AuthError::UnknownApiKey)
        );
    }

    #[test]
    fn malformed_headers_fail() {
        let keys = keys();
        for value in ["Bearer", "Bearer ", "Basic key-alice-123", "key-alice-123"] {
            assert!(
                matches!(
                    keys.verify_header(value),
                    Err(AuthError::MalformedAuthorization(_))
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn debug_shows_names_not_keys() {
        let shown = format!("{:?}", keys());
        assert_eq!(shown, r#"["alice", "bob"]"#);
    }
}
