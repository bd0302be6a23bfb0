//! The weights of a Llama-style decoder, named per file format.

use crate::config::ModelConfig;
use crate::tensor::Tensor;
use crate::tensor_store::{StoreError, TensorStore};

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// The output projection; shares the embedding's bytes when tied.
    pub lm_head: Tensor,
}

/// Tensor names of one file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face: `model.layers.0.self_attn.q_proj.weight`.
    HuggingFace,
    /// GGUF (llama.cpp): `blk.0.attn_q.weight`.
    Gguf,
}

impl Naming {
    fn embed(self) -> &'static str {
        match self {
            Self::HuggingFace => "model.embed_tokens.weight",
            Self::Gguf => "token_embd.weight",
        }
    }
    fn final_norm(self) -> &'static str {
        match self {
            Self::HuggingFace => "model.norm.weight",
            Self::Gguf => "output_norm.weight",
        }
    }
    fn lm_head(self) -> &'static str {
        match self {
            Self::HuggingFace => "lm_head.weight",
            Self::Gguf => "output.weight",
        }
    }
    /// Name of a per-layer tensor given its Hugging Face suffix.
    fn layer(self, i: usize, hf: &str) -> String {
        match self {
            Self::HuggingFace => format!("model.layers.{i}.{hf}"),
            Self::Gguf => {
                let g = match hf {
                    "input_layernorm.weight" => "attn_norm.weight",
                    "post_attention_layernorm.weight" => "ffn_norm.weight",
                    "self_attn.q_proj.weight" => "attn_q.weight",
                    "self_attn.k_proj.weight" => "attn_k.weight",
                    "self_attn.v_proj.weight" => "attn_v.weight",
                    "self_attn.o_proj.weight" => "attn_output.weight",
                    "self_attn.q_proj.bias" => "attn_q.bias",
                    "self_attn.k_proj.bias" => "attn_k.bias",
                    "self_attn.v_proj.bias" => "attn_v.bias",
                    "self_attn.q_norm.weight" => "attn_q_norm.weight",
                    "self_attn.k_norm.weight" => "attn_k_norm.weight",
                    "mlp.gate_proj.weight" => "ffn_gate.weight",
                    "mlp.up_proj.weight" => "ffn_up.weight",
                    "mlp.down_proj.weight" => "ffn_down.weight",
                    other => other,
                };
                format!("blk.{i}.{g}")
            }
        }
    }
}

impl ModelWeights {
    /// Finds and shape-checks every tensor the config calls for.
    pub fn load(
        store: &TensorStore,
        cfg: &ModelConfig,
        naming: Naming,
    ) -> Result<Self, StoreError> {
        let (h, q, kv, ff) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let embed = store.matrix(naming.embed(), cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| naming.layer(i, s);
            let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>, StoreError> {
                if cfg.attention_bias {
                    store.vector(&n(s), len).map(Some)
                } else {
                    store.optional_vector(&n(s), len)
                }
            };
            let norm = |s: &str| -> Result<Option<Vec<f32>>, StoreError> {
                if cfg.qk_norm {
                    store.vector(&n(s), cfg.head_dim).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: store.vector(&n("input_layernorm.weight"), h)?,
                wq: store.matrix(&n("self_attn.q_proj.weight"), q, h)?,
                wk: store.matrix(&n("self_attn.k_proj.weight"), kv, h)?,
                wv: store.matrix(&n("self_attn.v_proj.weight"), kv, h)?,
                wo: store.matrix(&n("self_attn.o_proj.weight"), h, q)?,
                bq: bias("self_attn.q_proj.bias", q)?,
                bk: bias("self_attn.k_proj.bias", kv)?,
                bv: bias("self_attn.v_proj.bias", kv)?,
                q_norm: norm("self_attn.q_norm.weight")?,
                k_norm: norm("self_attn.k_norm.weight")?,
                ffn_norm: store.vector(&n("post_attention_layernorm.weight"), h)?,
                w_gate: store.matrix(&n("mlp.gate_proj.weight"), ff, h)?,
                w_up: store.matrix(&n("mlp.up_proj.weight"), ff, h)?,
                w_down: store.matrix(&n("mlp.down_proj.weight"), h, ff)?,
            });
        }
        // Tied when the config says so, or (GGUF) when no output tensor exists.
        let lm_head = if cfg.tie_word_embeddings || !store.contains(naming.lm_head()) {
            embed.clone()
        } else {
            store.matrix(naming.lm_head(), cfg.vocab_size, h)?
        };
        Ok(Self {
            embed,
            final_norm: store.vector(naming.final_norm(), h)?,
            layers,
            lm_head,
        })
    }

    /// The same weights with every matrix converted to owned f32 (a
    /// quantized model's "f32 form"; norms and biases are f32 already).
    pub fn dequantized(&self) -> Self {
        let tied = std::ptr::eq(self.embed.data().as_ptr(), self.lm_head.data().as_ptr());
        let embed = self.embed.to_f32_tensor();
        let mut w = self.clone();
        w.lm_head = if tied {
            embed.clone()
        } else {
            self.lm_head.to_f32_tensor()
        };
        w.embed = embed;
        for l in &mut w.layers {
            for t in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ] {
                *t = t.to_f32_tensor();
            }
        }
        w
    }

    /// Bytes of weights read by one decode step (every matrix once; the
    /// embedding contributes one row unless it is also the output head).
    pub fn bytes_per_token(&self) -> u64 {
        let mut b = self.lm_head.byte_len() as u64;
        for l in &self.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                b += t.byte_len() as u64;
            }
        }
        b
    }
}
