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

/// Positions scored together: one exp pass and one max update per chunk.
const CHUNK: usize = 32;

/// Online-softmax attention of one query head over `len` cached positions,
/// accumulating straight into `acc`. Positions go by chunks: scores first,
/// then one running-max update and a vectorizable exp over the chunk, then
/// the weighted V rows, so the per-position scalar `exp` calls are gone.
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
    let mut scores = [0f32; CHUNK];
    let mut bases = [0usize; CHUNK];
    let mut p0 = 0;
    while p0 < len {
        let n = CHUNK.min(len - p0);
        let mut cmax = f32::NEG_INFINITY;
        for j in 0..n {
            let p = p0 + j;
            let block = table[p / kv.block_size] as usize;
            let base = (block * kv.block_size + p % kv.block_size) * row + kv_head * hd;
            bases[j] = base;
            let s = (kern.dot_plain)(q, &kv.k[base..base + hd]) * shape.scale;
            scores[j] = s;
            cmax = cmax.max(s);
        }
        if cmax > max {
            if denom > 0.0 {
                let f = (max - cmax).exp();
                denom *= f;
                (kern.scale)(f, acc);
            }
            max = cmax;
        }
        let w = &mut scores[..n];
        for x in w.iter_mut() {
            *x -= max;
        }
        exp_nonpositive(w);
        for (j, &wj) in w.iter().enumerate() {
            denom += wj;
            (kern.axpy)(wj, &kv.v[bases[j]..bases[j] + hd], acc);
        }
        p0 += n;
    }
    if denom > 0.0 {
        (kern.scale)(1.0 / denom, acc);
    }
}

/// `x = exp(x)` for `x <= 0` (NaN stays NaN), written so the loop
/// vectorizes: x = n·ln 2 + r with integer n (exponent bits) and
/// |r| <= ln 2 / 2 (a degree-7 polynomial); ln 2 is split in two (Cody-Waite)
/// so r keeps full precision. Relative error below 3e-7.
fn exp_nonpositive(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    for x in xs.iter_mut() {
        // Below -87 the result underflows to (almost) zero anyway.
        let xc = x.max(-87.0);
        let n = (xc * LOG2E + ROUND) - ROUND;
        let r = (xc - n * LN2_HI) - n * LN2_LO;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        let bits = ((n as i32 + 127) as u32) << 23;
        let e = p * f32::from_bits(bits);
        // x.max() maps NaN to -87: keep NaN visible.
        *x = if x.is_nan() { *x } else { e };
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
    fn vectorizable_exp_matches_libm() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -(i as f32) * 0.0005;
            let mut v = [x];
            exp_nonpositive(&mut v);
            let want = x.exp();
            if want > 1e-30 {
                worst = worst.max(((v[0] - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "relative error {worst}");
        let mut v = [f32::NEG_INFINITY, -1000.0, 0.0, f32::NAN];
        exp_nonpositive(&mut v);
        assert!(v[0] < 1e-37 && v[1] < 1e-37 && v[2] == 1.0 && v[3].is_nan());
    }

    #[test]
    fn long_contexts_with_wide_score_ranges_match_dense_attention() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let shape = AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim: 16,
            scale: 1.3,
        };
        let (bs, ctx, new) = (16usize, 150usize, 5usize);
        let row = shape.kv_heads * shape.head_dim;
        // Scores grow along the context so the running max moves often.
        let k: Vec<f32> = (0..ctx * row)
            .map(|i| rng.random_range(-1.0f32..1.0) * (1.0 + (i / row) as f32 / 40.0))
            .collect();
        let v: Vec<f32> = (0..ctx * row)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let q: Vec<f32> = (0..new * shape.heads * shape.head_dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let blocks = ctx.div_ceil(bs);
        let table: Vec<u32> = (0..blocks as u32).rev().collect();
        let slots: Vec<usize> = (0..ctx)
            .map(|p| table[p / bs] as usize * bs + p % bs)
            .collect();
        let mut ck = vec![f32::NAN; blocks * bs * row];
        let mut cv = vec![f32::NAN; blocks * bs * row];
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
            assert!((a - b).abs() < 2e-5, "{a} vs {b}");
        }
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
