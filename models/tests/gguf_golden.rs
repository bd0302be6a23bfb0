//! GGUF loading against transformers: HF fixtures converted to GGUF the way
//! llama.cpp's converter does (Q/K rows permuted, llama3 scaling as
//! `rope_freqs.weight`) must give transformers' logits.

use std::path::{Path, PathBuf};

use factory_kernels::cpu::quant::{quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0};
use factory_kernels::cpu::{ActivationMode, WeightDType};
use factory_models::config::RopeScaling;
use factory_models::gguf::GgufValue;
use factory_models::gguf_writer::GgufWriter;
use factory_models::tensor::Tensor;
use factory_models::{open_model, KvCache, LogitsRequest, Model, ModelConfig, SeqInput};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_ids: Vec<u32>,
    prefill_logits: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// llama.cpp's Q/K permutation: within each head, rows (j * hd/2 + i) move to (2i + j).
fn permute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let src = h * hd + j * (hd / 2) + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn encode(dtype: WeightDType, w: &[f32], cols: usize) -> Vec<u8> {
    match dtype {
        WeightDType::F32 => bytemuck::cast_slice(w).to_vec(),
        WeightDType::Q8_0 => w.chunks(cols).flat_map(quantize_row_q8_0).collect(),
        WeightDType::Q4_0 => w.chunks(cols).flat_map(quantize_row_q4_0).collect(),
        WeightDType::Q4_1 => w.chunks(cols).flat_map(quantize_row_q4_1).collect(),
        other => panic!("test encodes no {other:?}"),
    }
}

/// Converts a llama-family HF fixture to a GGUF file with matrices in `dtype`.
fn convert(name: &str, dtype: WeightDType) -> PathBuf {
    let src = open_model(&fixture(name), ActivationMode::Exact).expect("fixture");
    let cfg: &ModelConfig = &src.model.config;
    let w = &src.model.weights;
    let mut g = GgufWriter::new();
    let u = |v: usize| GgufValue::U32(v as u32);
    g.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.embedding_length", u(cfg.hidden_size))
        .metadata("llama.feed_forward_length", u(cfg.intermediate_size))
        .metadata("llama.block_count", u(cfg.num_layers))
        .metadata("llama.attention.head_count", u(cfg.num_heads))
        .metadata("llama.attention.head_count_kv", u(cfg.num_kv_heads))
        .metadata("llama.context_length", u(cfg.max_position_embeddings))
        .metadata("llama.vocab_size", u(cfg.vocab_size))
        .metadata("llama.rope.freq_base", GgufValue::F32(cfg.rope_theta))
        .metadata(
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(cfg.rms_norm_eps),
        );
    if let Some(RopeScaling::Llama3 { .. }) = cfg.rope_scaling {
        // What llama.cpp's converter stores: plain frequency / scaled frequency.
        let mut plain = cfg.clone();
        plain.rope_scaling = None;
        let ff: Vec<f32> = plain
            .rope_inv_freq()
            .iter()
            .zip(cfg.rope_inv_freq())
            .map(|(p, s)| p / s)
            .collect();
        g.tensor(
            "rope_freqs.weight",
            &[ff.len()],
            WeightDType::F32,
            bytemuck::cast_slice(&ff).to_vec(),
        );
    }
    let mat = |g: &mut GgufWriter, name: &str, t: &Tensor, permute_heads: Option<usize>| {
        let mut v = t.to_f32_vec();
        if let Some(h) = permute_heads {
            v = permute_rows(&v, t.rows, t.cols, h);
        }
        g.tensor(name, &[t.rows, t.cols], dtype, encode(dtype, &v, t.cols));
    };
    let vec = |g: &mut GgufWriter, name: &str, v: &[f32]| {
        g.tensor(
            name,
            &[v.len()],
            WeightDType::F32,
            bytemuck::cast_slice(v).to_vec(),
        );
    };
    mat(&mut g, "token_embd.weight", &w.embed, None);
    if !cfg.tie_word_embeddings {
        mat(&mut g, "output.weight", &w.lm_head, None);
    }
    vec(&mut g, "output_norm.weight", &w.final_norm);
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        vec(&mut g, &n("attn_norm.weight"), &l.attn_norm);
        vec(&mut g, &n("ffn_norm.weight"), &l.ffn_norm);
        mat(&mut g, &n("attn_q.weight"), &l.wq, Some(cfg.num_heads));
        mat(&mut g, &n("attn_k.weight"), &l.wk, Some(cfg.num_kv_heads));
        mat(&mut g, &n("attn_v.weight"), &l.wv, None);
        mat(&mut g, &n("attn_output.weight"), &l.wo, None);
        mat(&mut g, &n("ffn_gate.weight"), &l.w_gate, None);
        mat(&mut g, &n("ffn_up.weight"), &l.w_up, None);
        mat(&mut g, &n("ffn_down.weight"), &l.w_down, None);
    }
    let path = std::env::temp_dir().join(format!(
        "factory-test-{}-{name}-{dtype:?}.gguf",
        std::process::id()
    ));
    g.write(&path).expect("write gguf");
    path
}

