//! The CPU backend: the model forward of `factory-models` over CPU kernels,
//! with K/V in host memory.

use std::sync::Arc;

use factory_models::{KvCache, KvDType, LogitsRequest, Model, SeqInput};

use super::{Batch, Capabilities, Executor, ExecutorError, StepOutput};

/// Runs whole mixed batches on the CPU.
#[derive(Debug)]
pub struct CpuExecutor {
    model: Arc<Model>,
    cache: KvCache,
    caps: Capabilities,
}

impl CpuExecutor {
    /// A backend for `model` with `num_blocks` f32 KV blocks of `block_size` tokens.
    pub fn new(model: Arc<Model>, block_size: usize, num_blocks: usize) -> Self {
        Self::with_kv_dtype(model, block_size, num_blocks, KvDType::F32)
    }

    /// A backend for `model` with `num_blocks` KV blocks of `block_size`
    /// tokens, K/V stored as `dtype`.
    pub fn with_kv_dtype(
        model: Arc<Model>,
        block_size: usize,
        num_blocks: usize,
        dtype: KvDType,
    ) -> Self {
        let cache = KvCache::with_dtype(&model.config, block_size, num_blocks, dtype);
        let caps = Capabilities {
            name: "cpu",
            max_batch_seqs: usize::MAX,
            max_batch_tokens: usize::MAX,
            mix_prefill_and_decode: true,
            token_buckets: Vec::new(),
            block_size,
            num_kv_blocks: num_blocks,
            vocab_size: model.config.vocab_size,
            max_model_len: model.config.max_position_embeddings,
        };
        Self { model, cache, caps }
    }

    /// A backend whose `dtype` K/V cache fills `bytes` (whole blocks), capped
    /// at `max_tokens` token slots; logs the size chosen.
    pub fn with_memory_budget(
        model: Arc<Model>,
        block_size: usize,
        bytes: usize,
        max_tokens: usize,
        dtype: KvDType,
    ) -> Result<Self, ExecutorError> {
        let per_block = Self::bytes_per_block(&model, block_size.max(1), dtype);
        let blocks = (bytes / per_block.max(1)).min(max_tokens.div_ceil(block_size.max(1)));
        if blocks == 0 {
            return Err(ExecutorError::Backend(format!(
                "a KV cache of {bytes} bytes holds no block of {block_size} tokens ({per_block} bytes each in {dtype})"
            )));
        }
        tracing::info!(
            "KV cache: {blocks} blocks of {block_size} tokens = {} tokens, {:.1} MiB, {dtype}",
            blocks * block_size,
            (blocks * per_block) as f64 / (1 << 20) as f64
        );
        Ok(Self::with_kv_dtype(model, block_size, blocks, dtype))
    }

    /// Bytes of K/V memory one block takes for `model` when stored as `dtype`.
    pub fn bytes_per_block(model: &Model, block_size: usize, dtype: KvDType) -> usize {
        KvCache::bytes_per_block(&model.config, block_size, dtype)
    }

    /// Element type of the K/V cache.
    pub fn kv_dtype(&self) -> KvDType {
        self.cache.dtype()
    }
}

impl Executor for CpuExecutor {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        let inputs: Vec<SeqInput<'_>> = batch
            .seqs
            .iter()
            .map(|s| SeqInput {
                tokens: s.tokens,
                start_pos: s.start_pos,
                block_table: s.block_table,
                logits: if s.want_logits {
                    LogitsRequest::Last
                } else {
                    LogitsRequest::None
                },
            })
            .collect();
        let out = self.model.forward(&inputs, &mut self.cache)?;
        let rows = out
            .seq_rows
            .iter()
            .map(|r| (!r.is_empty()).then(|| r.end - 1))
            .collect();
        Ok(StepOutput {
            logits: out.logits,
            rows,
            vocab_size: out.vocab_size,
        })
    }
}
