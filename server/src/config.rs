//! The `factory serve --config FILE.toml` file: address, limits, the served
//! models, and credentials.
//!
//! ```toml
//! addr = "127.0.0.1:8080"
//! max_body_bytes = 25000000
//! default_max_tokens = 512
//! max_in_flight_requests = 256   # all models together; beyond: ThrottlingException (429)
//! max_queued_requests = 256      # per model, waiting beside its max_num_seqs running
//! request_timeout = 600          # seconds; beyond: ModelTimeoutException (408), generation aborted
//! region = "us-east-1"
//!
//! # One entry per model, each with its own engine. Without [[models]], the one
//! # model of `--model` is served, named by an optional [model] section
//! # (id, aliases, native_format: the same keys as here).
//! [[models]]
//! path = "default"               # a .gguf, a Hugging Face directory, or the embedded default
//! id = "smollm2-135m-instruct"
//! aliases = ["meta.llama3-1-8b-instruct-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"]
//! native_format = "anthropic"    # InvokeModel body for ids without a provider prefix
//! context_length = 8192          # prompt + output, at most the model's own
//! default_max_tokens = 512       # when a request names none
//! max_max_tokens = 4096          # more: ValidationException
//! max_prompt_tokens = 6144       # longer: ValidationException "Input is too long for requested model."
//! max_queued_requests = 64
//! request_timeout = 300
//! quant_mode = "exact"
//! engine = { kv_cache_memory = "10%", block_size = 16, max_num_seqs = 32, max_num_batched_tokens = 512, prefix_caching = true }
//!
//! [[models]]
//! path = "default"               # the same weights again, with other limits
//! id = "smollm2-short"
//! max_max_tokens = 256
//! engine = { kv_cache_memory = "256MiB", max_num_seqs = 8, backend = "cpu", kv_cache_dtype = "f16" }
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
    /// Generation requests in flight, all models together, before ThrottlingException.
    pub max_in_flight_requests: Option<usize>,
    /// Requests each model queues beside those it runs (models may override).
    pub max_queued_requests: Option<usize>,
    /// Seconds a request may take (models may override).
    pub request_timeout: Option<u64>,
    /// Region shown in foundation-model ARNs.
    pub region: Option<String>,
    /// The served model's ids, when `--model` names the one model.
    #[serde(default)]
    pub model: ModelSection,
    /// `[[models]]`: every served model; excludes `[model]` and `--model`.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
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

/// One `[[models]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// A `.gguf`, a Hugging Face directory, or `default` (the default).
    pub path: Option<String>,
    /// The primary id (default: as for `--model`).
    pub id: Option<String>,
    /// Extra ids.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// InvokeModel body family for ids without a provider prefix.
    pub native_format: Option<Family>,
    /// Longest sequence (prompt + output), at most the model's own context.
    pub context_length: Option<usize>,
    /// Tokens generated when a request names no limit.
    pub default_max_tokens: Option<usize>,
    /// The largest max_tokens a request may ask.
    pub max_max_tokens: Option<usize>,
    /// The longest prompt, in tokens.
    pub max_prompt_tokens: Option<usize>,
    /// Requests queued beside those running.
    pub max_queued_requests: Option<usize>,
    /// Seconds a request may take.
    pub request_timeout: Option<u64>,
    /// `exact` or `fast` (quantized weights only).
    pub quant_mode: Option<String>,
    /// Engine settings; unset ones come from the command line's engine flags.
    #[serde(default)]
    pub engine: EngineSection,
}

