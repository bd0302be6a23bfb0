//! Which sequences run in the next step, and how many of their tokens.
//!
//! Pure logic over token counts and the [`BlockManager`]: no model, no
//! threads, so every policy is testable on its own.
//!
//! Each step has a token budget (`max_num_batched_tokens`) and a cap on
//! running sequences (`max_num_seqs`). Running decodes are served first, then
//! running prefills (chunked to what is left of the budget), then waiting
//! sequences in priority order, first come first served within a priority.
//! When blocks run out, the lowest-priority, newest running sequence is
//! preempted: its blocks are released (its full blocks stay in the prefix
//! cache) and it is recomputed when it is admitted again.

use std::collections::HashMap;

use crate::block_manager::{BlockManager, PrefixCacheStats, SeqBlocks};

/// A sequence's id, unique for the engine's life.
pub type SeqId = u64;

/// Limits of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens computed in one step across all sequences.
    pub max_num_batched_tokens: usize,
    /// Sequences running at once.
    pub max_num_seqs: usize,
    /// Whether a step may mix prefill chunks with decodes (backends with
    /// static shapes may not).
    pub mix_prefill_and_decode: bool,
    /// Every this many steps spent waiting, a sequence's priority improves by
    /// one, so low priorities cannot starve.
    pub aging_steps: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
            mix_prefill_and_decode: true,
            aging_steps: 64,
        }
    }
}

/// Where a sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
}

/// One sequence as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct SeqState {
    pub id: SeqId,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Leading tokens whose K/V is in the cache.
    pub num_computed: usize,
    pub blocks: SeqBlocks,
    /// Smaller runs sooner.
    pub priority: i32,
    /// Submission order.
    pub arrival: u64,
    /// Step at which it last started waiting.
    waiting_since: u64,
    pub status: SeqStatus,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Prompt tokens found in the prefix cache at first admission.
    pub cached_prompt_tokens: Option<usize>,
}

impl SeqState {
    /// Tokens still to compute.
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Whether the prompt (and any recomputed output) is done and the
    /// sequence is generating one token per step.
    pub fn is_decoding(&self) -> bool {
        self.num_computed > 0 && self.remaining() == 1 && self.tokens.len() > self.prompt_len
    }
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// Position of the first token computed.
    pub start: usize,
    /// Tokens computed.
    pub len: usize,
    /// Whether this chunk reaches the last known token, so the step's
    /// logits yield the next token.
    pub sample: bool,
}

/// A step's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Decodes first, then prefill chunks.
    pub seqs: Vec<ScheduledSeq>,
    /// Sequences preempted while planning this step.
    pub preempted: Vec<SeqId>,
}

impl SchedulerOutput {
    /// Tokens computed in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.len).sum()
    }

    /// Whether nothing runs.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// A sequence the scheduler refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("sequence {0} already exists")]
    Duplicate(SeqId),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt plus max_tokens need {needed} KV blocks but the cache has only {total}; lower max_tokens or give the KV cache more memory")]
    TooLarge { needed: usize, total: usize },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub steps: u64,
    pub preemptions: u64,
    pub prefix: PrefixCacheStats,
}

/// The scheduler.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    blocks: BlockManager,
    seqs: HashMap<SeqId, SeqState>,
    waiting: Vec<SeqId>,
    /// In admission order.
    running: Vec<SeqId>,
    next_arrival: u64,
    step: u64,
    preemptions: u64,
    /// Whether the previous step ran decodes (alternation when steps cannot mix).
    last_step_decoded: bool,
}

impl Scheduler {
    /// A scheduler over `blocks`.
    pub fn new(config: SchedulerConfig, blocks: BlockManager) -> Self {
        Self {
            config,
            blocks,
            seqs: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            next_arrival: 0,
            step: 0,
            preemptions: 0,
            last_step_decoded: false,
        }
    }

    /// The limits it schedules under.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The block pool.
    pub fn blocks(&self) -> &BlockManager {
        &self.blocks
    }

