//! The engine on the real default model (SmolLM2-135M-Instruct, Q4_1, exact
//! mode): batching, prefix caching and preemption change nothing in greedy
//! output. The model is fetched by `scripts/test.sh`; these tests fail
//! (they do not skip) when it is missing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{drain, Outcome};
use factory_engine::executor::Executor;
use factory_engine::{
    CpuExecutor, EngineConfig, EngineCore, GenerateRequest, SchedulerConfig, StopReason,
};
use factory_kernels::cpu::{ActivationMode, KvDType};
use factory_models::bundle::ModelBundle;
use tokio::sync::mpsc::unbounded_channel;

struct Fixture {
    bundle: ModelBundle,
    model: Arc<factory_models::Model>,
}

fn fixture() -> Fixture {
    let path = factory_models::default_model::cached_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}; run `cargo run -p factory-server --bin factory -- fetch-default-model` (scripts/test.sh does)",
        path.display()
    );
    let bundle = ModelBundle::load(&path, ActivationMode::Exact).expect("default model loads");
    let model = Arc::new(bundle.model.clone());
    Fixture { bundle, model }
}

fn engine(f: &Fixture, num_blocks: usize, prefix_caching: bool, budget: usize) -> EngineCore {
    engine_over(
        f,
        CpuExecutor::new(f.model.clone(), 16, num_blocks),
        prefix_caching,
        budget,
    )
}

fn engine_over(
    f: &Fixture,
    executor: CpuExecutor,
    prefix_caching: bool,
    budget: usize,
) -> EngineCore {
    EngineCore::new(
        Box::new(executor),
        Arc::new(f.bundle.tokenizer.clone()),
        f.bundle.eos_token_ids.clone(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: budget,
                max_num_seqs: 64,
                ..SchedulerConfig::default()
            },
            prefix_caching,
        },
    )
}

fn chat(f: &Fixture, user: &str) -> Vec<u32> {
    let t = f.bundle.chat_template.as_ref().expect("template");
    let text = t.render_simple(&[("user", user)], true).unwrap();
    f.bundle.tokenizer.encode(&text, false).unwrap()
}

const TOPICS: [&str; 8] = [
    "the ocean",
    "a city at night",
    "learning to cook",
    "the history of bridges",
    "why the sky is blue",
    "a cat that likes music",
    "planting a garden",
    "the planets of the solar system",
];

/// 32 chat prompts of mixed lengths (about 40 to 200 tokens).
fn prompts(f: &Fixture) -> Vec<Vec<u32>> {
    (0..32)
        .map(|i| {
            let mut user = format!("Tell me something about {}.", TOPICS[i % 8]);
            for k in 0..(i * 5) % 17 {
                user.push_str(&format!(
                    " Please also mention detail number {k} and keep it short."
                ));
            }
            chat(f, &user)
        })
        .collect()
}

/// Runs `reqs` together to completion; also returns the tokens computed.
fn run(core: &mut EngineCore, reqs: &[GenerateRequest]) -> (Vec<Outcome>, usize, Duration) {
    let mut rxs = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let (tx, rx) = unbounded_channel();
        let id = core.stats().steps * 1000 + i as u64;
        core.add_request(id, r.clone(), tx).expect("accepted");
        rxs.push(rx);
    }
    let mut computed = 0;
    let mut execute = Duration::ZERO;
    while core.has_work() {
        let r = core.step();
        computed += r.tokens;
        execute += r.execute;
        core.scheduler().check_invariants().expect("invariants");
    }
    let outs = rxs
        .iter_mut()
        .map(|rx| {
            let mut o = Outcome::default();
            drain(rx, &mut o);
            assert_eq!(o.error, None);
            o
        })
        .collect();
    (outs, computed, execute)
}

#[test]
fn thirty_two_prompts_batched_equal_each_alone_and_survive_preemption() {
    let f = fixture();
    let reqs: Vec<_> = prompts(&f)
        .into_iter()
        .map(|p| GenerateRequest::new(p, 12))
        .collect();
    let alone: Vec<Outcome> = reqs
        .iter()
        .map(|r| {
            run(&mut engine(&f, 64, true, 512), std::slice::from_ref(r))
                .0
                .remove(0)
        })
        .collect();
    let (together, _, _) = run(&mut engine(&f, 2048, true, 512), &reqs);
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.tokens, t.tokens, "prompt {i}: batched output differs");
        assert_eq!(a.text, t.text);
        assert!(matches!(
            a.reason,
            Some(StopReason::MaxTokens | StopReason::EndTurn)
        ));
    }
    assert!(
        alone.iter().any(|o| o.text.len() > 20),
        "the model said nothing"
    );

    // A cache too small for all of them at once: some are preempted and
    // recomputed, and still say exactly the same.
    let mut tight = engine(&f, 40, true, 256);
    let (outs, _, _) = run(&mut tight, &reqs);
    assert!(tight.stats().preemptions > 0, "expected preemptions");
    for (i, (a, t)) in alone.iter().zip(&outs).enumerate() {
        assert_eq!(
            a.tokens, t.tokens,
            "prompt {i}: output changed under preemption"
        );
    }
    assert_eq!(tight.scheduler().blocks().num_free(), 40);
}

