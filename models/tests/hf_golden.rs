//! The forward pass against transformers' logits on small random models of
//! every supported family (fixtures made by scripts/make_fixtures.py).

use std::path::{Path, PathBuf};

use factory_kernels::cpu::ActivationMode;
use factory_models::{open_model, KvCache, KvDType, LogitsRequest, Model, SeqInput};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    weights_dtype: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_ids: Vec<u32>,
    prefill_logits: Vec<Vec<f32>>,
    decode_ids: Vec<u32>,
    decode_logits: Vec<Vec<f32>>,
}

const FIXTURES: [&str; 6] = [
    "llama_gqa",
    "llama2_mha",
    "llama3_scaled",
    "mistral",
    "qwen2_bias",
    "qwen3_qknorm",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> (Model, Expected) {
    let dir = fixture(name);
    let model = open_model(&dir, ActivationMode::Exact)
        .expect("fixture loads")
        .model;
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    (
        model,
        serde_json::from_str(&text).expect("expected.json parses"),
    )
}

/// Largest absolute difference, and the reference's largest magnitude.
fn compare(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (diff, scale)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let (diff, scale) = compare(got, want);
    // f32 activations throughout; transformers rounds in a different order.
    assert!(
        diff <= 2e-4 * scale.max(1.0),
        "{what}: max |diff| {diff} (logits up to {scale})"
    );
}

/// Runs prompt then decodes with a block table of scattered physical blocks.
fn run_case(
    model: &Model,
    case: &Case,
    block_size: usize,
    chunk: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    run_case_with(model, case, block_size, chunk, KvDType::F32)
}

/// [`run_case`] over a `dtype` KV cache.
fn run_case_with(
    model: &Model,
    case: &Case,
    block_size: usize,
    chunk: usize,
    dtype: KvDType,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let total = case.prompt_ids.len() + case.decode_ids.len();
    let blocks = total.div_ceil(block_size);
    // Physical blocks in reverse order with gaps, so layout bugs show.
    let table: Vec<u32> = (0..blocks).map(|i| (2 * (blocks - i)) as u32).collect();
    let mut cache = KvCache::with_dtype(&model.config, block_size, 2 * blocks + 2, dtype);
    let mut prefill = Vec::new();
    for (c, ids) in case.prompt_ids.chunks(chunk).enumerate() {
        let out = model
            .forward(
                &[SeqInput {
                    tokens: ids,
                    start_pos: c * chunk,
                    block_table: &table,
                    logits: LogitsRequest::All,
                }],
                &mut cache,
            )
            .expect("forward");
        prefill.extend((0..ids.len()).map(|i| out.row(0, i).to_vec()));
    }
    let mut decode = Vec::new();
    for (i, &id) in case.decode_ids.iter().enumerate() {
        let pos = case.prompt_ids.len() + i;
        let out = model
            .forward(
                &[SeqInput {
                    tokens: &[id],
                    start_pos: pos,
                    block_table: &table,
                    logits: LogitsRequest::Last,
                }],
                &mut cache,
            )
            .expect("forward");
        decode.push(out.last(0).expect("logits").to_vec());
    }
    (prefill, decode)
}

#[test]
fn prefill_and_decode_logits_match_transformers_for_every_family() {
    for name in FIXTURES {
        let (model, exp) = load(name);
        for (ci, case) in exp.cases.iter().enumerate() {
            let (prefill, decode) = run_case(&model, case, 16, usize::MAX);
            for (p, (got, want)) in prefill.iter().zip(&case.prefill_logits).enumerate() {
                assert_close(
                    got,
                    want,
                    &format!("{name} ({}) case {ci} prefill pos {p}", exp.weights_dtype),
                );
            }
            for (s, (got, want)) in decode.iter().zip(&case.decode_logits).enumerate() {
                assert_close(got, want, &format!("{name} case {ci} decode step {s}"));
            }
        }
    }
}

/// `|got - want| / |want|` (L2 norms).
fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn an_f16_kv_cache_stays_close_to_the_f32_cache_for_every_family() {
    // Prefill rows attend to themselves through the cache too, so both
    // prefill and decode logits carry the f16 rounding of K/V.
    let mut worst = 0f64;
    for name in FIXTURES {
        let (model, exp) = load(name);
        for case in &exp.cases {
            let (p32, d32) = run_case(&model, case, 16, usize::MAX);
            let (p16, d16) = run_case_with(&model, case, 16, usize::MAX, KvDType::F16);
            for (a, b) in p16.iter().chain(&d16).zip(p32.iter().chain(&d32)) {
                let r = relative_l2(a, b);
                assert!(r < 2e-3, "{name}: relative L2 {r}");
                worst = worst.max(r);
            }
        }
    }
    eprintln!("f16 vs f32 KV cache on the fixtures: largest relative L2 difference {worst:.1e}");
}

#[test]
fn chunked_prefill_and_small_blocks_give_the_same_logits() {
    for name in ["llama_gqa", "qwen3_qknorm"] {
        let (model, exp) = load(name);
        let case = exp
            .cases
            .iter()
            .max_by_key(|c| c.prompt_ids.len())
            .expect("a case");
        let (p1, d1) = run_case(&model, case, 16, usize::MAX);
        let (p2, d2) = run_case(&model, case, 4, 7);
        for (a, b) in p1.iter().chain(&d1).zip(p2.iter().chain(&d2)) {
            let (diff, scale) = compare(a, b);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{name}: chunked differs by {diff}"
            );
        }
    }
}

