//! Model hyper-parameters from Hugging Face `config.json` or GGUF metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use factory_kernels::cpu::RopeStyle;
use serde::Deserialize;

use crate::gguf::GgufValue;

/// Supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    /// q/k/v projections carry biases.
    Qwen2,
    /// Per-head RMSNorm on q and k before RoPE.
    Qwen3,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Per-frequency divisors (llama.cpp's `rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{source_name}: unsupported model_type/architecture `{found}` (supported: llama, mistral, qwen2, qwen3)")]
    UnsupportedFamily { source_name: String, found: String },
    #[error("{source_name}: missing or invalid `{key}`")]
    Missing { source_name: String, key: String },
    #[error("{source_name}: {what}")]
    Invalid { source_name: String, what: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<OneOrMany>,
    eos_token_id: Option<OneOrMany>,
    hidden_act: Option<String>,
    mlp_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf(raw, &path.display().to_string())
    }

    fn from_hf(raw: HfConfig, src: &str) -> Result<Self, ConfigError> {
        let missing = |key: &str| ConfigError::Missing {
            source_name: src.to_string(),
            key: key.to_string(),
        };
        let model_type = raw
            .model_type
            .clone()
            .ok_or_else(|| missing("model_type"))?;
        let family = match model_type.as_str() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(ConfigError::UnsupportedFamily {
                    source_name: src.to_string(),
                    found: other.to_string(),
                })
            }
        };
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(ConfigError::Invalid {
                source_name: src.to_string(),
                what: format!("hidden_act `{act}` is not supported (only silu)"),
            });
        }
        if raw.mlp_bias == Some(true) {
            return Err(ConfigError::Invalid {
                source_name: src.to_string(),
                what: "mlp_bias = true is not supported".into(),
            });
        }
        let hidden = raw.hidden_size.ok_or_else(|| missing("hidden_size"))?;
        let heads = raw
            .num_attention_heads
            .ok_or_else(|| missing("num_attention_heads"))?;
        // transformers 5 moved rope settings into `rope_parameters`.
        let rope_params = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10000.0);
        let scaling_value = raw.rope_scaling.as_ref().or(rope_params);
        let rope_scaling = scaling_value
            .map(|v| parse_hf_rope_scaling(v, src))
            .transpose()?
            .flatten();
        let eos_token_ids = match raw.eos_token_id {
            Some(OneOrMany::One(v)) => vec![v],
            Some(OneOrMany::Many(v)) => v,
            None => Vec::new(),
        };
        let bos_token_id = match raw.bos_token_id {
            Some(OneOrMany::One(v)) => Some(v),
            Some(OneOrMany::Many(v)) => v.first().copied(),
            None => None,
        };
        let mut max_position_embeddings = raw.max_position_embeddings.unwrap_or(4096);
        // Attention here is always full: a sliding window (Mistral v0.1) is
        // honoured by never letting the context outgrow it. Qwen2 configs carry
        // a window that is off unless `use_sliding_window` says so.
        let window_on = family == Family::Mistral || raw.use_sliding_window == Some(true);
        if let Some(w) = raw
            .sliding_window
            .filter(|&w| window_on && w < max_position_embeddings)
        {
            tracing::warn!("{src}: sliding_window {w}: context limited to {w} tokens");
            max_position_embeddings = w;
        }
        let cfg = Self {
            family,
            vocab_size: raw.vocab_size.ok_or_else(|| missing("vocab_size"))?,
            hidden_size: hidden,
            intermediate_size: raw
                .intermediate_size
                .ok_or_else(|| missing("intermediate_size"))?,
            num_layers: raw
                .num_hidden_layers
                .ok_or_else(|| missing("num_hidden_layers"))?,
            num_heads: heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw
                .head_dim
                .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: rope_theta as f32,
            rope_scaling,
            rope_style: RopeStyle::Half,
            max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(family == Family::Qwen2),
            qk_norm: family == Family::Qwen3,
            bos_token_id,
            eos_token_ids,
        };
        cfg.validate(src)?;
        Ok(cfg)
    }

    /// Reads GGUF metadata (`general.architecture` llama, qwen2 or qwen3).
    pub fn from_gguf(md: &BTreeMap<String, GgufValue>, src: &str) -> Result<Self, ConfigError> {
        let arch = md
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| ConfigError::Missing {
                source_name: src.to_string(),
                key: "general.architecture".into(),
            })?;
        let family = match arch {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(ConfigError::UnsupportedFamily {
                    source_name: src.to_string(),
                    found: other.to_string(),
                })
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let num = |k: &str| -> Result<usize, ConfigError> {
            md.get(&key(k))
                .and_then(GgufValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| ConfigError::Missing {
                    source_name: src.to_string(),
                    key: key(k),
                })
        };
        let float = |k: &str| md.get(&key(k)).and_then(GgufValue::as_f64);
        let hidden = num("embedding_length")?;
        let heads = num("attention.head_count")?;
        let head_dim =
            num("attention.key_length").unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let vocab_size = num("vocab_size").or_else(|_| {
            md.get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(<[GgufValue]>::len)
                .ok_or_else(|| ConfigError::Missing {
                    source_name: src.to_string(),
                    key: key("vocab_size"),
                })
        })?;
        let rope_scaling = match md
            .get(&key("rope.scaling.type"))
            .and_then(GgufValue::as_str)
        {
            Some("linear") => {
                float("rope.scaling.factor").map(|f| RopeScaling::Linear { factor: f as f32 })
            }
            _ => None,
        };
        let token_id = |k: &str| md.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
        let cfg = Self {
            family,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: num("feed_forward_length")?,
            num_layers: num("block_count")?,
            num_heads: heads,
            num_kv_heads: num("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: float("rope.freq_base").unwrap_or(10000.0) as f32,
            rope_scaling,
            // llama.cpp permutes llama Q/K rows at conversion so that rotation
            // pairs are adjacent; Qwen GGUFs keep the NeoX layout.
            rope_style: if family == Family::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Half
            },
            max_position_embeddings: num("context_length").unwrap_or(4096),
            tie_word_embeddings: false, // decided by the presence of output.weight
            attention_bias: family == Family::Qwen2,
            qk_norm: family == Family::Qwen3,
            bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token_id("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
        };
        cfg.validate(src)?;
        Ok(cfg)
    }

    fn validate(&self, src: &str) -> Result<(), ConfigError> {
        let bad = |what: String| {
            Err(ConfigError::Invalid {
                source_name: src.to_string(),
                what,
            })
        };
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return bad("attention heads and head_dim must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        Ok(())
    }

    /// Width of the K (and V) rows of one token: `kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Width of the Q rows of one token: `heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Inverse RoPE frequencies after scaling, as transformers computes them.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = f64::from(self.rope_theta);
        let plain: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            None => plain,
            Some(RopeScaling::Linear { factor }) => {
                plain.iter().map(|f| f / f64::from(*factor)).collect()
            }
            Some(RopeScaling::FreqFactors(ff)) => plain
                .iter()
                .zip(ff.iter().chain(std::iter::repeat(&1.0)))
                .map(|(f, d)| f / f64::from(*d))
                .collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, lo, hi, old) = (
                    f64::from(*factor),
                    f64::from(*low_freq_factor),
                    f64::from(*high_freq_factor),
                    f64::from(*original_max_position_embeddings),
                );
                let (low_wavelen, high_wavelen) = (old / lo, old / hi);
                plain
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

fn parse_hf_rope_scaling(
    v: &serde_json::Value,
    src: &str,
) -> Result<Option<RopeScaling>, ConfigError> {
    let ty = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let f = |k: &str| -> Result<f32, ConfigError> {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| ConfigError::Missing {
                source_name: src.to_string(),
                key: format!("rope_scaling.{k}"),
            })
    };
    Ok(match ty {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: f("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: f("original_max_position_embeddings")?,
        }),
        other => {
            return Err(ConfigError::Invalid {
                source_name: src.to_string(),
                what: format!(
                "rope_scaling type `{other}` is not supported (supported: default, linear, llama3)"
            ),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_hf(serde_json::from_str(json).unwrap(), "test")
    }

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2"#;

    #[test]
    fn unknown_model_type_is_a_clear_error() {
        let e = parse(&format!(r#"{{"model_type": "gpt_neox", {BASE}}}"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported model_type/architecture `gpt_neox`"),
            "{e}"
        );
    }

    #[test]
    fn missing_field_names_the_key() {
        let e = parse(r#"{"model_type": "llama", "vocab_size": 10}"#).unwrap_err();
        assert!(e.to_string().contains("`hidden_size`"), "{e}");
    }

    #[test]
    fn sliding_window_caps_the_context_and_mlp_bias_is_refused() {
        let c = parse(&format!(
            r#"{{"model_type": "mistral", "sliding_window": 4096, "max_position_embeddings": 32768, {BASE}}}"#
        ))
        .unwrap();
        assert_eq!(c.max_position_embeddings, 4096);
        let c = parse(&format!(
            r#"{{"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": false, "max_position_embeddings": 32768, {BASE}}}"#
        ))
        .unwrap();
        assert_eq!(c.max_position_embeddings, 32768);
        let e = parse(&format!(
            r#"{{"model_type": "llama", "mlp_bias": true, {BASE}}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains("mlp_bias"), "{e}");
    }

    #[test]
    fn qwen2_defaults_to_biases_and_eos_lists_parse() {
        let c = parse(&format!(
            r#"{{"model_type": "qwen2", "eos_token_id": [1, 2], {BASE}}}"#
        ))
        .unwrap();
        assert!(c.attention_bias);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert_eq!(c.head_dim, 4);
    }

    #[test]
    fn llama3_scaling_leaves_high_frequencies_and_divides_low_ones() {
        let c = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
        ))
        .unwrap();
        let f = c.rope_inv_freq();
        assert_eq!(f[0], 1.0); // wavelength 2π < 16: untouched
        let plain_last = 1.0 / 500000f64.powf(2.0 / 4.0);
        assert!((f64::from(f[1]) - plain_last / 8.0).abs() < 1e-9);
    }
}
