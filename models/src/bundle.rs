//! A model ready to chat: forward pass, tokenizer, chat template and stop ids,
//! from a Hugging Face directory or a GGUF file.

use std::path::Path;

use factory_kernels::cpu::ActivationMode;

use crate::chat_template::{chat_template_from_config, ChatTemplate, ChatTemplateError};
use crate::forward::Model;
use crate::gguf::GgufValue;
use crate::loader::{open_model, LoadError, ModelFormat};
use crate::tensor_store::TensorStore;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why a model bundle could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("chat template of {source_name}: {error}")]
    Template {
        source_name: String,
        error: ChatTemplateError,
    },
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
}

/// Everything needed to turn messages into tokens and tokens into text.
pub struct ModelBundle {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `None` when the model ships no template (base models).
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end a generation (config, generation config, tokenizer).
    pub eos_token_ids: Vec<u32>,
    pub format: ModelFormat,
    pub store: TensorStore,
}

impl std::fmt::Debug for ModelBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBundle")
            .field("format", &self.format)
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, BundleError> {
    if !path.is_file() {
        return Ok(None);
    }
    let err = |detail: String| BundleError::File {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| err(format!("invalid JSON: {e}")))
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelBundle {
    /// Opens the model at `path` with its tokenizer and chat template.
    pub fn load(path: &Path, mode: ActivationMode) -> Result<Self, BundleError> {
        let opened = open_model(path, mode)?;
        let mut eos = opened.model.config.eos_token_ids.clone();
        let (tokenizer, template_src, source_name) = match &opened.format {
            ModelFormat::HuggingFace { dir } => {
                let tc_path = dir.join("tokenizer_config.json");
                let tc = read_json(&tc_path)?;
                let tokenizer = Tokenizer::from_file(
                    &dir.join("tokenizer.json"),
                    tc.as_ref().map(|_| tc_path.as_path()),
                )?;
                let jinja = dir.join("chat_template.jinja");
                let src = if jinja.is_file() {
                    Some(
                        std::fs::read_to_string(&jinja).map_err(|e| BundleError::File {
                            path: jinja.display().to_string(),
                            detail: e.to_string(),
                        })?,
                    )
                } else {
                    tc.as_ref()
                        .and_then(|v| v.get("chat_template"))
                        .and_then(chat_template_from_config)
                };
                if let Some(gc) = read_json(&dir.join("generation_config.json"))? {
                    eos.extend(ids_of(gc.get("eos_token_id")));
                }
                (tokenizer, src, dir.display().to_string())
            }
            ModelFormat::Gguf { file } => {
                let md = &opened.gguf.as_ref().map(|g| &g.metadata);
                let Some(md) = md else {
                    return Err(BundleError::File {
                        path: file.display().to_string(),
                        detail: "GGUF metadata missing".into(),
                    });
                };
                let tokenizer = Tokenizer::from_gguf(md)?;
                let src = md
                    .get("tokenizer.chat_template")
                    .and_then(GgufValue::as_str)
                    .map(String::from);
                (tokenizer, src, file.display().to_string())
            }
        };
        eos.extend_from_slice(tokenizer.eos_token_ids());
        eos.sort_unstable();
        eos.dedup();
        let chat_template = template_src
            .map(|src| {
                ChatTemplate::new(&src, tokenizer.bos_token(), tokenizer.eos_token()).map_err(
                    |error| BundleError::Template {
                        source_name: source_name.clone(),
                        error,
                    },
                )
            })
            .transpose()?;
        Ok(Self {
            model: opened.model,
            tokenizer,
            chat_template,
            eos_token_ids: eos,
            format: opened.format,
            store: opened.store,
        })
    }
}
