//! CUDA executor settings, what start-up found, and the KV cache sizing
//! arithmetic (plain host code: tested without a GPU).

use factory_models::ModelConfig;

use crate::executor::ExecutorError;

/// How to build a [`super::CudaExecutor`].
#[derive(Debug, Clone, PartialEq)]
pub struct CudaExecutorOptions {
    /// CUDA device ordinal.
    pub device: usize,
    /// Share of the device memory free after weights and activations that the
    /// KV cache may take (0 < f <= 1).
    pub gpu_memory_utilization: f64,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Most sequences in one step.
    pub max_batch_seqs: usize,
    /// Most tokens in one step (activation buffers are sized for it).
    pub max_batch_tokens: usize,
    /// Longest sequence; the model's own limit when `None` (never above it).
    pub max_model_len: Option<usize>,
    /// Capture decode steps as CUDA graphs (not implemented yet: ignored with a warning).
    pub cuda_graphs: bool,
}

impl Default for CudaExecutorOptions {
    fn default() -> Self {
        Self {
            device: 0,
            gpu_memory_utilization: 0.9,
            block_size: 16,
            max_batch_seqs: 256,
            max_batch_tokens: 8192,
            max_model_len: None,
            cuda_graphs: false,
        }
    }
}

fn bad(msg: String) -> ExecutorError {
    ExecutorError::Backend(msg)
}

impl CudaExecutorOptions {
    /// Checks the options on their own.
    pub fn validate(&self) -> Result<(), ExecutorError> {
        let f = self.gpu_memory_utilization;
        if !(f > 0.0 && f <= 1.0) {
            return Err(bad(format!(
                "gpu_memory_utilization must be in (0, 1], got {f}"
            )));
        }
        if self.block_size == 0 || self.max_batch_seqs == 0 || self.max_batch_tokens == 0 {
            return Err(bad(
                "block_size, max_batch_seqs and max_batch_tokens must be at least 1".into(),
            ));
        }
        if self.max_model_len == Some(0) {
            return Err(bad("max_model_len must be at least 1".into()));
        }
        if self.max_batch_seqs > i32::MAX as usize || self.max_batch_tokens > i32::MAX as usize {
            return Err(bad("batch limits must fit in i32".into()));
        }
        Ok(())
    }

    /// The longest sequence for `config`: the option, capped at the model's limit.
    pub fn model_len(&self, config: &ModelConfig) -> usize {
        let own = config.max_position_embeddings;
        self.max_model_len.map_or(own, |m| m.min(own))
    }
}

/// What start-up found and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaStartup {
    pub device_name: String,
    /// Bytes of weights on the device (bf16).
    pub weight_bytes: u64,
    /// Seconds from opening the device to the executor being ready.
    pub load_seconds: f64,
    pub kv_blocks: usize,
    pub kv_bytes: u64,
    /// Seconds spent capturing CUDA graphs; `None` when none were captured.
    pub graph_capture_seconds: Option<f64>,
}

/// Bytes one KV block takes over all layers: K and V, bf16.
pub fn kv_bytes_per_block(config: &ModelConfig, block_size: usize) -> u64 {
    (config.num_layers * 2 * block_size * config.kv_dim() * 2) as u64
}

/// How many KV blocks fit: `free * utilization - reserve` bytes, whole blocks,
/// at most `max_seqs` sequences of `max_model_len` tokens, and an error when
/// not even one sequence of `max_model_len` tokens fits.
pub fn plan_kv_blocks(
    free_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
    bytes_per_block: u64,
    block_size: usize,
    max_model_len: usize,
    max_seqs: usize,
) -> Result<usize, ExecutorError> {
    let per_seq = max_model_len.div_ceil(block_size.max(1));
    let budget = ((free_bytes as f64 * utilization) as u64).saturating_sub(reserve_bytes);
    let fit = usize::try_from(budget / bytes_per_block.max(1)).unwrap_or(usize::MAX);
    let blocks = fit.min(per_seq.saturating_mul(max_seqs));
    if blocks < per_seq {
        return Err(bad(format!(
            "the KV cache needs {per_seq} blocks ({} MiB) for one sequence of {max_model_len} tokens, \
             but only {fit} fit in {} MiB free x {utilization} - {} MiB reserved: \
             lower max_model_len or raise gpu_memory_utilization",
            (per_seq as u64 * bytes_per_block) >> 20,
            free_bytes >> 20,
            reserve_bytes >> 20
        )));
    }
    // Slots are i32 on the device.
    let max_blocks = i32::MAX as usize / block_size.max(1);
    Ok(blocks.min(max_blocks))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A small Llama-shaped config (2 layers, GQA 4/2, head_dim 8).
    pub(crate) fn tiny_config() -> ModelConfig {
        ModelConfig {
            family: factory_models::Family::Llama,
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 48,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_style: factory_kernels::cpu::RopeStyle::Half,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn options_are_range_checked() {
        assert!(CudaExecutorOptions::default().validate().is_ok());
        for f in [0.0, -0.1, 1.01, f64::NAN] {
            let o = CudaExecutorOptions {
                gpu_memory_utilization: f,
                ..Default::default()
            };
            assert!(o.validate().is_err(), "{f}");
        }
        let one = CudaExecutorOptions {
            gpu_memory_utilization: 1.0,
            ..Default::default()
        };
        assert!(one.validate().is_ok());
        for o in [
            CudaExecutorOptions {
                block_size: 0,
                ..Default::default()
            },
            CudaExecutorOptions {
                max_batch_seqs: 0,
                ..Default::default()
            },
            CudaExecutorOptions {
                max_batch_tokens: 0,
                ..Default::default()
            },
            CudaExecutorOptions {
                max_model_len: Some(0),
                ..Default::default()
            },
        ] {
            assert!(o.validate().is_err(), "{o:?}");
        }
    }

    #[test]
    fn kv_blocks_fill_the_budget_in_whole_blocks() {
        // 1000 MiB free, 90% = 900 MiB, minus 100 MiB reserve = 800 MiB; 1 MiB blocks.
        let n = plan_kv_blocks(1000 * MIB, 0.9, 100 * MIB, MIB, 16, 1024, 1000).unwrap();
        assert_eq!(n, 800);
        // Capped at max_seqs full-length sequences: 2 x 1024 / 16 = 128 blocks.
        let n = plan_kv_blocks(1000 * MIB, 0.9, 100 * MIB, MIB, 16, 1024, 2).unwrap();
        assert_eq!(n, 128);
        // Not even one sequence of 1024 tokens (64 blocks): a clear error.
        let e = plan_kv_blocks(150 * MIB, 0.9, 100 * MIB, MIB, 16, 1024, 2).unwrap_err();
        assert!(e.to_string().contains("one sequence of 1024 tokens"), "{e}");
        // A reserve above the budget saturates to zero blocks, an error, no underflow.
        assert!(plan_kv_blocks(MIB, 0.5, 100 * MIB, MIB, 16, 16, 1).is_err());
    }

    #[test]
    fn bytes_per_block_counts_k_and_v_of_every_layer() {
        let cfg = tiny_config();
        // 2 layers x (K, V) x 16 tokens x kv_dim x 2 bytes.
        assert_eq!(
            kv_bytes_per_block(&cfg, 16),
            (cfg.num_layers * 2 * 16 * cfg.kv_dim() * 2) as u64
        );
        let o = CudaExecutorOptions {
            max_model_len: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(o.model_len(&cfg), cfg.max_position_embeddings);
        let o = CudaExecutorOptions {
            max_model_len: Some(7),
            ..Default::default()
        };
        assert_eq!(o.model_len(&cfg), 7);
    }
}
