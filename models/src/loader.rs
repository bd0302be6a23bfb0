//! Opening a model from a path: a Hugging Face directory or a GGUF file.

use std::path::{Path, PathBuf};

use factory_kernels::cpu::ActivationMode;

use crate::config::{ConfigError, ModelConfig, RopeScaling};
use crate::forward::Model;
use crate::gguf::{GgufError, GgufFile};
use crate::tensor_store::{StoreError, TensorStore};
use crate::weights::{ModelWeights, Naming};

/// Why a model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("{0}: expected a Hugging Face model directory (with config.json) or a .gguf file")]
    UnknownFormat(PathBuf),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The on-disk format of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    HuggingFace { dir: PathBuf },
    Gguf { file: PathBuf },
}

impl ModelFormat {
    /// Recognizes the format of `path`.
    pub fn detect(path: &Path) -> Result<Self, LoadError> {
        if path.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(Self::HuggingFace {
                    dir: path.to_path_buf(),
                });
            }
            return Err(LoadError::UnknownFormat(path.to_path_buf()));
        }
        if path.is_file() {
            let mut magic = [0u8; 4];
            let is_gguf = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok()
                && &magic == b"GGUF";
            if is_gguf {
                return Ok(Self::Gguf {
                    file: path.to_path_buf(),
                });
            }
            return Err(LoadError::UnknownFormat(path.to_path_buf()));
        }
        Err(LoadError::NotFound(path.to_path_buf()))
    }
}

/// An opened model: its forward pass and where its other parts live.
pub struct OpenedModel {
    pub model: Model,
    pub format: ModelFormat,
    pub store: TensorStore,
    /// GGUF metadata (tokenizer, chat template) when the model came from GGUF.
    pub gguf: Option<GgufFile>,
}

/// Opens the model at `path` (weights memory-mapped, shapes checked).
pub fn open_model(path: &Path, mode: ActivationMode) -> Result<OpenedModel, LoadError> {
    let format = ModelFormat::detect(path)?;
    match &format {
        ModelFormat::HuggingFace { dir } => {
            let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
            let store = TensorStore::open_safetensors_dir(dir)?;
            let weights = ModelWeights::load(&store, &config, Naming::HuggingFace)?;
            Ok(OpenedModel {
                model: Model::new(config, weights, mode),
                format,
                store,
                gguf: None,
            })
        }
        ModelFormat::Gguf { file } => {
            let gguf = GgufFile::open(file)?;
            let mut config = ModelConfig::from_gguf(&gguf.metadata, &file.display().to_string())?;
            let store = TensorStore::from_gguf(&gguf)?;
            // Llama 3.1 GGUFs carry their rope scaling as per-frequency divisors.
            if let Some(ff) = store.optional_vector("rope_freqs.weight", config.head_dim / 2)? {
                config.rope_scaling = Some(RopeScaling::FreqFactors(ff));
            }
            let weights = ModelWeights::load(&store, &config, Naming::Gguf)?;
            Ok(OpenedModel {
                model: Model::new(config, weights, mode),
                format,
                store,
                gguf: Some(gguf),
            })
        }
    }
}