fn prefill(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let table: Vec<u32> = (0..ids.len().div_ceil(16) as u32).collect();
    let mut cache = KvCache::new(&model.config, 16, table.len());
    let out = model
        .forward(
            &[SeqInput {
                tokens: ids,
                start_pos: 0,
                block_table: &table,
                logits: LogitsRequest::All,
            }],
            &mut cache,
        )
        .expect("forward");
    (0..ids.len()).map(|i| out.row(0, i).to_vec()).collect()
}

fn max_rel_diff(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    let scale = want.iter().flatten().map(|v| v.abs()).fold(1f32, f32::max);
    let diff = got
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    diff / scale
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("parses")
}

#[test]
fn f32_gguf_with_permuted_qk_matches_transformers() {
    for name in ["llama_gqa", "llama3_scaled", "llama2_mha"] {
        let path = convert(name, WeightDType::F32);
        let model = open_model(&path, ActivationMode::Exact)
            .expect("gguf loads")
            .model;
        let _ = std::fs::remove_file(&path);
        for case in expected(name).cases {
            let d = max_rel_diff(&prefill(&model, &case.prompt_ids), &case.prefill_logits);
            assert!(d < 2e-4, "{name}: relative logit error {d}");
        }
    }
}

/// The same model with every matrix dequantized to f32.
fn dequantized(model: &Model) -> Model {
    let mut m = model.clone();
    m.weights = model.weights.dequantized();
    m.activation_mode = ActivationMode::Exact;
    m
}

#[test]
fn quantized_exact_mode_equals_dequantized_weights_and_fast_mode_stays_close() {
    for dtype in [WeightDType::Q8_0, WeightDType::Q4_1, WeightDType::Q4_0] {
        let path = convert("llama_gqa", dtype);
        let exact = open_model(&path, ActivationMode::Exact)
            .expect("gguf loads")
            .model;
        let fast = open_model(&path, ActivationMode::Fast)
            .expect("gguf loads")
            .model;
        let _ = std::fs::remove_file(&path);
        let reference = dequantized(&exact);
        for case in expected("llama_gqa").cases {
            let want = prefill(&reference, &case.prompt_ids);
            let d = max_rel_diff(&prefill(&exact, &case.prompt_ids), &want);
            assert!(d < 2e-5, "{dtype:?} exact vs dequantized: {d}");
            // 8-bit activations: a few % of the logit scale on this tiny random model.
            let d = max_rel_diff(&prefill(&fast, &case.prompt_ids), &want);
            assert!(d < 0.06, "{dtype:?} fast vs dequantized: {d}");
        }
    }
}

#[test]
fn q8_0_gguf_stays_close_to_transformers() {
    let path = convert("llama_gqa", WeightDType::Q8_0);
    let model = open_model(&path, ActivationMode::Exact)
        .expect("gguf loads")
        .model;
    let _ = std::fs::remove_file(&path);
    for case in expected("llama_gqa").cases {
        let d = max_rel_diff(&prefill(&model, &case.prompt_ids), &case.prefill_logits);
        assert!(d < 0.06, "Q8_0: relative logit error {d}");
    }
}
