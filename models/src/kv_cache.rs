//! Paged KV storage: per layer, K and V in fixed-size blocks of token slots.
//!
//! Layout per layer: `[num_blocks, block_size, kv_heads, head_dim]` f32. Which
//! blocks belong to which sequence is the engine's business (block tables);
//! this type only holds the memory.

use factory_kernels::cpu::KvLayerView;

use crate::config::ModelConfig;

/// K and V of one layer.
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The whole cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Floats per token slot per layer for K (and again for V).
    pub kv_dim: usize,
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// Allocates `num_blocks` blocks of `block_size` slots for every layer.
    pub fn new(cfg: &ModelConfig, block_size: usize, num_blocks: usize) -> Self {
        let kv_dim = cfg.kv_dim();
        let n = num_blocks * block_size * kv_dim;
        Self {
            block_size,
            num_blocks,
            kv_dim,
            layers: (0..cfg.num_layers)
                .map(|_| LayerKv {
                    k: vec![0.0; n],
                    v: vec![0.0; n],
                })
                .collect(),
        }
    }

    /// Bytes one block takes across all layers (K and V).
    pub fn bytes_per_block(cfg: &ModelConfig, block_size: usize) -> usize {
        2 * cfg.num_layers * block_size * cfg.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Blocks that fit in `bytes`.
    pub fn blocks_for_budget(cfg: &ModelConfig, block_size: usize, bytes: usize) -> usize {
        bytes / Self::bytes_per_block(cfg, block_size).max(1)
    }

    /// Total token slots.
    pub fn capacity_tokens(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Read-only view of one layer for the attention kernel.
    pub fn layer_view(&self, layer: usize) -> KvLayerView<'_> {
        let l = &self.layers[layer];
        KvLayerView {
            k: &l.k,
            v: &l.v,
            block_size: self.block_size,
        }
    }

    /// Copies block `src` to block `dst` in every layer (copy-on-write for
    /// shared prefixes).
    pub fn copy_block(&mut self, src: usize, dst: usize) {
        let n = self.block_size * self.kv_dim;
        for l in &mut self.layers {
            l.k.copy_within(src * n..(src + 1) * n, dst * n);
            l.v.copy_within(src * n..(src + 1) * n, dst * n);
        }
    }
}
