//! The CUDA executor against the CPU executor: whole-model logits of prefill,
//! decode and mixed batches, on synthetic models of every family feature
//! (GQA, MHA, q/k/v bias, q/k norm, interleaved RoPE, head_dim 64 and 128) and
//! on the default model when it is cached. bf16 activations on the GPU vs f32
//! on the CPU: compared by relative L2 error and by the top token.
//!
//! Without a GPU each GPU test prints a loud SKIPPED and passes; the tests of
//! what is refused before any device is touched run everywhere.
#![cfg(feature = "cuda")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use factory_engine::executor::{
    Batch, BatchSeq, CpuExecutor, CudaExecutor, CudaExecutorOptions, Executor, StepOutput,
};
use factory_kernels::cpu::{ActivationMode, RopeStyle, WeightDType};
use factory_kernels::cuda::CudaDevice;
use factory_kernels::cuda_twin::bf16;
use factory_models::tensor::Tensor;
use factory_models::weights::{LayerWeights, ModelWeights};
use factory_models::{Family, Model, ModelConfig};
use rand::{Rng, SeedableRng};

fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n********** {msg} **********");
}

/// `libname*` under `dir`, a few levels deep (the NVIDIA wheels' layout).
fn find_lib(dir: &Path, prefix: &str, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    if let Some(p) = entries.iter().find(|p| {
        p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
    }) {
        return Some(p.clone());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_lib(p, prefix, depth - 1))
}

/// True when a GPU is there (pointing the executor at the NVRTC and cuBLASLt
/// wheels scripts/test.sh installs, unless set already); else a loud skip.
fn gpu_or_skip(test: &str) -> bool {
    if let Err(e) = CudaDevice::open(0) {
        loud(&format!("SKIPPED {test}: no CUDA device ({e})"));
        return false;
    }
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cuda-wheels");
    for (var, prefix) in [
        ("FACTORY_NVRTC_LIB", "libnvrtc.so."),
        ("FACTORY_CUBLASLT_LIB", "libcublasLt.so."),
    ] {
        if std::env::var_os(var).is_none() {
            if let Some(p) = find_lib(&wheels, prefix, 5) {
                // SAFETY: set before any thread of this test reads the environment.
                unsafe { std::env::set_var(var, p) };
            }
        }
    }
    true
}

/// A synthetic model's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    family: Family,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    bias: bool,
    qk_norm: bool,
    interleaved: bool,
    tied: bool,
}

