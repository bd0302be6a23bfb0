//! Engine behaviour over the fake model: batching, chunked prefill, prefix
//! caching, preemption, aborts, starvation and stop rules. The fake derives
//! each token from the whole history it reads back through the block
//! tables, so any bookkeeping mistake shows up as a wrong token.

mod common;

use common::*;
use factory_engine::{GenerateRequest, SamplingParams, StopReason, SubmitError};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tokio::sync::mpsc::unbounded_channel;

fn mixed_requests(n: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| {
            let len = 1 + (i * 37) % 150;
            GenerateRequest::new(prompt(i as u64, len), 3 + i % 20)
        })
        .collect()
}

#[test]
fn thirty_two_mixed_requests_batched_equal_each_alone() {
    let reqs = mixed_requests(32);
    let setup = Setup::default();
    let together = run_together(&mut engine(&setup), &reqs);
    for (r, o) in reqs.iter().zip(&together) {
        let alone = run_together(&mut engine(&setup), std::slice::from_ref(r));
        assert_eq!(o.tokens, alone[0].tokens);
        assert_eq!(o.tokens, expected(&r.prompt, r.max_tokens));
        assert_eq!(o.reason, Some(StopReason::MaxTokens));
        assert_eq!(o.error, None);
    }
}

#[test]
fn prefix_cache_on_and_off_agree_and_a_shared_prefix_hits() {
    let base = prompt(7, 200);
    let reqs: Vec<_> = (0..6)
        .map(|i| {
            let mut p = base.clone();
            p.extend(prompt(100 + i, 10 + i as usize));
            GenerateRequest::new(p, 8)
        })
        .collect();
    let on = Setup::default();
    let off = Setup {
        prefix_caching: false,
        ..Setup::default()
    };
    let a = run_together(&mut engine(&on), &reqs);
    let b = run_together(&mut engine(&off), &reqs);
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(
            (&a.tokens, &a.text, &a.reason),
            (&b.tokens, &b.text, &b.reason)
        );
        assert_eq!(b.cached_prompt_tokens, 0);
    }

    // One request first, then another sharing its 200-token prefix.
    let mut core = engine(&on);
    let first = run_together(&mut core, &reqs[..1]);
    let computed_before = core.stats().prefix;
    let second = run_together(&mut core, &reqs[1..2]);
    assert_eq!(first[0].cached_prompt_tokens, 0);
    assert_eq!(second[0].cached_prompt_tokens, 200);
    let stats = core.stats().prefix;
    assert_eq!(stats.hit_tokens - computed_before.hit_tokens, 200);
    assert_eq!(second[0].tokens, expected(&reqs[1].prompt, 8));
}

#[test]
fn a_shared_prefix_prefill_computes_fewer_tokens() {
    let base = prompt(9, 120);
    let mut p2 = base.clone();
    p2.extend([7, 8, 9]);
    // Tokens the second request's steps compute, with and without the cache.
    let run = |prefix_caching: bool| {
        let mut core = engine(&Setup {
            prefix_caching,
            ..Setup::default()
        });
        run_together(&mut core, &[GenerateRequest::new(base.clone(), 4)]);
        let (tx, mut rx) = unbounded_channel();
        core.add_request(99, GenerateRequest::new(p2.clone(), 4), tx)
            .unwrap();
        let mut computed = 0;
        while core.has_work() {
            computed += core.step().tokens;
        }
        let mut o = Outcome::default();
        drain(&mut rx, &mut o);
        (computed, o)
    };
    let (on, out_on) = run(true);
    let (off, out_off) = run(false);
    assert_eq!(out_on.tokens, out_off.tokens);
    // 123 prompt tokens + 3 decodes without the cache; the 120 cached ones
    // (30 blocks of 4) are skipped with it.
    assert_eq!(off, 126);
    assert_eq!(on, 6);
}