#[test]
fn a_batch_of_sequences_equals_each_sequence_alone() {
    let (model, exp) = load("mistral");
    let (a, b) = (&exp.cases[0], &exp.cases[1]);
    let bs = 16;
    let ta: Vec<u32> = (0..4).collect();
    let tb: Vec<u32> = (4..8).collect();
    let mut cache = KvCache::new(&model.config, bs, 8);
    let out = model
        .forward(
            &[
                SeqInput {
                    tokens: &a.prompt_ids,
                    start_pos: 0,
                    block_table: &ta,
                    logits: LogitsRequest::Last,
                },
                SeqInput {
                    tokens: &b.prompt_ids,
                    start_pos: 0,
                    block_table: &tb,
                    logits: LogitsRequest::All,
                },
            ],
            &mut cache,
        )
        .expect("forward");
    assert_close(
        out.last(0).expect("a"),
        a.prefill_logits.last().expect("a"),
        "batched a",
    );
    for (i, want) in b.prefill_logits.iter().enumerate() {
        assert_close(out.row(1, i), want, "batched b");
    }
    // Then a mixed step: a decodes one token while b decodes one too.
    let out = model
        .forward(
            &[
                SeqInput {
                    tokens: &a.decode_ids[..1],
                    start_pos: a.prompt_ids.len(),
                    block_table: &ta,
                    logits: LogitsRequest::Last,
                },
                SeqInput {
                    tokens: &b.decode_ids[..1],
                    start_pos: b.prompt_ids.len(),
                    block_table: &tb,
                    logits: LogitsRequest::Last,
                },
            ],
            &mut cache,
        )
        .expect("forward");
    assert_close(
        out.last(0).expect("a"),
        &a.decode_logits[0],
        "batched decode a",
    );
    assert_close(
        out.last(1).expect("b"),
        &b.decode_logits[0],
        "batched decode b",
    );
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let (model, _) = load("llama_gqa");
    let mut cache = KvCache::new(&model.config, 16, 2);
    let run = |cache: &mut KvCache, tokens: &[u32], start: usize, table: &[u32]| {
        model
            .forward(
                &[SeqInput {
                    tokens,
                    start_pos: start,
                    block_table: table,
                    logits: LogitsRequest::Last,
                }],
                cache,
            )
            .unwrap_err()
            .to_string()
    };
    assert!(run(&mut cache, &[9999], 0, &[0]).contains("outside the vocabulary"));
    assert!(run(&mut cache, &[1; 20], 0, &[0]).contains("block table covers 16 tokens, 20 needed"));
    assert!(run(&mut cache, &[1], 0, &[7]).contains("outside the cache"));
    assert!(run(&mut cache, &[1], 256, &[0; 17]).contains("context limit"));
}
