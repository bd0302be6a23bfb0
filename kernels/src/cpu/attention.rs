//! Causal attention over a paged KV cache.
//!
//! Cache layout per layer: `[num_blocks, block_size, kv_heads, head_dim]` for K
//! and the same for V. A sequence's block table maps its logical blocks to
//! physical ones; token position `p` lives in block `table[p / block_size]`,
//! slot `p % block_size`.

use rayon::prelude::*;

/// Head counts and sizes of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k (usually `1/sqrt(head_dim)`).
    pub scale: f32,
}

/// Read-only view of one layer's paged K and V.
#[derive(Debug, Clone, Copy)]
pub struct KvLayerView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub block_size: usize,
}

/// One sequence's share of a batch: its query rows and its cache.
#[derive(Debug, Clone, Copy)]
pub struct SeqAttention<'a> {
    /// First row of this sequence in the batch's q/out.
    pub q_start: usize,
    /// Rows (new tokens) of this sequence in the batch.
    pub q_len: usize,
    /// Tokens in the cache once this step's K/V are written (the new ones
    /// are its last `q_len`).
    pub context_len: usize,
    /// Physical block of each logical block.
    pub block_table: &'a [u32],
}

/// Writes new K/V rows (`[tokens, kv_heads * head_dim]`) into cache slots
/// (`slot = block * block_size + offset`).
pub fn write_kv(cache_k: &mut [f32], cache_v: &mut [f32], slots: &[usize], k: &[f32], v: &[f32]) {
    let row = k.len() / slots.len().max(1);
    for (i, &s) in slots.iter().enumerate() {
        cache_k[s * row..(s + 1) * row].copy_from_slice(&k[i * row..(i + 1) * row]);
        cache_v[s * row..(s + 1) * row].copy_from_slice(&v[i * row..(i + 1) * row]);
    }
}

/// Causal attention for every sequence in a batch. `q` and `out` are
/// `[tokens, heads, head_dim]`; query row `i` of a sequence sits at position
/// `context_len - q_len + i` and sees positions `0..=` that.
pub fn paged_attention(
    q: &[f32],
    kv: &KvLayerView<'_>,
    seqs: &[SeqAttention<'_>],
    shape: AttentionShape,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let group = shape.heads / shape.kv_heads;
    // Which sequence owns each row: rows are few per step, so a table is cheap.
    let tokens = out.len() / (shape.heads * hd);
    let mut owner = vec![usize::MAX; tokens];
    for (si, s) in seqs.iter().enumerate() {
        owner[s.q_start..s.q_start + s.q_len].fill(si);
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, acc)| {
        let (t, h) = (idx / shape.heads, idx % shape.heads);
        let Some(seq) = owner.get(t).and_then(|&si| seqs.get(si)) else {
            acc.fill(0.0);
            return;
        };
        let pos = seq.context_len - seq.q_len + (t - seq.q_start);
        let qv = &q[idx * hd..(idx + 1) * hd];
        attend_one(qv, kv, seq.block_table, pos + 1, h / group, shape, acc);
    });
}

/// Online-softmax attention of one query head over `len` cached positions,
/// accumulating straight into `acc`.
fn attend_one(
    q: &[f32],
    kv: &KvLayerView<'_>,
    table: &[u32],
    len: usize,
    kv_head: usize,
    shape: AttentionShape,
    acc: &mut [f32],
) {
    let hd = shape.head_dim;
    let row = shape.kv_heads * hd;
    let kern = crate::cpu::simd::Kernels::get();
    acc.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    let mut denom = 0f32;
    for p in 0..len {
        let block = table[p / kv.block_size] as usize;
        let base = (block * kv.block_size + p % kv.block_size) * row + kv_head * hd;
        let k = &kv.k[base..base + hd];
        let s = (kern.dot_plain)(q, k) * shape.scale;
        if s > max {
            let f = (max - s).exp();
            denom *= f;
            (kern.scale)(f, acc);
            max = s;
        }
        let w = (s - max).exp();
        denom += w;
        (kern.axpy)(w, &kv.v[base..base + hd], acc);
    }
    if denom > 0.0 {
        (kern.scale)(1.0 / denom, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Dense causal attention over contiguous K/V, the textbook way.
    fn dense(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, first_pos: usize) -> Vec<f32> {
        let hd = shape.head_dim;
        let tokens = q.len() / (shape.heads * hd);
        let row = shape.kv_heads * hd;
        let mut out = vec![0f32; q.len()];
        for t in 0..tokens {
            for h in 0..shape.heads {
                let kh = h / (shape.heads / shape.kv_heads);
                let qv = &q[(t * shape.heads + h) * hd..][..hd];
                let n = first_pos + t + 1;
                let scores: Vec<f32> = (0..n)
                    .map(|p| {
                        qv.iter()
                            .zip(&k[p * row + kh * hd..][..hd])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            * shape.scale
                    })
                    .collect();
                let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (p, w) in e.iter().enumerate() {
                    for d in 0..hd {
                        out[(t * shape.heads + h) * hd + d] += w / z * v[p * row + kh * hd + d];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn paged_attention_equals_dense_attention_through_a_scrambled_block_table() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let shape = AttentionShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            scale: 0.35,
        };
        let (bs, ctx, new) = (4usize, 11usize, 3usize);
        let row = shape.kv_heads * shape.head_dim;
        let mut r = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        };
        let k = r(ctx * row);
        let v = r(ctx * row);
        let q = r(new * shape.heads * shape.head_dim);
        // Physical blocks deliberately out of order, with unused blocks between.
        let table = [5u32, 1, 3];
        let slots: Vec<usize> = (0..ctx)
            .map(|p| table[p / bs] as usize * bs + p % bs)
            .collect();
        let mut ck = vec![f32::NAN; 6 * bs * row];
        let mut cv = vec![f32::NAN; 6 * bs * row];
        write_kv(&mut ck, &mut cv, &slots, &k, &v);
        let view = KvLayerView {
            k: &ck,
            v: &cv,
            block_size: bs,
        };
        let seq = SeqAttention {
            q_start: 0,
            q_len: new,
            context_len: ctx,
            block_table: &table,
        };
        let mut out = vec![f32::NAN; q.len()];
        paged_attention(&q, &view, &[seq], shape, &mut out);
        let want = dense(&q, &k, &v, shape, ctx - new);
        for (a, b) in want.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
