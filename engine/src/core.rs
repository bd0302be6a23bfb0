//! The engine's step: schedule, execute, sample, check stop rules, emit.
//!
//! [`EngineCore`] is synchronous and owns everything a step touches; the
//! engine thread ([`crate::handle`]) drives it, and tests drive it directly.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factory_models::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::block_manager::BlockManager;
use crate::detokenizer::Utf8Stream;
use crate::executor::{Batch, BatchSeq, Executor};
use crate::request::{GenerateRequest, StopReason, TokenEvent, Usage};
use crate::sampling::{self, Sampler, SamplingError, MAX_TOP_LOGPROBS};
use crate::scheduler::{AdmitError, Scheduler, SchedulerConfig, SchedulerStats, SeqId};
use crate::stop::{StopError, StopMatcher};

/// How the engine runs, beyond what the backend dictates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Share K/V of identical prompt prefixes between requests.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            prefix_caching: true,
        }
    }
}

/// A request refused at submission.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("the prompt has {prompt} tokens; this model's context is {limit}")]
    PromptTooLong { prompt: usize, limit: usize },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("logprobs may name at most {MAX_TOP_LOGPROBS} alternatives, got {0}")]
    TopLogprobs(usize),
    #[error(transparent)]
    Stop(#[from] StopError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    #[error("the engine has shut down")]
    Closed,
    /// Refused by [`crate::EngineHandle::submit_within`]: the engine holds its limit already.
    #[error("the engine already holds {limit} requests")]
    Busy { limit: usize },
}

/// What one step did (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepReport {
    /// Sequences in the step.
    pub seqs: usize,
    /// Tokens computed.
    pub tokens: usize,
    /// Tokens sampled (sequences that produced one).
    pub sampled: usize,
    /// Time inside the executor.
    pub execute: Duration,
    /// Whole step.
    pub total: Duration,
}

/// Where a request's events go. Sending fails once the receiver is gone,
/// which aborts the request.
pub type EventSink = UnboundedSender<TokenEvent>;

/// A running request's private state.
struct Active {
    sampler: Sampler,
    text: TextStream,
    stop: StopMatcher,
    stop_strings: Vec<String>,
    stop_ids: Vec<u32>,
    max_tokens: usize,
    generated: usize,
    /// Alternatives to report per token; `None`: no logprobs at all.
    logprobs: Option<usize>,
    sink: EventSink,
    /// When it was submitted, and when a step first scheduled it: the queue
    /// time reported in its usage.
    arrived: Instant,
    first_scheduled: Option<Instant>,
}

/// Token bytes to text: whole characters only, special tokens silent, and
/// SentencePiece's leading space dropped as `decode` would.
struct TextStream {
    utf8: Utf8Stream,
    strip_space: bool,
}

impl TextStream {
    fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        if tok.is_special(id) {
            return String::new();
        }
        let mut s = self.utf8.push(tok.token_bytes_ref(id).unwrap_or_default());
        if self.strip_space && !s.is_empty() {
            self.strip_space = false;
            if let Some(rest) = s.strip_prefix(' ') {
                s = rest.to_owned();
            }
        }
        s
    }
}

/// The engine's state and its step.
pub struct EngineCore {
    scheduler: Scheduler,
    executor: Box<dyn Executor>,
    tokenizer: Arc<Tokenizer>,
    eos_ids: Vec<u32>,
    vocab: usize,
    max_model_len: usize,
    active: HashMap<SeqId, Active>,
    /// Requests dropped by their callers before they finished.
    aborted: u64,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCore")
            .field("scheduler", &self.scheduler)
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

/// What a request may ask of a given engine: checked by the handle before
/// anything reaches the engine thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    pub vocab_size: usize,
    pub max_model_len: usize,
    pub block_size: usize,
    pub num_kv_blocks: usize,
}

impl RequestLimits {
    /// Checks a request; on success returns the longest the sequence may grow.
    pub fn check(&self, req: &GenerateRequest) -> Result<usize, SubmitError> {
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.max_tokens == 0 {
            return Err(SubmitError::ZeroMaxTokens);
        }
        if req.prompt.len() >= self.max_model_len {
            return Err(SubmitError::PromptTooLong {
                prompt: req.prompt.len(),
                limit: self.max_model_len,
            });
        }
        if let Some(&token) = req.prompt.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(SubmitError::TokenOutOfRange {
                token,
                vocab: self.vocab_size,
            });
        }
        req.sampling.validate()?;
        if let Some(n) = req.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(SubmitError::TopLogprobs(n));
        }
        StopMatcher::new(req.stop_strings.clone())?;
        let total = req
            .prompt
            .len()
            .saturating_add(req.max_tokens)
            .min(self.max_model_len);
        let needed = total.div_ceil(self.block_size.max(1));
        if needed > self.num_kv_blocks {
            return Err(AdmitError::TooLarge {
                needed,
                total: self.num_kv_blocks,
            }
            .into());
        }
        Ok(total)
    }
}