#[test]
fn a_tight_kv_budget_preempts_yet_every_request_completes_unchanged() {
    let reqs = mixed_requests(24);
    let setup = Setup {
        num_blocks: 60,
        ..Setup::default()
    };
    let mut core = engine(&setup);
    let outs = run_together(&mut core, &reqs);
    for (r, o) in reqs.iter().zip(&outs) {
        assert_eq!(o.error, None);
        assert_eq!(o.tokens, expected(&r.prompt, r.max_tokens));
    }
    assert!(core.stats().preemptions > 0, "expected preemptions");
    assert_eq!(core.scheduler().blocks().num_free(), 60);
}

#[test]
fn steps_without_mixing_still_finish_everything() {
    let reqs = mixed_requests(12);
    let setup = Setup {
        mix: false,
        ..Setup::default()
    };
    let outs = run_together(&mut engine(&setup), &reqs);
    for (r, o) in reqs.iter().zip(&outs) {
        assert_eq!(o.tokens, expected(&r.prompt, r.max_tokens));
    }
}

#[test]
fn a_dropped_stream_frees_its_blocks_at_the_next_step() {
    let setup = Setup::default();
    let mut core = engine(&setup);
    let (tx, rx) = unbounded_channel();
    core.add_request(1, GenerateRequest::new(prompt(1, 40), 100), tx)
        .unwrap();
    core.step();
    core.step();
    assert!(core.scheduler().blocks().num_free() < setup.num_blocks);
    drop(rx);
    core.step();
    assert!(!core.has_work());
    assert_eq!(core.aborted(), 1);
    assert_eq!(core.scheduler().blocks().num_free(), setup.num_blocks);
    core.scheduler().check_invariants().unwrap();
}

#[test]
fn queue_time_runs_from_submission_to_first_scheduling() {
    // One slot: the second request waits until the first is done.
    let mut core = engine(&Setup {
        max_seqs: 1,
        ..Setup::default()
    });
    let submitted = Instant::now();
    let (tx_a, mut rx_a) = unbounded_channel();
    let (tx_b, mut rx_b) = unbounded_channel();
    core.add_request_at(1, GenerateRequest::new(prompt(1, 20), 12), tx_a, submitted)
        .unwrap();
    core.add_request_at(2, GenerateRequest::new(prompt(2, 20), 3), tx_b, submitted)
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let first_step_done = {
        core.step();
        Instant::now()
    };
    let (mut a, mut b) = (Outcome::default(), Outcome::default());
    let mut a_finished_at = None;
    while core.has_work() {
        core.step();
        drain(&mut rx_a, &mut a);
        if a.reason.is_some() {
            a_finished_at.get_or_insert_with(Instant::now);
        }
    }
    drain(&mut rx_b, &mut b);
    let (qa, qb) = (a.queue_time, b.queue_time);
    // A ran in the first step, after the 20 ms pause.
    assert!(qa >= Duration::from_millis(20), "{qa:?}");
    assert!(qa <= first_step_done - submitted, "{qa:?}");
    // B was first scheduled only after A finished.
    let a_done = a_finished_at.expect("A finished") - submitted;
    assert!(qb >= a_done, "{qb:?} < {a_done:?}");
    assert_eq!(b.reason, Some(StopReason::MaxTokens));
}

#[test]
fn a_low_priority_request_finishes_under_constant_load() {
    // Four slots, a steady stream of priority-0 requests, and one at
    // priority 3 arriving at step 10. Aging lifts it by one level every 16
    // waiting steps, so after 48 steps it ranks with the newcomers and, being
    // older, goes first: it must finish within 48 + 100 steps of arriving.
    let run = |aging_steps: u64| -> Option<u64> {
        let setup = Setup {
            max_seqs: 4,
            aging_steps,
            ..Setup::default()
        };
        let mut core = engine(&setup);
        let mut keep = Vec::new();
        let (tx, mut rx) = unbounded_channel();
        let mut next_id = 0;
        for step in 0..600u64 {
            while core.scheduler().num_waiting() < 6 {
                let (t, r) = unbounded_channel();
                core.add_request(next_id, GenerateRequest::new(prompt(next_id, 8), 8), t)
                    .unwrap();
                keep.push(r);
                next_id += 1;
            }
            if step == 10 {
                let mut req = GenerateRequest::new(prompt(999, 8), 8);
                req.priority = 3;
                core.add_request(1_000_000, req, tx.clone()).unwrap();
            }
            core.step();
            let mut o = Outcome::default();
            drain(&mut rx, &mut o);
            if o.reason.is_some() {
                return Some(step - 10);
            }
        }
        None
    };
    let waited = run(16).expect("the priority-3 request starved");
    assert!(waited <= 148, "waited {waited} steps");
    // Without aging it never runs: the bound above is the mechanism's doing.
    assert_eq!(run(u64::MAX), None);
}

