//! Per-token log-probabilities through the whole engine (fake model): present
//! exactly when asked, the model's distribution, top-1 = the greedy token.

mod common;

use common::*;
use factory_engine::{
    GenerateRequest, SamplingParams, SubmitError, TokenEvent, TokenLogprobs, MAX_TOP_LOGPROBS,
};
use tokio::sync::mpsc::unbounded_channel;

/// Runs one request alone; its tokens with their logprobs.
fn run(req: GenerateRequest) -> Vec<(u32, Option<TokenLogprobs>)> {
    let mut core = engine(&Setup::default());
    let (tx, mut rx) = unbounded_channel();
    core.add_request(1, req, tx).expect("accepted");
    while core.has_work() {
        core.step();
    }
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            TokenEvent::Token { id, logprobs, .. } => out.push((id, logprobs)),
            TokenEvent::Finished { .. } => {}
            TokenEvent::Error { message } => panic!("{message}"),
        }
    }
    out
}

#[test]
fn greedy_tokens_are_the_top_one_with_the_softmax_logprob() {
    let p = prompt(3, 40);
    let mut req = GenerateRequest::new(p.clone(), 12);
    req.logprobs = Some(5);
    let got = run(req);
    assert_eq!(
        got.iter().map(|t| t.0).collect::<Vec<_>>(),
        expected(&p, 12)
    );
    for (id, lp) in got {
        let lp = lp.expect("logprobs asked for");
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, id, "greedy picks the most likely token");
        assert_eq!(lp.top[0].1, lp.logprob);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        // The fake's logits: 4 for the winner, 3 for a runner-up (when it
        // differs), 0 for the rest of the vocabulary of VOCAB.
        let runner_up = lp.top[1].1 > lp.top[2].1;
        let z = if runner_up {
            4f64.exp() + 3f64.exp() + (VOCAB - 2) as f64
        } else {
            4f64.exp() + (VOCAB - 1) as f64
        };
        let want = 4.0 - z.ln();
        assert!((f64::from(lp.logprob) - want).abs() < 1e-5, "{lp:?}");
    }
}

#[test]
fn logprobs_are_absent_unless_asked_and_zero_alternatives_is_allowed() {
    let p = prompt(9, 10);
    assert!(run(GenerateRequest::new(p.clone(), 4))
        .iter()
        .all(|t| t.1.is_none()));
    let mut req = GenerateRequest::new(p, 4);
    req.logprobs = Some(0);
    for (_, lp) in run(req) {
        let lp = lp.expect("logprob of the sampled token");
        assert!(lp.top.is_empty() && lp.logprob < 0.0);
    }
}

#[test]
fn logprobs_do_not_depend_on_temperature_or_penalties() {
    // The raw distribution: the same first token (forced by top_k 1) gets the
    // same logprob whatever the sampling settings.
    let p = prompt(4, 20);
    let mut greedy = GenerateRequest::new(p.clone(), 1);
    greedy.logprobs = Some(2);
    let mut hot = greedy.clone();
    hot.sampling = SamplingParams {
        temperature: 1.7,
        top_k: 1,
        frequency_penalty: 1.5,
        repetition_penalty: 1.3,
        seed: Some(1),
        ..Default::default()
    };
    assert_eq!(run(greedy), run(hot));
}

#[test]
fn too_many_alternatives_are_refused() {
    let mut core = engine(&Setup::default());
    let mut req = GenerateRequest::new(prompt(1, 5), 2);
    req.logprobs = Some(MAX_TOP_LOGPROBS + 1);
    let (tx, _rx) = unbounded_channel();
    assert_eq!(
        core.add_request(1, req.clone(), tx),
        Err(SubmitError::TopLogprobs(MAX_TOP_LOGPROBS + 1))
    );
    req.logprobs = Some(MAX_TOP_LOGPROBS);
    let (tx, _rx) = unbounded_channel();
    assert!(core.add_request(2, req, tx).is_ok());
}
