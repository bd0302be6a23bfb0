//! The contract between the engine loop and a compute backend.
//!
//! A backend owns the model and the K/V memory; the engine owns which blocks
//! belong to whom. Each step the engine hands over a [`Batch`] (new tokens,
//! positions, block tables, which sequences need logits) and gets back one
//! logits row per sequence that asked.

pub mod cpu;
pub mod cuda;

pub use cpu::CpuExecutor;
#[cfg(feature = "cuda")]
pub use cuda::CudaExecutor;
pub use cuda::{CudaExecutorOptions, CudaStartup};

/// What a backend can run; the scheduler plans within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// A short name for logs ("cpu", "cuda", "neuron").
    pub name: &'static str,
    /// Most sequences in one step.
    pub max_batch_seqs: usize,
    /// Most tokens in one step.
    pub max_batch_tokens: usize,
    /// Whether one step may hold prefill chunks and decodes together.
    pub mix_prefill_and_decode: bool,
    /// Token counts a step is padded to (static-shape backends); empty when
    /// any count runs as is.
    pub token_buckets: Vec<usize>,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks the backend holds.
    pub num_kv_blocks: usize,
    /// Logits per row.
    pub vocab_size: usize,
    /// Longest sequence the model takes.
    pub max_model_len: usize,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct BatchSeq<'a> {
    /// New tokens of this step.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; the cache holds positions `0..start_pos`.
    pub start_pos: usize,
    /// Physical KV blocks covering `0..start_pos + tokens.len()`.
    pub block_table: &'a [u32],
    /// Whether the last token's logits are wanted.
    pub want_logits: bool,
}

/// One step's work.
#[derive(Debug, Clone, Default)]
pub struct Batch<'a> {
    pub seqs: Vec<BatchSeq<'a>>,
}

impl Batch<'_> {
    /// Tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// Logits of a step: one row per sequence that asked.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// `[rows, vocab]`.
    pub logits: Vec<f32>,
    /// For each sequence of the batch, its row, if it asked for one.
    pub rows: Vec<Option<usize>>,
    pub vocab_size: usize,
}

impl StepOutput {
    /// Sequence `i`'s logits row.
    pub fn logits(&self, i: usize) -> Option<&[f32]> {
        let r = (*self.rows.get(i)?)?;
        self.logits
            .get(r * self.vocab_size..(r + 1) * self.vocab_size)
    }
}

/// A step a backend could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Forward(#[from] factory_models::ForwardError),
    #[error("backend failure: {0}")]
    Backend(String),
}

/// A compute backend.
pub trait Executor: Send {
    /// What it can run.
    fn capabilities(&self) -> &Capabilities;

    /// Runs one step: writes the new tokens' K/V into the blocks named by
    /// each block table and returns the logits asked for.
    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError>;
}
