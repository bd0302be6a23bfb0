//! Shared helpers: an engine over the fake executor and a way to run
//! requests to completion.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use factory_engine::testing::{fake_next_token, FakeExecutor};
use factory_engine::{
    EngineConfig, EngineCore, GenerateRequest, SchedulerConfig, StopReason, TokenEvent,
};
use factory_models::tokenizer::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub const VOCAB: usize = 1000;
/// Ordinary (non-special) tokens of the fixture tokenizer.
pub const TOKENS: std::ops::Range<u32> = 5..1000;

pub fn tokenizer() -> Arc<Tokenizer> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/tokenizer_spm_tiny_hf");
    Arc::new(
        Tokenizer::from_file(
            &dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .expect("fixture tokenizer"),
    )
}

#[derive(Debug, Clone)]
pub struct Setup {
    pub num_blocks: usize,
    pub block_size: usize,
    pub budget: usize,
    pub max_seqs: usize,
    pub prefix_caching: bool,
    pub max_model_len: usize,
    pub aging_steps: u64,
    pub mix: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            num_blocks: 512,
            block_size: 4,
            budget: 64,
            max_seqs: 64,
            prefix_caching: true,
            max_model_len: 4096,
            aging_steps: 16,
            mix: true,
        }
    }
}

pub fn engine(s: &Setup) -> EngineCore {
    let mut fake = FakeExecutor::new(VOCAB, s.block_size, s.num_blocks, s.max_model_len);
    fake.token_range = TOKENS;
    fake.capabilities_mut().mix_prefill_and_decode = s.mix;
    EngineCore::new(
        Box::new(fake),
        tokenizer(),
        vec![2],
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: s.budget,
                max_num_seqs: s.max_seqs,
                mix_prefill_and_decode: s.mix,
                aging_steps: s.aging_steps,
            },
            prefix_caching: s.prefix_caching,
        },
    )
}

/// What one request produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub tokens: Vec<u32>,
    pub text: String,
    pub reason: Option<StopReason>,
    pub error: Option<String>,
    pub cached_prompt_tokens: usize,
    pub queue_time: std::time::Duration,
}

/// Drains whatever `rx` holds into `o`.
pub fn drain(rx: &mut UnboundedReceiver<TokenEvent>, o: &mut Outcome) {
    while let Ok(ev) = rx.try_recv() {
        match ev {
            TokenEvent::Token { id, text, .. } => {
                o.tokens.push(id);
                o.text.push_str(&text);
            }
            TokenEvent::Finished { reason, usage } => {
                o.reason = Some(reason);
                o.cached_prompt_tokens = usage.cached_prompt_tokens;
                o.queue_time = usage.queue_time;
            }
            TokenEvent::Error { message } => o.error = Some(message),
        }
    }
}

/// Submits every request at once and steps until all are done.
pub fn run_together(core: &mut EngineCore, reqs: &[GenerateRequest]) -> Vec<Outcome> {
    let mut rxs = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let (tx, rx) = unbounded_channel();
        core.add_request(i as u64 + 1_000, r.clone(), tx)
            .expect("request accepted");
        rxs.push(rx);
    }
    let mut outs = vec![Outcome::default(); reqs.len()];
    let mut guard = 0;
    while core.has_work() {
        core.step();
        core.scheduler().check_invariants().expect("invariants");
        guard += 1;
        assert!(guard < 100_000, "engine does not finish");
    }
    for (rx, o) in rxs.iter_mut().zip(&mut outs) {
        drain(rx, o);
    }
    outs
}

/// The fake model's greedy continuation of `prompt`.
pub fn expected(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut hist = prompt.to_vec();
    for _ in 0..max_tokens {
        let t = fake_next_token(&hist, &TOKENS);
        hist.push(t);
    }
    hist[prompt.len()..].to_vec()
}

/// Deterministic pseudo-random prompt.
pub fn prompt(seed: u64, len: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            TOKENS.start + (x % u64::from(TOKENS.end - TOKENS.start)) as u32
        })
        .collect()
}