fn config(s: Shape) -> ModelConfig {
    ModelConfig {
        family: s.family,
        vocab_size: 1000,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 3,
        num_heads: s.heads,
        num_kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        rope_style: if s.interleaved {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Half
        },
        max_position_embeddings: 512,
        tie_word_embeddings: s.tied,
        attention_bias: s.bias,
        qk_norm: s.qk_norm,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// Random bf16 weights (so both backends see the same values), norms near 1.
fn synthetic_model(s: Shape, seed: u64) -> Model {
    let cfg = config(s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mat = |rows: usize, cols: usize| {
        let scale = 1.0 / (cols as f32).sqrt();
        let bytes: Vec<u8> = (0..rows * cols)
            .flat_map(|_| {
                bf16::from_f32(rng.random_range(-1.0f32..1.0) * scale * 1.7)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect();
        Tensor::owned(bytes, WeightDType::BF16, rows, cols)
    };
    let (h, q, kv, ff) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let embed = mat(cfg.vocab_size, h);
    let lm_head = if s.tied {
        embed.clone()
    } else {
        mat(cfg.vocab_size, h)
    };
    let mut layers = Vec::new();
    for _ in 0..cfg.num_layers {
        let (wq, wk, wv, wo) = (mat(q, h), mat(kv, h), mat(kv, h), mat(h, q));
        let (w_gate, w_up, w_down) = (mat(ff, h), mat(ff, h), mat(h, ff));
        layers.push(LayerWeights {
            attn_norm: vec![1.0; h],
            wq,
            wk,
            wv,
            wo,
            bq: None,
            bk: None,
            bv: None,
            q_norm: None,
            k_norm: None,
            ffn_norm: vec![1.0; h],
            w_gate,
            w_up,
            w_down,
        });
    }
    // Values exactly representable in bf16, so the upload loses nothing.
    let mut small = |n: usize, base: f32| -> Vec<f32> {
        (0..n)
            .map(|_| bf16::from_f32(base + rng.random_range(-0.25f32..0.25)).to_f32())
            .collect()
    };
    for l in &mut layers {
        l.attn_norm = small(h, 1.0);
        l.ffn_norm = small(h, 1.0);
        if s.bias {
            l.bq = Some(small(q, 0.0));
            l.bk = Some(small(kv, 0.0));
            l.bv = Some(small(kv, 0.0));
        }
        if s.qk_norm {
            l.q_norm = Some(small(cfg.head_dim, 1.0));
            l.k_norm = Some(small(cfg.head_dim, 1.0));
        }
    }
    let weights = ModelWeights {
        embed,
        layers,
        final_norm: small(h, 1.0),
        lm_head,
    };
    Model::new(cfg, weights, ActivationMode::Exact)
}

const SHAPES: [Shape; 4] = [
    // Llama-style GQA, tied embeddings.
    Shape {
        family: Family::Llama,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        bias: false,
        qk_norm: false,
        interleaved: false,
        tied: true,
    },
    // Qwen2: q/k/v biases, untied head.
    Shape {
        family: Family::Qwen2,
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        bias: true,
        qk_norm: false,
        interleaved: false,
        tied: false,
    },
    // Qwen3: q/k norm, head_dim 128 wider than hidden / heads.
    Shape {
        family: Family::Qwen3,
        heads: 4,
        kv_heads: 1,
        head_dim: 128,
        bias: false,
        qk_norm: true,
        interleaved: false,
        tied: true,
    },
    // MHA with GGUF-style interleaved RoPE, GQA group 3 (SmolLM-like).
    Shape {
        family: Family::Llama,
        heads: 6,
        kv_heads: 2,
        head_dim: 64,
        bias: false,
        qk_norm: false,
        interleaved: true,
        tied: false,
    },
];

fn options() -> CudaExecutorOptions {
    CudaExecutorOptions {
        gpu_memory_utilization: 0.05,
        max_batch_seqs: 8,
        max_batch_tokens: 256,
        max_model_len: Some(512),
        ..CudaExecutorOptions::default()
    }
}

/// ‖a − b‖ / ‖b‖ and whether the top tokens agree (when b's top-2 margin is clear).
fn compare(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    assert!(
        a.iter().all(|v| v.is_finite()),
        "{what}: non-finite GPU logits"
    );
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    let rel = (num / den.max(1e-30)).sqrt();
    // bf16 activations (8 significant bits) through a few layers.
    assert!(rel < 0.03, "{what}: relative L2 error {rel}");
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
    };
    let (top, top_v) = argmax(b);
    let second = b
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != top)
        .fold(f32::MIN, |m, (_, &x)| m.max(x));
    if top_v - second > 0.05 * top_v.abs().max(1.0) {
        assert_eq!(argmax(a).0, top, "{what}: top token differs");
    }
}

fn rows_match(gpu: &StepOutput, cpu: &StepOutput, n: usize, what: &str) {
    assert_eq!(gpu.rows, cpu.rows, "{what}: rows");
    for i in 0..n {
        match (gpu.logits(i), cpu.logits(i)) {
            (Some(g), Some(c)) => compare(g, c, &format!("{what} seq {i}")),
            (None, None) => {}
            _ => panic!("{what} seq {i}: one backend returned logits, the other not"),
        }
    }
}

fn step(
    gpu: &mut CudaExecutor,
    cpu: &mut CpuExecutor,
    batch: &Batch<'_>,
    what: &str,
) -> (StepOutput, StepOutput) {
    let g = gpu
        .execute(batch)
        .unwrap_or_else(|e| panic!("{what}: GPU: {e}"));
    let c = cpu
        .execute(batch)
        .unwrap_or_else(|e| panic!("{what}: CPU: {e}"));
    rows_match(&g, &c, batch.seqs.len(), what);
    (g, c)
}

/// Prompt, then decode steps, one sequence at a time and chunked.
#[test]
fn prefill_and_decode_logits_match_the_cpu_forward() {
    if !gpu_or_skip("prefill_and_decode_logits_match_the_cpu_forward") {
        return;
    }
    for (i, shape) in SHAPES.iter().enumerate() {
        let model = synthetic_model(*shape, 100 + i as u64);
        let mut gpu = CudaExecutor::from_model(&model, &options()).expect("CUDA executor");
        eprintln!("{shape:?}: {:?}", gpu.startup());
        let mut cpu = CpuExecutor::new(Arc::new(model.clone()), 16, 64);
        let prompt: Vec<u32> = (0..77).map(|j| (j * 37 + 11) % 1000).collect();
        // Scattered physical blocks so layout bugs show.
        let table: Vec<u32> = (0..8).map(|b| (3 + 5 * b) % 41).collect();
        // Prefill in two chunks (the second reads the first's cache), then decodes.
        for (start, end, want) in [(0, 40, false), (40, 77, true)] {
            let batch = Batch {
                seqs: vec![BatchSeq {
                    tokens: &prompt[start..end],
                    start_pos: start,
                    block_table: &table,
                    want_logits: want,
                }],
            };
            step(
                &mut gpu,
                &mut cpu,
                &batch,
                &format!("{shape:?} prefill {start}..{end}"),
            );
        }
        let mut next = 5u32;
        for pos in 77..90 {
            let tok = [next];
            let batch = Batch {
                seqs: vec![BatchSeq {
                    tokens: &tok,
                    start_pos: pos,
                    block_table: &table,
                    want_logits: true,
                }],
            };
            step(
                &mut gpu,
                &mut cpu,
                &batch,
                &format!("{shape:?} decode {pos}"),
            );
            next = (next * 31 + 7) % 1000;
        }
    }
}

/// One step with a decode, a first prefill chunk, a later chunk and an idle
/// sequence together, then an all-decode step of the same sequences.
#[test]
fn mixed_prefill_and_decode_batches_match_the_cpu_forward() {
    if !gpu_or_skip("mixed_prefill_and_decode_batches_match_the_cpu_forward") {
        return;
    }
    let model = synthetic_model(SHAPES[3], 7);
    let mut gpu = CudaExecutor::from_model(&model, &options()).expect("CUDA executor");
    let mut cpu = CpuExecutor::new(Arc::new(model.clone()), 16, 64);
    let toks: Vec<u32> = (0..200).map(|j| (j * 13 + 1) % 1000).collect();
    let (ta, tb, tc): (Vec<u32>, Vec<u32>, Vec<u32>) =
        ((0..6).collect(), (10..20).collect(), (30..40).collect());
    // Warm-up: A's prompt (20 tokens) and C's first chunk (33 tokens).
    let warm = Batch {
        seqs: vec![
            BatchSeq {
                tokens: &toks[..20],
                start_pos: 0,
                block_table: &ta,
                want_logits: true,
            },
            BatchSeq {
                tokens: &toks[100..133],
                start_pos: 0,
                block_table: &tc,
                want_logits: false,
            },
        ],
    };
    step(&mut gpu, &mut cpu, &warm, "warm-up");
    let mixed = Batch {
        seqs: vec![
            // A decodes.
            BatchSeq {
                tokens: &toks[20..21],
                start_pos: 20,
                block_table: &ta,
                want_logits: true,
            },
            // B's whole prompt.
            BatchSeq {
                tokens: &toks[50..95],
                start_pos: 0,
                block_table: &tb,
                want_logits: true,
            },
            // Nothing for this one this step.
            BatchSeq {
                tokens: &[],
                start_pos: 0,
                block_table: &[],
                want_logits: true,
            },
            // C's second chunk.
            BatchSeq {
                tokens: &toks[133..160],
                start_pos: 33,
                block_table: &tc,
                want_logits: true,
            },
        ],
    };
    step(&mut gpu, &mut cpu, &mixed, "mixed step");
    let decodes = Batch {
        seqs: vec![
            BatchSeq {
                tokens: &toks[21..22],
                start_pos: 21,
                block_table: &ta,
                want_logits: true,
            },
            BatchSeq {
                tokens: &toks[95..96],
                start_pos: 45,
                block_table: &tb,
                want_logits: true,
            },
            BatchSeq {
                tokens: &toks[160..161],
                start_pos: 60,
                block_table: &tc,
                want_logits: false,
            },
        ],
    };
    step(&mut gpu, &mut cpu, &decodes, "all-decode step");
}

/// Bad batches are errors on the host; the executor keeps working after them.
#[test]
fn bad_batches_are_refused_and_the_executor_carries_on() {
    if !gpu_or_skip("bad_batches_are_refused_and_the_executor_carries_on") {
        return;
    }
    let model = synthetic_model(SHAPES[0], 9);
    let mut gpu = CudaExecutor::from_model(&model, &options()).expect("CUDA executor");
    let blocks = gpu.capabilities().num_kv_blocks as u32;
    for (tokens, table, what) in [
        (vec![1000u32], vec![0u32], "token id 1000"),
        (vec![1], vec![blocks], "outside the cache"),
        (vec![1; 17], vec![0], "block table covers"),
    ] {
        let batch = Batch {
            seqs: vec![BatchSeq {
                tokens: &tokens,
                start_pos: 0,
                block_table: &table,
                want_logits: true,
            }],
        };
        let e = gpu.execute(&batch).expect_err(what).to_string();
        assert!(e.contains(what), "{e}");
    }
    let ok = Batch {
        seqs: vec![BatchSeq {
            tokens: &[1, 2, 3],
            start_pos: 0,
            block_table: &[0],
            want_logits: true,
        }],
    };
    let out = gpu.execute(&ok).expect("a good batch after bad ones");
    assert!(out.logits(0).expect("row").iter().all(|v| v.is_finite()));
}

/// The default model (Q4_1 GGUF, dequantized to bf16 on upload) when cached.
#[test]
fn default_model_logits_match_the_cpu_forward() {
    if !gpu_or_skip("default_model_logits_match_the_cpu_forward") {
        return;
    }
    let path = factory_models::default_model::cached_path();
    if !path.is_file() {
        loud("SKIPPED default_model_logits_match_the_cpu_forward: default model not cached");
        return;
    }
    let model = factory_models::open_model(&path, ActivationMode::Exact)
        .expect("default model")
        .model;
    let mut gpu = CudaExecutor::from_model(&model, &options()).expect("CUDA executor");
    eprintln!("default model: {:?}", gpu.startup());
    let mut cpu = CpuExecutor::new(Arc::new(model), 16, 64);
    let prompt: Vec<u32> = (0..50).map(|j| (j * 997 + 3) % 49_000).collect();
    let table: Vec<u32> = (0..8).collect();
    let batch = Batch {
        seqs: vec![BatchSeq {
            tokens: &prompt,
            start_pos: 0,
            block_table: &table,
            want_logits: true,
        }],
    };
    step(&mut gpu, &mut cpu, &batch, "default model prefill");
    for pos in 50..55 {
        let batch = Batch {
            seqs: vec![BatchSeq {
                tokens: &prompt[pos - 50..pos - 49],
                start_pos: pos,
                block_table: &table,
                want_logits: true,
            }],
        };
        step(
            &mut gpu,
            &mut cpu,
            &batch,
            &format!("default model decode {pos}"),
        );
    }
}

/// Random weights for an 8B-shaped model come up quickly and run a step.
#[test]
fn random_weights_of_a_llama_8b_shape_initialise_on_the_device() {
    if !gpu_or_skip("random_weights_of_a_llama_8b_shape_initialise_on_the_device") {
        return;
    }
    let cfg = ModelConfig {
        vocab_size: 128_256,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_layers: 32,
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        rope_theta: 500_000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: false,
        ..config(SHAPES[0])
    };
    let opts = CudaExecutorOptions {
        max_model_len: Some(4096),
        ..CudaExecutorOptions::default()
    };
    let mut gpu = CudaExecutor::random(cfg, 1, &opts).expect("random 8B");
    let s = gpu.startup().clone();
    eprintln!("8B random: {s:?}");
    assert!(s.weight_bytes > 15_000_000_000, "{}", s.weight_bytes);
    assert!(s.kv_blocks >= 4096 / 16);
    let table: Vec<u32> = (0..4).collect();
    let batch = Batch {
        seqs: vec![BatchSeq {
            tokens: &[1, 2, 3, 4, 5],
            start_pos: 0,
            block_table: &table,
            want_logits: true,
        }],
    };
    let out = gpu.execute(&batch).expect("step");
    assert!(out.logits(0).expect("row").iter().all(|v| v.is_finite()));
}

/// The golden fixtures (head_dim 16 and 32) are refused with a clear error
/// before any device is touched: the attention kernels exist for 64 and 128.
#[test]
fn fixture_models_with_small_heads_are_refused_clearly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/llama_gqa");
    let model = factory_models::open_model(&dir, ActivationMode::Exact)
        .expect("fixture")
        .model;
    let e = CudaExecutor::from_model(&model, &options())
        .expect_err("head_dim 16")
        .to_string();
    assert!(e.contains("head_dim 16 is not supported"), "{e}");
}