#[test]
fn prefix_cache_on_and_off_agree_and_a_long_shared_prefix_is_skipped() {
    let f = fixture();
    let doc =
        "The harbour town wakes early. Fishing boats leave before dawn, gulls follow them out, \
               and the market fills with crates of silver fish by seven. "
            .repeat(12);
    let ask = |q: &str| GenerateRequest::new(chat(&f, &format!("{doc}\n\nQuestion: {q}")), 10);
    let first = ask("When do the boats leave?");
    let second = ask("What follows the boats?");

    let mut on = engine(&f, 256, true, 512);
    let mut off = engine(&f, 256, false, 512);
    let (a1, _, _) = run(&mut on, std::slice::from_ref(&first));
    let (a2, on_tokens, on_time) = run(&mut on, std::slice::from_ref(&second));
    let (b1, _, _) = run(&mut off, std::slice::from_ref(&first));
    let (b2, off_tokens, off_time) = run(&mut off, std::slice::from_ref(&second));
    assert_eq!(a1[0].tokens, b1[0].tokens);
    assert_eq!(
        a2[0].tokens, b2[0].tokens,
        "prefix caching changed the output"
    );

    let prompt_len = second.prompt.len();
    assert!(prompt_len > 300, "prompt only {prompt_len} tokens");
    let hit = a2[0].cached_prompt_tokens;
    assert!(
        hit >= prompt_len - 40,
        "only {hit} of {prompt_len} prompt tokens cached"
    );
    assert_eq!(on.stats().prefix.hit_tokens as usize, hit);
    assert_eq!(b2[0].cached_prompt_tokens, 0);
    assert_eq!(on_tokens, off_tokens - hit);
    // Far fewer tokens computed: the prefill must take clearly less time too
    // (the ratio is ~10x; half leaves room for a noisy machine).
    assert!(
        on_time < off_time / 2,
        "cached prefill {on_time:?} vs uncached {off_time:?}"
    );
}

#[test]
fn an_f16_kv_cache_holds_twice_the_tokens_batches_invariantly_and_mostly_agrees_with_f32() {
    let f = fixture();
    let budget = 64 << 20;
    let blocks = |dtype| {
        CpuExecutor::with_memory_budget(f.model.clone(), 16, budget, usize::MAX, dtype)
            .expect("fits")
            .capabilities()
            .num_kv_blocks
    };
    assert_eq!(blocks(KvDType::F16), 2 * blocks(KvDType::F32));

    let f16_engine = |num_blocks| {
        let ex = CpuExecutor::with_kv_dtype(f.model.clone(), 16, num_blocks, KvDType::F16);
        assert_eq!(ex.kv_dtype(), KvDType::F16);
        engine_over(&f, ex, true, 512)
    };
    let reqs: Vec<_> = prompts(&f)
        .into_iter()
        .step_by(4)
        .map(|p| GenerateRequest::new(p, 12))
        .collect();
    let (together, _, _) = run(&mut f16_engine(512), &reqs);
    for (i, (r, t)) in reqs.iter().zip(&together).enumerate() {
        let (alone, _, _) = run(&mut f16_engine(64), std::slice::from_ref(r));
        assert_eq!(
            alone[0].tokens, t.tokens,
            "prompt {i}: batched output differs"
        );
    }
    // Rounding K/V to f16 may flip a near tie; most outputs stay the same.
    let (f32_out, _, _) = run(&mut engine(&f, 512, true, 512), &reqs);
    let same = f32_out
        .iter()
        .zip(&together)
        .filter(|(a, b)| a.tokens == b.tokens)
        .count();
    eprintln!(
        "f16 vs f32 KV cache: {same} of {} greedy outputs identical",
        reqs.len()
    );
    assert!(
        same * 4 >= reqs.len() * 3,
        "only {same} of {} agree",
        reqs.len()
    );
}
