//! Paged KV storage: per layer, K and V in fixed-size blocks of token slots.
//!
//! Layout per layer: `[num_blocks, block_size, kv_heads, head_dim]`, f32 or
//! f16 ([`KvDType`], one type for the whole cache). Which blocks belong to
//! which sequence is the engine's business (block tables); this type only
//! holds the memory.

use factory_kernels::cpu::{self, KvDType, KvElement, KvLayerView};
use half::f16;
use rayon::prelude::*;

use crate::config::ModelConfig;

/// K and V of one layer, in the cache's element type.
#[derive(Debug, Clone)]
pub enum LayerKv {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

impl LayerKv {
    /// `n` committed zeros each for K and V.
    fn zeros(dtype: KvDType, n: usize) -> Self {
        match dtype {
            KvDType::F32 => LayerKv::F32 {
                k: committed_zeros(n),
                v: committed_zeros(n),
            },
            KvDType::F16 => LayerKv::F16 {
                k: committed_zeros(n),
                v: committed_zeros(n),
            },
        }
    }

    /// Stores new K/V rows (`[tokens, kv_dim]` f32) at cache slots
    /// (`block * block_size + offset`), converted to the layer's type.
    pub fn write(&mut self, slots: &[usize], k: &[f32], v: &[f32]) {
        match self {
            LayerKv::F32 { k: ck, v: cv } => cpu::write_kv(ck, cv, slots, k, v),
            LayerKv::F16 { k: ck, v: cv } => cpu::write_kv(ck, cv, slots, k, v),
        }
    }

    /// Read-only view for the attention kernel.
    pub fn view(&self, block_size: usize) -> KvLayerView<'_> {
        match self {
            LayerKv::F32 { k, v } => KvLayerView::f32(k, v, block_size),
            LayerKv::F16 { k, v } => KvLayerView::f16(k, v, block_size),
        }
    }

    /// Copies elements `src` to `dst` (ranges of equal length) in K and V.
    fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            LayerKv::F32 { k, v } => {
                k.copy_within(src.clone(), dst);
                v.copy_within(src, dst);
            }
            LayerKv::F16 { k, v } => {
                k.copy_within(src.clone(), dst);
                v.copy_within(src, dst);
            }
        }
    }
}

/// The whole cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Elements per token slot per layer for K (and again for V).
    pub kv_dim: usize,
    pub layers: Vec<LayerKv>,
    dtype: KvDType,
}

impl KvCache {
    /// Allocates `num_blocks` f32 blocks of `block_size` slots for every layer.
    pub fn new(cfg: &ModelConfig, block_size: usize, num_blocks: usize) -> Self {
        Self::with_dtype(cfg, block_size, num_blocks, KvDType::F32)
    }

    /// Allocates `num_blocks` blocks of `block_size` slots for every layer,
    /// storing K/V as `dtype`.
    pub fn with_dtype(
        cfg: &ModelConfig,
        block_size: usize,
        num_blocks: usize,
        dtype: KvDType,
    ) -> Self {
        let kv_dim = cfg.kv_dim();
        let n = num_blocks * block_size * kv_dim;
        Self {
            block_size,
            num_blocks,
            kv_dim,
            layers: (0..cfg.num_layers)
                .into_par_iter()
                .map(|_| LayerKv::zeros(dtype, n))
                .collect(),
            dtype,
        }
    }

    /// Element type of K and V.
    pub fn dtype(&self) -> KvDType {
        self.dtype
    }

    /// Bytes one block takes across all layers (K and V) when stored as `dtype`.
    pub fn bytes_per_block(cfg: &ModelConfig, block_size: usize, dtype: KvDType) -> usize {
        2 * cfg.num_layers * block_size * cfg.kv_dim() * dtype.bytes()
    }

