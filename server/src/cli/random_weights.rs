//! `--random-weights`: a model's shape from its config.json and a tokenizer,
//! without weights (the CUDA executor initialises them on the GPU).

use std::path::{Path, PathBuf};

use anyhow::Context;
use factory_kernels::cpu::ActivationMode;
use factory_models::bundle::ModelBundle;
use factory_models::chat_template::{chat_template_from_config, ChatTemplate};
use factory_models::tokenizer::Tokenizer;
use factory_models::{default_model, ModelConfig};

/// A model's shape, tokenizer and chat template, with no weights.
pub struct RandomModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub eos_token_ids: Vec<u32>,
}

/// The config.json `path` names (itself, or inside the directory).
pub fn config_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    }
}

/// Reads the config at `path` (a config.json or a directory with one) and a
/// tokenizer: the directory's tokenizer.json if there is one, else the default
/// model's, with a warning (its ids may not cover the config's vocabulary:
/// generated ids beyond it decode to nothing).
pub fn load_random_model(path: &str) -> anyhow::Result<RandomModel> {
    let cfg_path = config_path(Path::new(path));
    let config = ModelConfig::from_hf_file(&cfg_path)
        .with_context(|| format!("--random-weights: reading {}", cfg_path.display()))?;
    let dir = cfg_path.parent().unwrap_or(Path::new("."));
    let tok_path = dir.join("tokenizer.json");
    let (tokenizer, chat_template, mut eos) = if tok_path.is_file() {
        let tc_path = dir.join("tokenizer_config.json");
        let tc: Option<serde_json::Value> = if tc_path.is_file() {
            let text = std::fs::read_to_string(&tc_path)
                .with_context(|| format!("reading {}", tc_path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: invalid JSON", tc_path.display()))?,
            )
        } else {
            None
        };
        let tokenizer = Tokenizer::from_file(&tok_path, tc.as_ref().map(|_| tc_path.as_path()))
            .with_context(|| format!("loading {}", tok_path.display()))?;
        let template = tc
            .as_ref()
            .and_then(|v| v.get("chat_template"))
            .and_then(chat_template_from_config)
            .map(|src| {
                ChatTemplate::new(&src, tokenizer.bos_token(), tokenizer.eos_token())
                    .with_context(|| format!("chat template of {}", tc_path.display()))
            })
            .transpose()?;
        (tokenizer, template, Vec::new())
    } else {
        tracing::warn!(
            "--random-weights: no tokenizer.json beside {}; using the default model's tokenizer \
             (ids beyond its vocabulary decode to nothing)",
            cfg_path.display()
        );
        let p = default_model::ensure().context("fetching the default model's tokenizer")?;
        let b = ModelBundle::load(&p, ActivationMode::Exact)
            .with_context(|| format!("loading {}", p.display()))?;
        (b.tokenizer, b.chat_template, b.eos_token_ids)
    };
    eos.extend_from_slice(&config.eos_token_ids);
    eos.extend_from_slice(tokenizer.eos_token_ids());
    eos.sort_unstable();
    eos.dedup();
    Ok(RandomModel {
        config,
        tokenizer,
        chat_template,
        eos_token_ids: eos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_names_its_config_json() {
        let dir = std::env::temp_dir();
        assert_eq!(config_path(&dir), dir.join("config.json"));
        let f = Path::new("/x/llama/config.json");
        assert_eq!(config_path(f), f);
    }

    #[test]
    fn a_missing_config_is_a_clear_error() {
        let e = load_random_model("/nonexistent/factory-random/config.json")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("--random-weights: reading"), "{e}");
    }

    #[test]
    fn a_config_dir_with_a_tokenizer_loads_both() {
        // The fixtures' tiny tokenizer dir has no config.json: put one of the
        // model fixtures' configs beside a copy of it.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
        let dir = std::env::temp_dir().join(format!("factory-random-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(root.join("llama_gqa/config.json"), dir.join("config.json")).unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(root.join("tokenizer_spm_tiny_hf").join(f), dir.join(f)).unwrap();
        }
        let m = load_random_model(dir.to_str().unwrap()).unwrap();
        assert_eq!(m.config.hidden_size, 64);
        assert!(!m
            .tokenizer
            .encode("hello", false)
            .unwrap_or_default()
            .is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
