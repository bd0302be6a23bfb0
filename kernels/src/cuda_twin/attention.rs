//! Twins of attention_decode.cu and attention_prefill.cu: paged attention over
//! bf16 caches `[num_blocks, block_size, kv_heads, head_dim]`, f32 arithmetic,
//! bf16 output.

use half::bf16;

/// One layer's paged K and V.
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    pub k: &'a [bf16],
    pub v: &'a [bf16],
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl PagedKv<'_> {
    /// Offset of position `pos` of KV head `kvh` through a block table.
    fn offset(&self, table: &[i32], pos: usize, kvh: usize) -> usize {
        let slot = table[pos / self.block_size] as usize * self.block_size + pos % self.block_size;
        (slot * self.kv_heads + kvh) * self.head_dim
    }
}

/// Block tables of a batch: `[seqs, max_blocks]` row-major.
#[derive(Debug, Clone, Copy)]
pub struct BlockTables<'a> {
    pub tables: &'a [i32],
    pub max_blocks: usize,
}

impl BlockTables<'_> {
    fn row(&self, seq: usize) -> &[i32] {
        &self.tables[seq * self.max_blocks..(seq + 1) * self.max_blocks]
    }
}

/// Head counts of an attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    /// Multiplies q·k (usually `1/sqrt(head_dim)`).
    pub scale: f32,
}

/// Softmax-weighted V over positions `range` for one query: returns the
/// unnormalised accumulator, the max score and the sum of exponentials (the
/// partial state one decode block keeps).
fn attend_range(
    q: &[f32],
    kv: &PagedKv<'_>,
    table: &[i32],
    range: std::ops::Range<usize>,
    kvh: usize,
    scale: f32,
) -> (Vec<f32>, f32, f32) {
    let hd = kv.head_dim;
    let scores: Vec<f32> = range
        .clone()
        .map(|p| {
            let o = kv.offset(table, p, kvh);
            q.iter()
                .zip(&kv.k[o..o + hd])
                .map(|(a, b)| a * scale * b.to_f32())
                .sum::<f32>()
        })
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut acc = vec![0f32; hd];
    let mut sum = 0f32;
    for (p, s) in range.zip(&scores) {
        let e = (s - max).exp();
        sum += e;
        let o = kv.offset(table, p, kvh);
        for (a, v) in acc.iter_mut().zip(&kv.v[o..o + hd]) {
            *a += e * v.to_f32();
        }
    }
    (acc, max, sum)
}

/// Decode attention, split into partitions of `partition_size` positions and
/// recombined as the GPU does. `q` is `[seqs, q_stride]` (heads * head_dim used);
/// sequence `s` attends to positions `0..context_lens[s]`; `out` is
/// `[seqs, heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_decode(
    q: &[bf16],
    q_stride: usize,
    kv: &PagedKv<'_>,
    tables: BlockTables<'_>,
    context_lens: &[i32],
    heads: Heads,
    partition_size: usize,
    out: &mut [bf16],
) {
    let hd = kv.head_dim;
    let group = heads.heads / heads.kv_heads;
    for (s, &ctx) in context_lens.iter().enumerate() {
        let ctx = ctx as usize;
        for h in 0..heads.heads {
            let qv: Vec<f32> = q[s * q_stride + h * hd..s * q_stride + (h + 1) * hd]
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let parts: Vec<(Vec<f32>, f32, f32)> = (0..ctx.div_ceil(partition_size))
                .map(|p| {
                    let r = p * partition_size..((p + 1) * partition_size).min(ctx);
                    attend_range(&qv, kv, tables.row(s), r, h / group, heads.scale)
                })
                .collect();
            let dst = &mut out[(s * heads.heads + h) * hd..(s * heads.heads + h + 1) * hd];
            if parts.is_empty() {
                dst.fill(bf16::ZERO);
                continue;
            }
            // The reducer: weights sum_p * exp(max_p - M) on normalised partials.
            let m = parts.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max);
            let mut num = vec![0f32; hd];
            let mut den = 0f32;
            for (acc, pm, ps) in &parts {
                let w = ps * (pm - m).exp();
                den += w;
                for (n, a) in num.iter_mut().zip(acc) {
                    *n += w * (a / ps);
                }
            }
            for (d, n) in dst.iter_mut().zip(&num) {
                *d = bf16::from_f32(n / den);
            }
        }
    }
}