#[test]
fn stop_rules() {
    let setup = Setup::default();
    let p = prompt(3, 12);
    let full = expected(&p, 12);
    // A stop token id.
    let mut req = GenerateRequest::new(p.clone(), 12);
    req.stop_token_ids = vec![full[4]];
    let o = &run_together(&mut engine(&setup), &[req])[0];
    assert_eq!(o.reason, Some(StopReason::EndTurn));
    assert_eq!(o.tokens, full[..5]);

    // A stop string cut from the middle of the full text: the text stops
    // right before its first occurrence, however tokens split it.
    let all = run_together(&mut engine(&setup), &[GenerateRequest::new(p.clone(), 12)]).remove(0);
    assert_eq!(all.reason, Some(StopReason::MaxTokens));
    let chars: Vec<(usize, char)> = all.text.char_indices().collect();
    assert!(chars.len() > 12, "fixture text too short: {:?}", all.text);
    let (a, b) = (chars[chars.len() / 3].0, chars[chars.len() / 3 + 5].0);
    let stop = all.text[a..b].to_owned();
    let at = all.text.find(&stop).unwrap();
    let mut req = GenerateRequest::new(p.clone(), 12);
    req.stop_strings = vec!["never appears \u{1F600}".into(), stop.clone()];
    let o = &run_together(&mut engine(&setup), &[req])[0];
    assert_eq!(o.reason, Some(StopReason::StopSequence(stop)));
    assert_eq!(o.text, all.text[..at]);
    assert!(o.tokens.len() < 12);

    // The context limit.
    let short = Setup {
        max_model_len: 16,
        ..Setup::default()
    };
    let o = &run_together(&mut engine(&short), &[GenerateRequest::new(p.clone(), 100)])[0];
    assert_eq!(o.tokens.len(), 4);
    assert_eq!(o.reason, Some(StopReason::ContextLength));
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let setup = Setup {
        num_blocks: 8,
        max_model_len: 64,
        ..Setup::default()
    };
    let mut core = engine(&setup);
    let mut add = |req: GenerateRequest| {
        let (tx, _rx) = unbounded_channel();
        core.add_request(1, req, tx)
    };
    assert_eq!(
        add(GenerateRequest::new(vec![], 4)),
        Err(SubmitError::EmptyPrompt)
    );
    assert_eq!(
        add(GenerateRequest::new(vec![5], 0)),
        Err(SubmitError::ZeroMaxTokens)
    );
    assert!(matches!(
        add(GenerateRequest::new(vec![5; 64], 1)),
        Err(SubmitError::PromptTooLong { .. })
    ));
    assert!(matches!(
        add(GenerateRequest::new(vec![5, 5000], 1)),
        Err(SubmitError::TokenOutOfRange { token: 5000, .. })
    ));
    let mut r = GenerateRequest::new(vec![5], 4);
    r.sampling.temperature = -1.0;
    assert!(matches!(add(r), Err(SubmitError::Sampling(_))));
    let mut r = GenerateRequest::new(vec![5], 4);
    r.stop_strings = vec![String::new()];
    assert!(matches!(add(r), Err(SubmitError::Stop(_))));
    // 40 + 20 tokens need 15 blocks of 4; the cache has 8.
    assert!(matches!(
        add(GenerateRequest::new(vec![5; 40], 20)),
        Err(SubmitError::Admit(_))
    ));
}

