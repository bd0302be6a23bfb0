//! What the offline benchmarks (engine_bench, gpu_offline_bench) read back
//! while they step an `EngineCore` themselves: each request's events, its
//! token count, first-token and finish times.

use anyhow::{bail, Context};
use factory_engine::{StopReason, TokenEvent};
use tokio::sync::mpsc::UnboundedReceiver;

/// Per-request progress of an offline run (times in seconds from its start).
#[derive(Debug)]
pub struct Progress {
    rxs: Vec<UnboundedReceiver<TokenEvent>>,
    expected: Vec<usize>,
    /// When each request's first token arrived.
    pub first: Vec<Option<f64>>,
    /// When each request finished.
    pub done: Vec<Option<f64>>,
    /// Tokens each request has received.
    pub got: Vec<usize>,
}

impl Progress {
    /// Follows the requests behind `rxs`, each expected to generate exactly
    /// `expected[i]` tokens and stop at its limit (greedy, `ignore_eos`).
    pub fn new(rxs: Vec<UnboundedReceiver<TokenEvent>>, expected: Vec<usize>) -> Self {
        let n = rxs.len();
        Self {
            rxs,
            expected,
            first: vec![None; n],
            done: vec![None; n],
            got: vec![0; n],
        }
    }

    /// Reads every event sent so far, stamped `now`; an error, or a request
    /// stopping other than at its expected length, fails the run.
    pub fn drain(&mut self, now: f64) -> anyhow::Result<()> {
        for (i, rx) in self.rxs.iter_mut().enumerate() {
            if self.done[i].is_some() {
                continue;
            }
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    TokenEvent::Token { .. } => {
                        self.got[i] += 1;
                        self.first[i].get_or_insert(now);
                    }
                    TokenEvent::Finished { reason, usage } => {
                        let want = self.expected.get(i).copied().unwrap_or_default();
                        if reason != StopReason::MaxTokens || usage.output_tokens != want {
                            bail!(
                                "request {i} stopped with {reason:?} after {} of {want} tokens",
                                usage.output_tokens
                            );
                        }
                        self.done[i] = Some(now);
                    }
                    TokenEvent::Error { message } => bail!("request {i} failed: {message}"),
                }
            }
        }
        Ok(())
    }

    /// Requests finished so far.
    pub fn finished(&self) -> usize {
        self.done.iter().filter(|d| d.is_some()).count()
    }

    /// Output tokens received so far.
    pub fn output_tokens(&self) -> usize {
        self.got.iter().sum()
    }

    /// Each request's finish time; an error names one that never finished.
    pub fn latencies(&self) -> anyhow::Result<Vec<f64>> {
        self.done
            .iter()
            .enumerate()
            .map(|(i, d)| d.with_context(|| format!("request {i} never finished")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use factory_engine::Usage;
    use tokio::sync::mpsc::unbounded_channel;

    fn token() -> TokenEvent {
        TokenEvent::Token {
            id: 1,
            text: String::new(),
            logprobs: None,
        }
    }

    fn finished(reason: StopReason, output_tokens: usize) -> TokenEvent {
        TokenEvent::Finished {
            reason,
            usage: Usage {
                output_tokens,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn counts_tokens_and_times_and_checks_the_length() {
        let (a_tx, a_rx) = unbounded_channel();
        let (b_tx, b_rx) = unbounded_channel();
        let mut p = Progress::new(vec![a_rx, b_rx], vec![2, 3]);
        a_tx.send(token()).unwrap();
        p.drain(1.0).unwrap();
        a_tx.send(token()).unwrap();
        a_tx.send(finished(StopReason::MaxTokens, 2)).unwrap();
        b_tx.send(token()).unwrap();
        p.drain(2.0).unwrap();
        assert_eq!((p.first[0], p.done[0], p.got[0]), (Some(1.0), Some(2.0), 2));
        assert_eq!((p.first[1], p.done[1]), (Some(2.0), None));
        assert_eq!((p.finished(), p.output_tokens()), (1, 3));
        assert!(p.latencies().unwrap_err().to_string().contains("request 1"));
        b_tx.send(finished(StopReason::EndTurn, 1)).unwrap();
        let e = p.drain(3.0).unwrap_err().to_string();
        assert!(
            e.contains("request 1 stopped with EndTurn after 1 of 3"),
            "{e}"
        );
    }
}
