//! The threaded engine behind `EngineHandle`: async streams, drop-to-abort,
//! refusals at submit, many concurrent streams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use factory_engine::{EngineHandle, GenerateRequest, StopReason, SubmitError, TokenEvent};

fn handle(setup: &Setup) -> EngineHandle {
    EngineHandle::spawn(engine(setup)).expect("engine thread")
}

/// Waits (bounded) until the engine's stats satisfy `ok`.
fn wait_for(h: &EngineHandle, ok: impl Fn(&factory_engine::EngineStats) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if ok(&h.stats()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn stats_show_the_kv_cache_before_the_first_step() {
    let h = handle(&Setup::default());
    let s = h.stats();
    assert!(s.kv_blocks_total > 0, "{s:?}");
    assert_eq!(s.kv_blocks_free, s.kv_blocks_total);
    assert_eq!(s.kv_usage(), 0.0);
}

#[test]
fn concurrent_async_streams_each_get_their_own_tokens() {
    let h = handle(&Setup::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..40u64 {
            let h = h.clone();
            set.spawn(async move {
                let p = prompt(i, 5 + (i as usize * 7) % 60);
                let mut s = h.submit(GenerateRequest::new(p.clone(), 10)).unwrap();
                let mut tokens = Vec::new();
                let mut reason = None;
                while let Some(ev) = s.next().await {
                    match ev {
                        TokenEvent::Token { id, .. } => tokens.push(id),
                        TokenEvent::Finished { reason: r, .. } => reason = Some(r),
                        TokenEvent::Error { message } => panic!("{message}"),
                    }
                }
                (p, tokens, reason)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    assert_eq!(results.len(), 40);
    for (p, tokens, reason) in results {
        assert_eq!(tokens, expected(&p, 10));
        assert_eq!(reason, Some(StopReason::MaxTokens));
    }
    assert!(wait_for(&h, |s| s.running == 0
        && s.waiting == 0
        && s.kv_blocks_free == s.kv_blocks_total));
}

#[test]
fn dropping_a_stream_aborts_the_request_and_frees_its_blocks() {
    let setup = Setup::default();
    let h = handle(&setup);
    let mut s = h.submit(GenerateRequest::new(prompt(1, 50), 1000)).unwrap();
    // Let it run a little, then walk away.
    for _ in 0..5 {
        assert!(matches!(s.blocking_next(), Some(TokenEvent::Token { .. })));
    }
    assert!(h.stats().kv_blocks_free < setup.num_blocks);
    assert_eq!(h.in_flight(), 1);
    drop(s);
    assert_eq!(h.in_flight(), 0);
    assert!(
        wait_for(&h, |s| s.running == 0
            && s.kv_blocks_free == setup.num_blocks),
        "blocks not freed: {:?}",
        h.stats()
    );
}

#[test]
fn dropping_counts_an_abort_and_stopping_does_not() {
    let setup = Setup::default();
    let h = handle(&setup);
    let run = |stop: bool| {
        let mut s = h.submit(GenerateRequest::new(prompt(2, 40), 1000)).unwrap();
        for _ in 0..3 {
            assert!(matches!(s.blocking_next(), Some(TokenEvent::Token { .. })));
        }
        if stop {
            s.stop();
        }
        drop(s);
        assert!(
            wait_for(&h, |s| s.running == 0
                && s.kv_blocks_free == setup.num_blocks),
            "blocks not freed: {:?}",
            h.stats()
        );
        assert_eq!(h.in_flight(), 0);
    };
    run(false);
    assert!(wait_for(&h, |s| s.aborted_requests == 1), "{:?}", h.stats());
    run(true);
    // Give a wrongly counted abort time to show up before checking.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.stats().aborted_requests, 1, "{:?}", h.stats());
}

#[test]
fn bad_requests_are_refused_at_submit() {
    let h = handle(&Setup {
        max_model_len: 32,
        ..Setup::default()
    });
    assert_eq!(
        h.submit(GenerateRequest::new(vec![], 4)).err(),
        Some(SubmitError::EmptyPrompt)
    );
    assert!(matches!(
        h.submit(GenerateRequest::new(vec![7; 40], 4)).err(),
        Some(SubmitError::PromptTooLong {
            prompt: 40,
            limit: 32
        })
    ));
    // The engine still serves good requests afterwards.
    let mut s = h.submit(GenerateRequest::new(vec![7; 8], 2)).unwrap();
    let mut last = None;
    while let Some(ev) = s.blocking_next() {
        last = Some(ev);
    }
    assert!(matches!(last, Some(TokenEvent::Finished { .. })));
}

#[test]
fn submit_within_refuses_beyond_the_limit_and_never_overshoots() {
    let h = handle(&Setup::default());
    let a = h
        .submit_within(GenerateRequest::new(prompt(1, 8), 1000), 2)
        .unwrap();
    let b = h
        .submit_within(GenerateRequest::new(prompt(2, 8), 1000), 2)
        .unwrap();
    assert_eq!(
        h.submit_within(GenerateRequest::new(prompt(3, 8), 4), 2)
            .err(),
        Some(SubmitError::Busy { limit: 2 })
    );
    // A refused request takes no place; a dropped stream frees one.
    assert_eq!(h.in_flight(), 2);
    drop(a);
    let c = h
        .submit_within(GenerateRequest::new(prompt(3, 8), 4), 2)
        .unwrap();
    drop((b, c));
    assert_eq!(h.in_flight(), 0);

    // Many threads racing for 5 places: exactly 5 win.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16u64)
        .map(|i| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                h.submit_within(GenerateRequest::new(prompt(i, 8), 1000), 5)
                    .ok()
            })
        })
        .collect();
    let streams: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(streams.len(), 5);
    assert_eq!(h.in_flight(), 5);
    assert_eq!(h.max_running(), Setup::default().max_seqs);
}

#[test]
fn a_failing_step_ends_its_requests_with_an_error_and_the_engine_serves_on() {
    let mut fake = factory_engine::testing::FakeExecutor::new(VOCAB, 4, 512, 4096);
    fake.token_range = TOKENS;
    fake.fail_at_step = Some(4);
    let core = factory_engine::EngineCore::new(
        Box::new(fake),
        tokenizer(),
        vec![2],
        factory_engine::EngineConfig::default(),
    );
    let h = EngineHandle::spawn(core).expect("engine thread");
    let mut s = h.submit(GenerateRequest::new(prompt(1, 8), 100)).unwrap();
    let mut tokens = 0;
    let message = loop {
        match s.blocking_next() {
            Some(TokenEvent::Token { .. }) => tokens += 1,
            Some(TokenEvent::Error { message }) => break message,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    assert_eq!(tokens, 3, "steps 1-3 produce tokens, step 4 fails");
    assert!(message.contains("injected failure at step 4"), "{message}");
    assert!(s.blocking_next().is_none());
    let mut s = h.submit(GenerateRequest::new(prompt(2, 8), 3)).unwrap();
    let mut last = None;
    while let Some(ev) = s.blocking_next() {
        last = Some(ev);
    }
    assert!(matches!(last, Some(TokenEvent::Finished { .. })));
}
