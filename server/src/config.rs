//! The `factory serve --config FILE.toml` file: address, limits, the served
//! model's ids, and credentials.
//!
//! ```toml
//! addr = "127.0.0.1:8080"
//! max_body_bytes = 25000000
//! default_max_tokens = 512
//! max_in_flight_requests = 256   # beyond: ThrottlingException (429)
//! region = "us-east-1"
//!
//! [model]
//! id = "smollm2-135m-instruct"
//! aliases = ["meta.llama3-1-8b-instruct-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"]
//! native_format = "anthropic"   # InvokeModel body for ids without a provider prefix
//!
//! [auth]
//! regions = ["us-east-1"]       # optional allow-list
//! access_keys = [{ access_key_id = "AKID...", secret_access_key = "..." }]
//! api_keys = [{ name = "ci", key = "..." }]   # Bearer: Bedrock API keys and OpenAI clients
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bedrock::bearer::ApiKeys;
use crate::bedrock::sigv4::SigV4Verifier;
use crate::bedrock::Authenticator;
use crate::credentials::KeyPair;
use crate::model_id::Family;
use crate::service::ServiceConfig;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole file; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address, e.g. `127.0.0.1:8080`.
    pub addr: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Tokens generated when a request sets no limit.
    pub default_max_tokens: Option<usize>,
    /// Generation requests in flight before ThrottlingException.
    pub max_in_flight_requests: Option<usize>,
    /// Region shown in foundation-model ARNs.
    pub region: Option<String>,
    /// The served model's ids.
    #[serde(default)]
    pub model: ModelSection,
    /// Credentials.
    #[serde(default)]
    pub auth: AuthSection,
}

/// `[model]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The primary id (default: `smollm2-135m-instruct` for the default model,
    /// else the model's file or directory name).
    pub id: Option<String>,
    /// Extra ids, e.g. Bedrock ids that existing applications use.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// InvokeModel body family for ids without a provider prefix.
    pub native_format: Option<Family>,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// SigV4 key pairs.
    #[serde(default)]
    pub access_keys: Vec<KeyPair>,
    /// Bearer API keys.
    #[serde(default)]
    pub api_keys: Vec<NamedApiKey>,
    /// Regions a SigV4 credential may be scoped to; any when absent.
    pub regions: Option<Vec<String>>,
}

/// One bearer API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedApiKey {
    /// Reported as the caller.
    pub name: String,
    /// The token clients send as `Authorization: Bearer <key>`.
    pub key: String,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The service limits, defaults where unset.
    pub fn service_config(&self) -> ServiceConfig {
        let d = ServiceConfig::default();
        ServiceConfig {
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            default_max_tokens: self.default_max_tokens.unwrap_or(d.default_max_tokens),
            region: self.region.clone().unwrap_or(d.region),
            max_in_flight_requests: self
                .max_in_flight_requests
                .unwrap_or(d.max_in_flight_requests),
        }
    }
}

impl AuthSection {
    /// Whether no credential of either kind is configured.
    pub fn is_empty(&self) -> bool {
        self.access_keys.is_empty() && self.api_keys.is_empty()
    }

    /// An authenticator over these credentials plus `extra` key pairs.
    pub fn authenticator(&self, extra: &[KeyPair]) -> Authenticator<HashMap<String, String>> {
        let pairs: HashMap<String, String> = self
            .access_keys
            .iter()
            .chain(extra)
            .map(|k| (k.access_key_id.clone(), k.secret_access_key.clone()))
            .collect();
        let sigv4 = (!pairs.is_empty()).then(|| {
            let v = SigV4Verifier::new(pairs);
            match &self.regions {
                Some(r) => v.with_allowed_regions(r.iter().cloned()),
                None => v,
            }
        });
        let mut api_keys = ApiKeys::new();
        for k in &self.api_keys {
            api_keys.insert(k.name.clone(), &k.key);
        }
        Authenticator::new(sigv4, api_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = FileConfig::parse(&doc).expect("example parses");
        assert_eq!(c.model.aliases.len(), 2);
        assert_eq!(c.model.native_format, Some(Family::Anthropic));
        assert_eq!(c.auth.access_keys.len(), 1);
        assert_eq!(c.service_config().default_max_tokens, 512);
        assert!(!c.auth.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(FileConfig::parse("adr = \"x\"").is_err());
        assert!(FileConfig::parse("").is_ok());
    }
}