impl EngineCore {
    /// An engine over `executor`; `eos_ids` end a turn unless a request
    /// says otherwise.
    pub fn new(
        executor: Box<dyn Executor>,
        tokenizer: Arc<Tokenizer>,
        eos_ids: Vec<u32>,
        config: EngineConfig,
    ) -> Self {
        let caps = executor.capabilities().clone();
        let mut sched = config.scheduler;
        sched.max_num_seqs = sched.max_num_seqs.min(caps.max_batch_seqs).max(1);
        sched.max_num_batched_tokens = sched
            .max_num_batched_tokens
            .min(caps.max_batch_tokens)
            .max(1);
        sched.mix_prefill_and_decode &= caps.mix_prefill_and_decode;
        let blocks = BlockManager::new(caps.num_kv_blocks, caps.block_size, config.prefix_caching);
        Self {
            scheduler: Scheduler::new(sched, blocks),
            executor,
            tokenizer,
            eos_ids,
            vocab: caps.vocab_size,
            max_model_len: caps.max_model_len,
            active: HashMap::new(),
            aborted: 0,
        }
    }

    /// What requests may ask of this engine.
    pub fn limits(&self) -> RequestLimits {
        let caps = self.executor.capabilities();
        RequestLimits {
            vocab_size: self.vocab,
            max_model_len: self.max_model_len,
            block_size: caps.block_size,
            num_kv_blocks: caps.num_kv_blocks,
        }
    }

    /// The scheduler (for stats and invariant checks).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Scheduler and prefix-cache counters.
    pub fn stats(&self) -> SchedulerStats {
        self.scheduler.stats()
    }

    /// Whether any request is waiting or running.
    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    /// Requests aborted by their callers so far.
    pub fn aborted(&self) -> u64 {
        self.aborted
    }

    /// Requests known to the engine.
    pub fn num_requests(&self) -> usize {
        self.active.len()
    }

    /// Queues a request under `id`; its events go to `sink`.
    pub fn add_request(
        &mut self,
        id: SeqId,
        req: GenerateRequest,
        sink: EventSink,
    ) -> Result<(), SubmitError> {
        self.add_request_at(id, req, sink, Instant::now())
    }

    /// [`EngineCore::add_request`] for a request submitted at `arrived`
    /// (its queue time counts from then).
    pub fn add_request_at(
        &mut self,
        id: SeqId,
        req: GenerateRequest,
        sink: EventSink,
        arrived: Instant,
    ) -> Result<(), SubmitError> {
        let max_total = self.limits().check(&req)?;
        let stop = StopMatcher::new(req.stop_strings.clone())?;
        let mut stop_ids = req.stop_token_ids;
        if !req.ignore_eos {
            stop_ids.extend(&self.eos_ids);
        }
        let sampler = Sampler::new(req.sampling, &req.prompt);
        self.scheduler
            .add(id, req.prompt, req.priority, max_total)?;
        self.active.insert(
            id,
            Active {
                sampler,
                text: TextStream {
                    utf8: Utf8Stream::new(),
                    strip_space: self.tokenizer.strips_leading_space(),
                },
                stop,
                stop_strings: req.stop_strings,
                stop_ids,
                max_tokens: req.max_tokens,
                generated: 0,
                logprobs: req.logprobs,
                sink,
                arrived,
                first_scheduled: None,
            },
        );
        Ok(())
    }

    /// Drops a request and frees its blocks (its receiver is gone).
    pub fn abort(&mut self, id: SeqId) {
        if self.active.remove(&id).is_some() {
            self.aborted += 1;
            tracing::debug!(seq = id, "aborted");
        }
        self.scheduler.remove(id);
    }

    /// Ends a request its caller stopped reading on purpose and frees its
    /// blocks; unlike [`EngineCore::abort`], not counted as aborted.
    pub fn stop(&mut self, id: SeqId) {
        if self.active.remove(&id).is_some() {
            tracing::debug!(seq = id, "stopped by its caller");
        }
        self.scheduler.remove(id);
    }

