//! gpu_offline_bench runs the engine on random-weight models with the small
//! fixture tokenizer (1000 tokens) beside a 128k-token model: sampled ids past
//! the tokenizer's vocabulary must not break detokenization. Checked here on
//! the CPU with the engine's fake executor drawing only such ids.

use std::path::PathBuf;
use std::sync::Arc;

use factory_engine::testing::FakeExecutor;
use factory_engine::{
    EngineConfig, EngineCore, GenerateRequest, SchedulerConfig, StopReason, TokenEvent,
};
use factory_models::tokenizer::Tokenizer;
use tokio::sync::mpsc::unbounded_channel;

const MODEL_VOCAB: usize = 128_256;

#[test]
fn ids_past_the_tokenizer_vocabulary_give_empty_text_and_full_outputs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/tokenizer_spm_tiny_hf");
    let tok = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .expect("fixture tokenizer");
    let tok_vocab = tok.vocab_size() as u32;
    assert!(tok_vocab < 2000, "the fixture is the small tokenizer");
    let mut fake = FakeExecutor::new(MODEL_VOCAB, 16, 256, 1024);
    // Only ids the tokenizer does not know.
    fake.token_range = tok_vocab..MODEL_VOCAB as u32;
    let mut core = EngineCore::new(
        Box::new(fake),
        Arc::new(tok),
        Vec::new(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: 256,
                max_num_seqs: 8,
                ..Default::default()
            },
            prefix_caching: true,
        },
    );
    let (n, out_len) = (8usize, 40usize);
    let mut rxs = Vec::new();
    for i in 0..n {
        let (tx, rx) = unbounded_channel();
        // Prompts use ids past the tokenizer too, as the benchmark's do.
        let prompt: Vec<u32> = (0..100).map(|j| 50_000 + (i * 100 + j) as u32).collect();
        let req = GenerateRequest {
            ignore_eos: true,
            ..GenerateRequest::new(prompt, out_len)
        };
        core.add_request(i as u64, req, tx).expect("accepted");
        rxs.push(rx);
    }
    let mut steps = 0;
    while core.has_work() {
        core.step();
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    for (i, rx) in rxs.iter_mut().enumerate() {
        let (mut ids, mut text, mut finished) = (Vec::new(), String::new(), None);
        while let Ok(ev) = rx.try_recv() {
            match ev {
                TokenEvent::Token { id, text: t, .. } => {
                    ids.push(id);
                    text.push_str(&t);
                }
                TokenEvent::Finished { reason, usage } => {
                    finished = Some((reason, usage.output_tokens))
                }
                TokenEvent::Error { message } => panic!("request {i}: {message}"),
            }
        }
        assert_eq!(ids.len(), out_len, "request {i}");
        assert!(
            ids.iter().all(|&id| id >= tok_vocab),
            "request {i}: {ids:?}"
        );
        assert_eq!(text, "", "request {i}: unknown ids decode to nothing");
        assert_eq!(
            finished,
            Some((StopReason::MaxTokens, out_len)),
            "request {i}"
        );
    }
}