/// A model's engine settings (`engine = {...}` in `[[models]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// KV cache memory: bytes (`4GiB`, `512MiB`) or a share of available memory (`10%`).
    pub kv_cache_memory: Option<String>,
    /// CPU backend: KV cache element type, `f32` or `f16` (`--kv-cache-dtype`).
    pub kv_cache_dtype: Option<String>,
    /// Tokens per KV block.
    pub block_size: Option<usize>,
    /// Sequences running at once.
    pub max_num_seqs: Option<usize>,
    /// Tokens computed per step.
    pub max_num_batched_tokens: Option<usize>,
    /// Share the K/V of identical prompt prefixes.
    pub prefix_caching: Option<bool>,
    /// `cpu` or `cuda` (`--backend`).
    pub backend: Option<String>,
    /// CUDA: KV cache share of free GPU memory, in (0, 1] (`--gpu-memory-utilization`).
    pub gpu_memory_utilization: Option<f64>,
    /// CUDA: device ordinal (`--device`).
    pub device: Option<usize>,
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

    /// Parses TOML text and checks what one key cannot say alone.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        if !self.models.is_empty()
            && (m.id.is_some() || !m.aliases.is_empty() || m.native_format.is_some())
        {
            return Err(
                "[model] and [[models]] cannot both be given: put the ids in the [[models]] entries"
                    .into(),
            );
        }
        if self.request_timeout == Some(0) {
            return Err("request_timeout must be at least 1 second".into());
        }
        for (i, e) in self.models.iter().enumerate() {
            let at = format!(
                "[[models]] entry {} ({})",
                i + 1,
                e.id.as_deref().unwrap_or("no id")
            );
            let positive = [
                ("context_length", e.context_length),
                ("default_max_tokens", e.default_max_tokens),
                ("max_max_tokens", e.max_max_tokens),
                ("max_prompt_tokens", e.max_prompt_tokens),
                ("request_timeout", e.request_timeout.map(|t| t as usize)),
            ];
            for (key, v) in positive {
                if v == Some(0) {
                    return Err(format!("{at}: {key} must be at least 1"));
                }
            }
            if let Some(d) = &e.engine.kv_cache_dtype {
                d.parse::<factory_models::KvDType>()
                    .map_err(|err| format!("{at}: engine.kv_cache_dtype: {err}"))?;
            }
            if let (Some(d), Some(max)) = (e.default_max_tokens, e.max_max_tokens) {
                if d > max {
                    return Err(format!(
                        "{at}: default_max_tokens ({d}) is above max_max_tokens ({max})"
                    ));
                }
            }
        }
        Ok(())
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
            request_timeout: self
                .request_timeout
                .map_or(d.request_timeout, std::time::Duration::from_secs),
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
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0].aliases.len(), 2);
        assert_eq!(c.models[0].native_format, Some(Family::Anthropic));
        assert_eq!(c.models[0].engine.max_num_seqs, Some(32));
        assert_eq!(c.models[1].max_max_tokens, Some(256));
        assert_eq!(c.models[1].engine.backend.as_deref(), Some("cpu"));
        assert_eq!(c.models[1].engine.kv_cache_dtype.as_deref(), Some("f16"));
        assert_eq!(
            c.service_config().request_timeout,
            std::time::Duration::from_secs(600)
        );
        assert_eq!(c.auth.access_keys.len(), 1);
        assert_eq!(c.service_config().default_max_tokens, 512);
        assert!(!c.auth.is_empty());
    }

    #[test]
    fn the_single_model_form_still_parses_and_excludes_models() {
        let c = FileConfig::parse("[model]\naliases = [\"meta.llama3-1-8b-instruct-v1:0\"]\n")
            .expect("[model] parses");
        assert_eq!(c.model.aliases.len(), 1);
        assert!(c.models.is_empty());
        let both = "[model]\nid = \"a\"\n[[models]]\nid = \"b\"\n";
        assert!(FileConfig::parse(both).is_err());
        assert!(FileConfig::parse("[[models]]\nmax_max_tokens = 0\n").is_err());
        assert!(
            FileConfig::parse("[[models]]\ndefault_max_tokens = 9\nmax_max_tokens = 8\n").is_err()
        );
        assert!(FileConfig::parse("request_timeout = 0").is_err());
    }

    #[test]
    fn an_unknown_kv_cache_dtype_is_a_config_error() {
        let ok = "[[models]]\nengine = { kv_cache_dtype = \"f16\" }\n";
        assert!(FileConfig::parse(ok).is_ok());
        let e =
            FileConfig::parse("[[models]]\nid = \"m\"\nengine = { kv_cache_dtype = \"bf16\" }\n")
                .unwrap_err();
        assert!(
            e.contains("entry 1 (m)") && e.contains("kv_cache_dtype") && e.contains("f32 or f16"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(FileConfig::parse("adr = \"x\"").is_err());
        assert!(FileConfig::parse("").is_ok());
    }
}