    /// Counters so far.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            steps: self.step,
            preemptions: self.preemptions,
            prefix: self.blocks.stats(),
        }
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences admitted.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether any sequence is known.
    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// A sequence's state.
    pub fn seq(&self, id: SeqId) -> Option<&SeqState> {
        self.seqs.get(&id)
    }

    /// Every sequence (for invariant checks).
    pub fn seqs(&self) -> impl Iterator<Item = &SeqState> {
        self.seqs.values()
    }

    /// Queues a new sequence. `max_total_tokens` is the longest it may grow
    /// (prompt plus output), used to refuse what could never fit the cache.
    pub fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        priority: i32,
        max_total_tokens: usize,
    ) -> Result<(), AdmitError> {
        if self.seqs.contains_key(&id) {
            return Err(AdmitError::Duplicate(id));
        }
        if prompt.is_empty() {
            return Err(AdmitError::EmptyPrompt);
        }
        let needed = self.blocks.blocks_for(max_total_tokens.max(prompt.len()));
        if needed > self.blocks.num_blocks() {
            return Err(AdmitError::TooLarge {
                needed,
                total: self.blocks.num_blocks(),
            });
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.seqs.insert(
            id,
            SeqState {
                id,
                prompt_len: prompt.len(),
                tokens: prompt,
                num_computed: 0,
                blocks: SeqBlocks::default(),
                priority,
                arrival,
                waiting_since: self.step,
                status: SeqStatus::Waiting,
                preemptions: 0,
                cached_prompt_tokens: None,
            },
        );
        self.waiting.push(id);
        Ok(())
    }

    /// Removes a sequence (finished or aborted) and releases its blocks.
    pub fn remove(&mut self, id: SeqId) -> Option<SeqState> {
        let mut s = self.seqs.remove(&id)?;
        self.blocks.release(&mut s.blocks);
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        Some(s)
    }

    /// Plans the next step.
    pub fn schedule(&mut self) -> SchedulerOutput {
        self.step += 1;
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled: Vec<SeqId> = Vec::new();
        let mut decoded = false;

        let mut order = self.running.clone();
        order.sort_by_key(|id| self.seqs.get(id).map(|s| (s.priority, s.arrival)));
        let any_decode = order
            .iter()
            .any(|id| self.seqs.get(id).is_some_and(SeqState::is_decoding));
        let has_prefill_work = !self.waiting.is_empty()
            || order
                .iter()
                .any(|id| self.seqs.get(id).is_some_and(|s| !s.is_decoding()));
        // Without mixing, alternate decode-only and prefill-only steps so
        // neither side starves.
        let (allow_decode, allow_prefill) = if self.config.mix_prefill_and_decode {
            (true, true)
        } else if any_decode && (!self.last_step_decoded || !has_prefill_work) {
            (true, false)
        } else {
            (false, true)
        };

        for decode_pass in [true, false] {
            if (decode_pass && !allow_decode) || (!decode_pass && !allow_prefill) {
                continue;
            }
            for &id in &order {
                if budget == 0 {
                    break;
                }
                let Some(s) = self.seqs.get(&id) else {
                    continue;
                };
                if s.status != SeqStatus::Running || s.is_decoding() != decode_pass {
                    continue;
                }
                if !self.config.mix_prefill_and_decode && !decode_pass && !out.seqs.is_empty() {
                    // Static-shape backends take one prefill per step.
                    break;
                }
                let n = s.remaining().min(budget);
                if n == 0 {
                    continue;
                }
                if !self.grow_or_preempt(id, n, &scheduled, &mut out.preempted) {
                    continue;
                }
                let s = &self.seqs[&id];
                out.seqs.push(ScheduledSeq {
                    id,
                    start: s.num_computed,
                    len: n,
                    sample: s.num_computed + n == s.tokens.len(),
                });
                scheduled.push(id);
                budget -= n;
                decoded |= decode_pass;
            }
        }

        // New admissions only when nobody was just pushed out, so a
        // preempted sequence is not immediately displaced again.
        if out.preempted.is_empty() && allow_prefill {
            self.admit(&mut out, &mut budget);
        }
        self.last_step_decoded = decoded;
        out
    }

    /// Allocates blocks for `n` more tokens of running sequence `id`,
    /// preempting others (or `id` itself) until it fits. Returns whether `id`
    /// still runs.
    fn grow_or_preempt(
        &mut self,
        id: SeqId,
        n: usize,
        scheduled: &[SeqId],
        preempted: &mut Vec<SeqId>,
    ) -> bool {
        loop {
            let Some(s) = self.seqs.get_mut(&id) else {
                return false;
            };
            let total = s.num_computed + n;
            if self.blocks.allocate(&mut s.blocks, total) {
                return true;
            }
            // The lowest-priority, newest running sequence not already in
            // this step gives way.
            let victim = self
                .running
                .iter()
                .copied()
                .filter(|v| !scheduled.contains(v))
                .max_by_key(|v| self.seqs.get(v).map(|s| (s.priority, s.arrival)));
            let Some(victim) = victim else {
                return false;
            };
            self.preempt(victim);
            preempted.push(victim);
            if victim == id {
                return false;
            }
        }
    }

    /// Sends a running sequence back to the queue, releasing its blocks.
    fn preempt(&mut self, id: SeqId) {
        let Some(s) = self.seqs.get_mut(&id) else {
            return;
        };
        self.blocks.release(&mut s.blocks);
        s.num_computed = 0;
        s.status = SeqStatus::Waiting;
        s.waiting_since = self.step;
        s.preemptions += 1;
        self.preemptions += 1;
        self.running.retain(|&r| r != id);
        self.waiting.push(id);
        tracing::debug!(seq = id, "preempted (recompute)");
    }

    /// Effective priority of a waiting sequence: better the longer it waits.
    fn waiting_key(&self, s: &SeqState) -> (i64, u64) {
        let waited = self.step.saturating_sub(s.waiting_since);
        let aged = (waited / self.config.aging_steps.max(1)) as i64;
        (i64::from(s.priority) - aged, s.arrival)
    }

    fn admit(&mut self, out: &mut SchedulerOutput, budget: &mut usize) {
        let mut queue = std::mem::take(&mut self.waiting);
        queue.sort_by_key(|id| self.seqs.get(id).map(|s| self.waiting_key(s)));
        let mut admitted = 0;
        for &id in &queue {
            if *budget == 0 || self.running.len() >= self.config.max_num_seqs {
                break;
            }
            if !self.config.mix_prefill_and_decode && !out.seqs.is_empty() {
                break;
            }
            let Some(s) = self.seqs.get_mut(&id) else {
                admitted += 1;
                continue;
            };
            // The last token is always computed, so its logits exist and no
            // shared block is ever written.
            let hit = self
                .blocks
                .acquire_prefix(&mut s.blocks, &s.tokens[..s.tokens.len() - 1]);
            let n = (s.tokens.len() - hit).min(*budget);
            if !self.blocks.allocate(&mut s.blocks, hit + n) {
                // First come, first served: nobody overtakes the head.
                self.blocks.release(&mut s.blocks);
                break;
            }
            s.num_computed = hit;
            s.cached_prompt_tokens.get_or_insert(hit.min(s.prompt_len));
            s.status = SeqStatus::Running;
            out.seqs.push(ScheduledSeq {
                id,
                start: hit,
                len: n,
                sample: hit + n == s.tokens.len(),
            });
            *budget -= n;
            self.running.push(id);
            admitted += 1;
        }
        queue.drain(..admitted);
        self.waiting = queue;
    }

    /// Records that the planned step ran: computed counts advance and newly
    /// full blocks enter the prefix cache.
    pub fn commit(&mut self, out: &SchedulerOutput) {
        for item in &out.seqs {
            let Some(s) = self.seqs.get_mut(&item.id) else {
                continue;
            };
            s.num_computed = (item.start + item.len).min(s.tokens.len());
            self.blocks
                .register_full_blocks(&mut s.blocks, &s.tokens, s.num_computed);
        }
    }

    /// Appends a sampled token to a sequence.
    pub fn append(&mut self, id: SeqId, token: u32) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.tokens.push(token);
        }
    }

    /// Checks block-manager invariants against every sequence's table.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.blocks
            .check_invariants(self.seqs.values().map(|s| &s.blocks))?;
        for s in self.seqs.values() {
            if s.num_computed > s.tokens.len() {
                return Err(format!("seq {}: computed past its tokens", s.id));
            }
            if s.blocks.table.len() * self.blocks.block_size() < s.num_computed {
                return Err(format!("seq {}: computed tokens without blocks", s.id));
            }
            let queued = self.waiting.contains(&s.id);
            let running = self.running.contains(&s.id);
            match s.status {
                SeqStatus::Waiting if !queued || running => {
                    return Err(format!("seq {}: waiting but not queued", s.id))
                }
                SeqStatus::Running if queued || !running => {
                    return Err(format!("seq {}: running but not listed", s.id))
                }
                _ => {}
            }
            if s.status == SeqStatus::Waiting && !s.blocks.table.is_empty() {
                return Err(format!("seq {}: waiting with blocks", s.id));
            }
        }
        if self.running.len() > self.config.max_num_seqs {
            return Err("too many running sequences".into());
        }
        Ok(())
    }
}