/// The sequences of a prefill batch: rows `q_starts[s] .. q_starts[s] + q_lens[s]`
/// of q belong to sequence `s`, which has `context_lens[s]` tokens cached (its
/// new ones last).
#[derive(Debug, Clone, Copy)]
pub struct PrefillSeqs<'a> {
    pub q_starts: &'a [i32],
    pub q_lens: &'a [i32],
    pub context_lens: &'a [i32],
}

/// Causal prefill attention over the cache. `q` is `[tokens, q_stride]`, `out`
/// `[tokens, heads, head_dim]`; query row `i` of sequence `s` sits at position
/// `context_lens[s] - q_lens[s] + i`. Rows no sequence owns are left untouched.
pub fn paged_attention_prefill(
    q: &[bf16],
    q_stride: usize,
    kv: &PagedKv<'_>,
    tables: BlockTables<'_>,
    seqs: PrefillSeqs<'_>,
    heads: Heads,
    out: &mut [bf16],
) {
    let hd = kv.head_dim;
    let group = heads.heads / heads.kv_heads;
    for s in 0..seqs.q_lens.len() {
        let (start, len, ctx) = (
            seqs.q_starts[s] as usize,
            seqs.q_lens[s] as usize,
            seqs.context_lens[s] as usize,
        );
        for i in 0..len {
            let row = start + i;
            let pos = ctx - len + i;
            for h in 0..heads.heads {
                let qv: Vec<f32> = q[row * q_stride + h * hd..row * q_stride + (h + 1) * hd]
                    .iter()
                    .map(|v| v.to_f32())
                    .collect();
                let (acc, _, sum) =
                    attend_range(&qv, kv, tables.row(s), 0..pos + 1, h / group, heads.scale);
                let dst = &mut out[(row * heads.heads + h) * hd..(row * heads.heads + h + 1) * hd];
                for (d, a) in dst.iter_mut().zip(&acc) {
                    *d = bf16::from_f32(a / sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{paged_attention, AttentionShape, KvLayerView, SeqAttention};
    use crate::cuda_twin::{to_bf16, to_f32};
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// A random batch: bf16 cache with scrambled block tables (and NaN in unused
    /// slots, so a stray read shows), bf16 queries.
    struct Batch {
        k: Vec<bf16>,
        v: Vec<bf16>,
        tables: Vec<i32>,
        max_blocks: usize,
        q: Vec<bf16>,
        q_starts: Vec<i32>,
        q_lens: Vec<i32>,
        ctx: Vec<i32>,
    }

    const BS: usize = 16;

    impl Batch {
        /// The cache, block tables and per-sequence metadata as the kernels take them.
        fn views(
            &self,
            kv_heads: usize,
            head_dim: usize,
        ) -> (PagedKv<'_>, BlockTables<'_>, PrefillSeqs<'_>) {
            let kv = PagedKv {
                k: &self.k,
                v: &self.v,
                block_size: BS,
                kv_heads,
                head_dim,
            };
            let tables = BlockTables {
                tables: &self.tables,
                max_blocks: self.max_blocks,
            };
            let seqs = PrefillSeqs {
                q_starts: &self.q_starts,
                q_lens: &self.q_lens,
                context_lens: &self.ctx,
            };
            (kv, tables, seqs)
        }
    }

    fn batch(
        rng: &mut rand::rngs::StdRng,
        kv_heads: usize,
        hd: usize,
        heads: usize,
        seqs: &[(usize, usize)],
    ) -> Batch {
        let row = kv_heads * hd;
        let max_blocks = seqs.iter().map(|&(_, c)| c.div_ceil(BS)).max().unwrap_or(1);
        let total_blocks: usize = seqs.iter().map(|&(_, c)| c.div_ceil(BS)).sum::<usize>() + 3;
        let mut free: Vec<i32> = (0..total_blocks as i32).collect();
        free.shuffle(rng);
        let mut k = vec![bf16::NAN; total_blocks * BS * row];
        let mut v = vec![bf16::NAN; total_blocks * BS * row];
        let mut tables = vec![-1i32; seqs.len() * max_blocks];
        let (mut q_starts, mut q_lens, mut ctx) = (vec![], vec![], vec![]);
        let mut rows = 0;
        for (s, &(qlen, c)) in seqs.iter().enumerate() {
            for b in 0..c.div_ceil(BS) {
                tables[s * max_blocks + b] = free.pop().unwrap();
            }
            for p in 0..c {
                let slot = tables[s * max_blocks + p / BS] as usize * BS + p % BS;
                for j in 0..row {
                    // Keys grow along the context so the running max moves.
                    k[slot * row + j] =
                        bf16::from_f32(rng.random_range(-1.0..1.0) * (1.0 + p as f32 / 64.0));
                    v[slot * row + j] = bf16::from_f32(rng.random_range(-1.0..1.0));
                }
            }
            q_starts.push(rows as i32);
            q_lens.push(qlen as i32);
            ctx.push(c as i32);
            rows += qlen;
        }
        let q = to_bf16(
            &(0..rows * heads * hd)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect::<Vec<f32>>(),
        );
        Batch {
            k,
            v,
            tables,
            max_blocks,
            q,
            q_starts,
            q_lens,
            ctx,
        }
    }

    fn assert_close(a: &[bf16], b: &[bf16], tol: f32) {
        for (i, (x, y)) in to_f32(a).iter().zip(to_f32(b)).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    /// The prefill twin equals the CPU backend's paged attention (f32 over the
    /// same bf16 values) for a mixed batch of chunks and decode rows, GQA.
    #[test]
    fn prefill_twin_equals_the_cpu_paged_attention() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let (heads, kv_heads, hd) = (6usize, 2usize, 32usize);
        let b = batch(
            &mut rng,
            kv_heads,
            hd,
            heads,
            &[(9, 40), (1, 17), (33, 33), (5, 70)],
        );
        let (kv, tables, seqs) = b.views(kv_heads, hd);
        let h = Heads {
            heads,
            kv_heads,
            scale: 0.3,
        };
        let mut out = vec![bf16::NAN; b.q.len()];
        paged_attention_prefill(&b.q, heads * hd, &kv, tables, seqs, h, &mut out);

        let kf: Vec<f32> = to_f32(&b.k)
            .iter()
            .map(|v| if v.is_nan() { 0.0 } else { *v })
            .collect();
        let vf: Vec<f32> = to_f32(&b.v)
            .iter()
            .map(|v| if v.is_nan() { 0.0 } else { *v })
            .collect();
        let u32_tables: Vec<Vec<u32>> = (0..b.ctx.len())
            .map(|s| {
                b.tables[s * b.max_blocks..(s + 1) * b.max_blocks]
                    .iter()
                    .map(|&x| x.max(0) as u32)
                    .collect()
            })
            .collect();
        let cpu_seqs: Vec<SeqAttention> = (0..b.ctx.len())
            .map(|s| SeqAttention {
                q_start: b.q_starts[s] as usize,
                q_len: b.q_lens[s] as usize,
                context_len: b.ctx[s] as usize,
                block_table: &u32_tables[s],
            })
            .collect();
        let mut want = vec![0f32; b.q.len()];
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
            scale: 0.3,
        };
        paged_attention(
            &to_f32(&b.q),
            &KvLayerView::f32(&kf, &vf, BS),
            &cpu_seqs,
            shape,
            &mut want,
        );
        assert_close(&out, &to_bf16(&want), 1e-2);
    }

    /// Splitting the context into partitions and recombining gives the unsplit
    /// result, for partition sizes below, at and above the context.
    #[test]
    fn decode_partitions_recombine_to_the_unsplit_attention() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let (heads, kv_heads, hd) = (8usize, 2usize, 64usize);
        let b = batch(
            &mut rng,
            kv_heads,
            hd,
            heads,
            &[(1, 1), (1, 100), (1, 513), (1, 16)],
        );
        let (kv, tables, seqs) = b.views(kv_heads, hd);
        let h = Heads {
            heads,
            kv_heads,
            scale: 0.125,
        };
        let mut want = vec![bf16::NAN; b.q.len()];
        paged_attention_prefill(&b.q, heads * hd, &kv, tables, seqs, h, &mut want);
        for part in [1usize, 7, 64, 512, 4096] {
            let mut out = vec![bf16::NAN; b.q.len()];
            paged_attention_decode(&b.q, heads * hd, &kv, tables, &b.ctx, h, part, &mut out);
            assert_close(&out, &want, 1e-2);
        }
    }
}
