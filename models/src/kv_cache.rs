//! Paged KV storage: per layer, K and V in fixed-size blocks of token slots.
//!
//! Layout per layer: `[num_blocks, block_size, kv_heads, head_dim]` f32. Which
//! blocks belong to which sequence is the engine's business (block tables);
//! this type only holds the memory.

use factory_kernels::cpu::KvLayerView;
use rayon::prelude::*;

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
                .into_par_iter()
                .map(|_| LayerKv {
                    k: committed_zeros(n),
                    v: committed_zeros(n),
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
        KvLayerView::f32(&l.k, &l.v, self.block_size)
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

/// `n` zeros whose memory is mapped now. A fresh allocation of this size is
/// mapped lazily, page by page on first write, and those faults (~2 µs per
/// 4 KiB) would land inside engine steps as sequences first reach each
/// block: a tenth of a batched decode step's time until the cache had been
/// used once. On Linux the range is also offered to transparent huge pages
/// (fewer faults now, fewer TLB misses when attention gathers blocks).
fn committed_zeros(n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    advise_huge_pages(&mut v);
    // Through black_box: the compiler knows the allocation is zeroed and
    // would drop a plain fill.
    std::hint::black_box(&mut v[..]).fill(0.0);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if hi > lo {
        // SAFETY: [lo, hi) lies inside `v`'s allocation, which we own; the
        // advice changes how pages are backed, never their contents (the
        // range is still untouched zeros) or its validity.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &mut [f32]) {}