    /// Blocks of `dtype` that fit in `bytes`.
    pub fn blocks_for_budget(
        cfg: &ModelConfig,
        block_size: usize,
        bytes: usize,
        dtype: KvDType,
    ) -> usize {
        bytes / Self::bytes_per_block(cfg, block_size, dtype).max(1)
    }

    /// Total token slots.
    pub fn capacity_tokens(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Read-only view of one layer for the attention kernel.
    pub fn layer_view(&self, layer: usize) -> KvLayerView<'_> {
        self.layers[layer].view(self.block_size)
    }

    /// Copies block `src` to block `dst` in every layer (copy-on-write for
    /// shared prefixes).
    pub fn copy_block(&mut self, src: usize, dst: usize) {
        let n = self.block_size * self.kv_dim;
        for l in &mut self.layers {
            l.copy_within(src * n..(src + 1) * n, dst * n);
        }
    }
}

/// `n` zeros whose memory is mapped now. A fresh allocation of this size is
/// mapped lazily, page by page on first write, and those faults (~2 µs per
/// 4 KiB) would land inside engine steps as sequences first reach each
/// block: a tenth of a batched decode step's time until the cache had been
/// used once. On Linux the range is also offered to transparent huge pages
/// (fewer faults now, fewer TLB misses when attention gathers blocks).
fn committed_zeros<T: KvElement>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    // Advised while still untouched, so the writes below fault huge pages in.
    advise_huge_pages(v.spare_capacity_mut());
    v.resize(n, T::zeroed());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if hi > lo {
        // SAFETY: [lo, hi) lies inside `v`'s allocation, which we own; the
        // advice changes how pages are backed, never their contents (the
        // range is still untouched) or its validity.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &mut [T]) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            family: crate::Family::Llama,
            vocab_size: 16,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_style: factory_kernels::cpu::RopeStyle::Half,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn f16_blocks_take_half_the_bytes_and_hold_what_was_written() {
        let cfg = config();
        let (bs, kvd) = (4, cfg.kv_dim());
        assert_eq!(
            KvCache::bytes_per_block(&cfg, bs, KvDType::F32),
            2 * 2 * 4 * 16 * 4
        );
        assert_eq!(
            KvCache::bytes_per_block(&cfg, bs, KvDType::F16) * 2,
            KvCache::bytes_per_block(&cfg, bs, KvDType::F32)
        );
        assert_eq!(KvCache::blocks_for_budget(&cfg, bs, 4096, KvDType::F16), 8);
        for dtype in KvDType::ALL {
            let mut c = KvCache::with_dtype(&cfg, bs, 3, dtype);
            assert_eq!(c.dtype(), dtype);
            assert_eq!(c.layer_view(1).k.dtype(), dtype);
            assert_eq!(c.layer_view(1).k.len(), 3 * bs * kvd);
            // One token into slot 1 of block 2, then block 2 copied to 0.
            let k: Vec<f32> = (0..kvd).map(|i| i as f32 * 0.25).collect();
            let v: Vec<f32> = (0..kvd).map(|i| -(i as f32)).collect();
            c.layers[1].write(&[2 * bs + 1], &k, &v);
            c.copy_block(2, 0);
            let read = |d: factory_kernels::cpu::KvData<'_>, slot: usize| -> Vec<f32> {
                let r = slot * kvd..(slot + 1) * kvd;
                match d {
                    factory_kernels::cpu::KvData::F32(x) => x[r].to_vec(),
                    factory_kernels::cpu::KvData::F16(x) => {
                        x[r].iter().map(|h| h.to_f32()).collect()
                    }
                }
            };
            let view = c.layer_view(1);
            for slot in [2 * bs + 1, 1] {
                assert_eq!(read(view.k, slot), k, "{dtype}");
                assert_eq!(read(view.v, slot), v, "{dtype}");
            }
            assert!(read(view.k, 2 * bs).iter().all(|&x| x == 0.0));
            assert!(read(c.layer_view(0).k, 2 * bs + 1)
                .iter()
                .all(|&x| x == 0.0));
        }
    }
}