#[test]
fn a_seed_reproduces_sampled_output_whatever_else_runs() {
    let setup = Setup::default();
    let mut req = GenerateRequest::new(prompt(5, 30), 30);
    req.sampling = SamplingParams {
        temperature: 1.5,
        seed: Some(42),
        ..Default::default()
    };
    let alone = run_together(&mut engine(&setup), std::slice::from_ref(&req)).remove(0);
    let mut crowd = mixed_requests(10);
    crowd.insert(4, req);
    let together = run_together(&mut engine(&setup), &crowd).remove(4);
    assert_eq!(alone.tokens, together.tokens);
    assert_ne!(
        alone.tokens,
        expected(&prompt(5, 30), 30),
        "sampling never left greedy"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        len: usize,
        shared: bool,
        max_tokens: usize,
    },
    Step,
    Abort(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40, any::<bool>(), 1usize..12).prop_map(|(len, shared, max_tokens)| Op::Submit {
            len,
            shared,
            max_tokens
        }),
        Just(Op::Step),
        Just(Op::Step),
        Just(Op::Step),
        (0usize..64).prop_map(Op::Abort),
    ]
}

/// A submitted request: id, prompt, max tokens, its receiver (None once
/// aborted) and what it has produced.
type Live = (
    u64,
    Vec<u32>,
    usize,
    Option<tokio::sync::mpsc::UnboundedReceiver<factory_engine::TokenEvent>>,
    Outcome,
);

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random submit / step / abort sequences on a small cache (preemption
    /// happens): invariants hold after every operation, no block leaks once
    /// everything ends, and every request that was not aborted produced
    /// exactly what it would alone.
    #[test]
    fn random_workloads_keep_the_books_straight(
        ops in proptest::collection::vec(op(), 1..80),
        num_blocks in 12usize..40,
        budget in 1usize..48,
        prefix_caching in any::<bool>(),
        mix in any::<bool>(),
    ) {
        let setup = Setup { num_blocks, budget, prefix_caching, mix, max_seqs: 8, ..Setup::default() };
        let mut core = engine(&setup);
        let shared_prefix = prompt(77, 16);
        let mut live: Vec<Live> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Submit { len, shared, max_tokens } => {
                    let mut p = if *shared { shared_prefix.clone() } else { Vec::new() };
                    p.extend(prompt(i as u64, *len));
                    let (tx, rx) = unbounded_channel();
                    let id = i as u64;
                    match core.add_request(id, GenerateRequest::new(p.clone(), *max_tokens), tx) {
                        Ok(()) => live.push((id, p, *max_tokens, Some(rx), Outcome::default())),
                        Err(SubmitError::Admit(_)) => {}
                        Err(e) => prop_assert!(false, "unexpected refusal: {e}"),
                    }
                }
                Op::Step => { core.step(); }
                Op::Abort(k) => {
                    if !live.is_empty() {
                        let k = k % live.len();
                        live[k].3 = None;
                    }
                }
            }
            for l in &mut live {
                if let Some(rx) = &mut l.3 { drain(rx, &mut l.4); }
            }
            core.scheduler().check_invariants().map_err(TestCaseError::fail)?;
        }
        let mut guard = 0;
        while core.has_work() {
            core.step();
            core.scheduler().check_invariants().map_err(TestCaseError::fail)?;
            guard += 1;
            prop_assert!(guard < 10_000, "engine does not finish");
        }
        prop_assert_eq!(core.scheduler().blocks().num_free(), num_blocks);
        for (_, p, max_tokens, rx, mut o) in live {
            if let Some(mut rx) = rx {
                drain(&mut rx, &mut o);
                prop_assert_eq!(o.error, None);
                prop_assert_eq!(o.reason, Some(StopReason::MaxTokens));
                prop_assert_eq!(o.tokens, expected(&p, max_tokens));
            }
        }
    }
}