    /// Runs one step. Does nothing when there is no work.
    pub fn step(&mut self) -> StepReport {
        let t0 = Instant::now();
        // Requests whose receiver went away stop costing compute now.
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.sink.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.abort(id);
        }
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return StepReport {
                total: t0.elapsed(),
                ..Default::default()
            };
        }
        let scheduled_at = Instant::now();
        let mut batch = Batch::default();
        for item in &plan.seqs {
            // Planned sequences exist: the scheduler just returned them.
            let Some(s) = self.scheduler.seq(item.id) else {
                continue;
            };
            if let Some(a) = self.active.get_mut(&item.id) {
                a.first_scheduled.get_or_insert(scheduled_at);
            }
            batch.seqs.push(BatchSeq {
                tokens: &s.tokens[item.start..item.start + item.len],
                start_pos: item.start,
                block_table: &s.blocks.table,
                want_logits: item.sample,
            });
        }
        let tokens = batch.num_tokens();
        let t_exec = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| self.executor.execute(&batch)));
        let execute = t_exec.elapsed();
        drop(batch);
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                tracing::error!("step failed: {e}");
                self.fail(plan.seqs.iter().map(|s| s.id), &format!("model error: {e}"));
                return StepReport {
                    total: t0.elapsed(),
                    execute,
                    ..Default::default()
                };
            }
            Err(_) => {
                tracing::error!("step panicked; failing its {} requests", plan.seqs.len());
                self.fail(
                    plan.seqs.iter().map(|s| s.id),
                    "internal error in the model step",
                );
                return StepReport {
                    total: t0.elapsed(),
                    execute,
                    ..Default::default()
                };
            }
        };
        self.scheduler.commit(&plan);
        let mut sampled = 0;
        for (i, item) in plan.seqs.iter().enumerate() {
            if !item.sample {
                continue;
            }
            let Some(logits) = out.logits(i) else {
                self.fail([item.id], "the backend returned no logits");
                continue;
            };
            sampled += 1;
            self.accept_token(item.id, logits);
        }
        StepReport {
            seqs: plan.seqs.len(),
            tokens,
            sampled,
            execute,
            total: t0.elapsed(),
        }
    }

    /// Samples a sequence's next token, emits it and applies stop rules.
    fn accept_token(&mut self, id: SeqId, logits: &[f32]) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let token = a.sampler.sample(logits);
        // From the raw logits, so only when asked: a pass over the vocabulary.
        let logprobs = a.logprobs.map(|n| sampling::logprobs(logits, token, n));
        a.sampler.accept(token);
        a.generated += 1;
        let mut stop = None;
        let mut text = String::new();
        if a.stop_ids.contains(&token) {
            stop = Some(StopReason::EndTurn);
        } else {
            let piece = a.text.push(&self.tokenizer, token);
            let step = a.stop.push(&piece);
            text = step.emit;
            if let Some(i) = step.stopped {
                stop = Some(StopReason::StopSequence(
                    a.stop_strings.get(i).cloned().unwrap_or_default(),
                ));
            }
        }
        let len_after = self.scheduler.seq(id).map_or(0, |s| s.tokens.len() + 1);
        if stop.is_none() {
            if a.generated >= a.max_tokens {
                stop = Some(StopReason::MaxTokens);
            } else if len_after >= self.max_model_len {
                stop = Some(StopReason::ContextLength);
            }
        }
        if stop.is_some() && !matches!(stop, Some(StopReason::StopSequence(_))) {
            // The stream ends here: release held-back text and partial characters.
            text.push_str(&a.stop.push(&a.text.utf8.finish()).emit);
            text.push_str(&a.stop.finish());
        }
        let sent = a
            .sink
            .send(TokenEvent::Token {
                id: token,
                text,
                logprobs,
            })
            .is_ok();
        match stop {
            Some(reason) => self.finish(id, reason),
            // A receiver gone mid-step is aborted at the next step's start,
            // after pending commands: a caller's deliberate stop, sent
            // before its receiver dropped, then is not counted as an abort.
            None => {
                if !sent {
                    tracing::trace!(seq = id, "receiver gone");
                }
                self.scheduler.append(id, token);
            }
        }
    }

    fn finish(&mut self, id: SeqId, reason: StopReason) {
        let state = self.scheduler.remove(id);
        if let Some(a) = self.active.remove(&id) {
            let usage = Usage {
                prompt_tokens: state.as_ref().map_or(0, |s| s.prompt_len),
                output_tokens: a.generated,
                cached_prompt_tokens: state
                    .as_ref()
                    .and_then(|s| s.cached_prompt_tokens)
                    .unwrap_or(0),
                queue_time: a
                    .first_scheduled
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(a.arrived)),
            };
            // A receiver that is gone no longer cares.
            let _ = a.sink.send(TokenEvent::Finished { reason, usage });
        }
    }

    fn fail(&mut self, ids: impl IntoIterator<Item = SeqId>, message: &str) {
        for id in ids {
            self.scheduler.remove(id);
            if let Some(a) = self.active.remove(&id) {
                let _ = a.sink.send(TokenEvent::Error {
                    message: message.to_owned(),
                });
            }
        }
    }
}
