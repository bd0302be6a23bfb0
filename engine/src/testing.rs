//! A deterministic stand-in model for tests and scheduler benchmarks.
//!
//! [`FakeExecutor`] stores each computed token (and its position) in the
//! slot its block table names, and derives the next token from everything it
//! reads back through the block table. Any bookkeeping mistake (a wrong or
//! stale block, a shared block overwritten, a skipped position) therefore
//! changes the output or fails the step, while a correct engine gives the
//! same tokens however requests are batched.

use crate::executor::{Batch, Capabilities, Executor, ExecutorError, StepOutput};

/// The fake model.
#[derive(Debug, Clone)]
pub struct FakeExecutor {
    caps: Capabilities,
    /// `(token, position)` per slot.
    slots: Vec<Option<(u32, u32)>>,
    /// Next tokens are drawn from this range.
    pub token_range: std::ops::Range<u32>,
    /// Counters.
    pub steps: u64,
    pub tokens_computed: u64,
    pub max_step_tokens: usize,
    /// The step (1-based) that fails with a backend error, for tests of
    /// failures in the middle of a request.
    pub fail_at_step: Option<u64>,
    /// Time each step takes (a sleep, no CPU), so tests can hold requests
    /// in flight for as long as they need.
    pub step_delay: std::time::Duration,
}

impl FakeExecutor {
    /// A fake with `num_blocks` blocks of `block_size` tokens.
    pub fn new(
        vocab_size: usize,
        block_size: usize,
        num_blocks: usize,
        max_model_len: usize,
    ) -> Self {
        Self {
            caps: Capabilities {
                name: "fake",
                max_batch_seqs: usize::MAX,
                max_batch_tokens: usize::MAX,
                mix_prefill_and_decode: true,
                token_buckets: Vec::new(),
                block_size,
                num_kv_blocks: num_blocks,
                vocab_size,
                max_model_len,
            },
            slots: vec![None; num_blocks * block_size],
            token_range: 0..vocab_size as u32,
            steps: 0,
            tokens_computed: 0,
            max_step_tokens: 0,
            fail_at_step: None,
            step_delay: std::time::Duration::ZERO,
        }
    }

    /// The capabilities, for tests that change them (e.g. no mixing).
    pub fn capabilities_mut(&mut self) -> &mut Capabilities {
        &mut self.caps
    }

    fn slot(&self, table: &[u32], pos: usize) -> Result<usize, ExecutorError> {
        let bs = self.caps.block_size;
        let block = *table
            .get(pos / bs)
            .ok_or_else(|| ExecutorError::Backend(format!("no block for position {pos}")))?;
        let slot = block as usize * bs + pos % bs;
        if slot >= self.slots.len() {
            return Err(ExecutorError::Backend(format!(
                "block {block} out of range"
            )));
        }
        Ok(slot)
    }
}

/// The fake's next token after `history`.
pub fn fake_next_token(history: &[u32], range: &std::ops::Range<u32>) -> u32 {
    // FNV-1a over the whole history: any change anywhere changes the result.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in history {
        for b in t.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    let width = u64::from(range.end.saturating_sub(range.start).max(1));
    range.start + (h % width) as u32
}

impl Executor for FakeExecutor {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        self.steps += 1;
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        if self.fail_at_step == Some(self.steps) {
            return Err(ExecutorError::Backend(format!(
                "injected failure at step {}",
                self.steps
            )));
        }
        let n = batch.num_tokens();
        self.tokens_computed += n as u64;
        self.max_step_tokens = self.max_step_tokens.max(n);
        let vocab = self.caps.vocab_size;
        let mut out = StepOutput {
            vocab_size: vocab,
            ..Default::default()
        };
        for s in &batch.seqs {
            for (i, &t) in s.tokens.iter().enumerate() {
                let pos = s.start_pos + i;
                let slot = self.slot(s.block_table, pos)?;
                self.slots[slot] = Some((t, pos as u32));
            }
            if !s.want_logits {
                out.rows.push(None);
                continue;
            }
            let end = s.start_pos + s.tokens.len();
            let mut history = Vec::with_capacity(end);
            for pos in 0..end {
                match self.slots[self.slot(s.block_table, pos)?] {
                    Some((t, p)) if p as usize == pos => history.push(t),
                    other => {
                        return Err(ExecutorError::Backend(format!(
                            "position {pos}: cache holds {other:?}"
                        )))
                    }
                }
            }
            let next = fake_next_token(&history, &self.token_range);
            let row = out.logits.len() / vocab.max(1);
            let mut logits = vec![0f32; vocab];
            // A clear winner plus a runner-up, so sampling has a choice.
            if let Some(l) = logits.get_mut(next as usize) {
                *l = 4.0;
            }
            let second = fake_next_token(&history[..history.len() / 2], &self.token_range);
            if second != next {
                if let Some(l) = logits.get_mut(second as usize) {
                    *l = 3.0;
                }
            }
            out.logits.extend_from_slice(&logits);
            out.rows.push(Some(row));
        }
        Ok(out)
    }
}
