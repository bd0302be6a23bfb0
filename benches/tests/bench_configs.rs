//! The model shapes the GPU benchmarks use (benches/data/*-config.json) parse
//! as the engine will read them, and hold the published sizes.

use std::path::PathBuf;

use factory_models::config::{Family, ModelConfig, RopeScaling};

fn load(name: &str) -> ModelConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    ModelConfig::from_hf_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Parameters of a dense Llama-style model (embeddings, attention, SwiGLU MLP,
/// norms; an untied LM head counted separately).
fn params(c: &ModelConfig) -> u64 {
    let (h, v) = (c.hidden_size as u64, c.vocab_size as u64);
    let attn = h * c.q_dim() as u64 * 2 + h * c.kv_dim() as u64 * 2;
    let mlp = 3 * h * c.intermediate_size as u64;
    let norms = 2 * h + if c.qk_norm { 2 * c.head_dim as u64 } else { 0 };
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    v * h + head + c.num_layers as u64 * (attn + mlp + norms) + h
}

#[test]
fn llama_3_1_8b_has_the_published_shape() {
    let c = load("llama-3.1-8b-config.json");
    assert_eq!(c.family, Family::Llama);
    assert_eq!(
        (
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim
        ),
        (4096, 32, 32, 8, 128)
    );
    assert_eq!((c.intermediate_size, c.vocab_size), (14336, 128256));
    assert_eq!(c.max_position_embeddings, 131072);
    assert_eq!(c.rope_theta, 500000.0);
    assert!(matches!(
        c.rope_scaling,
        Some(RopeScaling::Llama3 { factor, original_max_position_embeddings, .. })
            if factor == 8.0 && original_max_position_embeddings == 8192.0
    ));
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
    // Meta's published count for Llama-3.1-8B.
    assert_eq!(params(&c), 8_030_261_248);
}

#[test]
fn llama_3_2_1b_ties_its_embeddings() {
    let c = load("llama-3.2-1b-config.json");
    assert_eq!((c.hidden_size, c.num_layers, c.head_dim), (2048, 16, 64));
    assert!(c.tie_word_embeddings);
    assert_eq!(params(&c), 1_235_814_400);
}

#[test]
fn qwen3_8b_has_qk_norm() {
    let c = load("qwen3-8b-config.json");
    assert_eq!(c.family, Family::Qwen3);
    assert!(c.qk_norm);
    assert_eq!(
        (c.num_layers, c.intermediate_size, c.vocab_size),
        (36, 12288, 151936)
    );
    assert_eq!(c.rope_scaling, None);
    assert_eq!(params(&c), 8_190_735_360);
}
