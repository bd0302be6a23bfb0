//! Causal attention over a paged KV cache.
//!
//! Cache layout per layer: `[num_blocks, block_size, kv_heads, head_dim]` for K
//! and the same for V, stored as f32 or IEEE f16 ([`KvDType`]). A sequence's
//! block table maps its logical blocks to physical ones; token position `p`
//! lives in block `table[p / block_size]`, slot `p % block_size`.

use half::f16;
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

/// Element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvDType {
    /// 4 bytes per element: K/V exactly as computed.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes: half the memory and the bandwidth.
    F16,
}

impl KvDType {
    /// Every type, in the order the command line lists them.
    pub const ALL: [KvDType; 2] = [KvDType::F32, KvDType::F16];

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            KvDType::F32 => 4,
            KvDType::F16 => 2,
        }
    }

    /// The lowercase name (`f32`, `f16`) that [`std::str::FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            KvDType::F32 => "f32",
            KvDType::F16 => "f16",
        }
    }
}

impl std::fmt::Display for KvDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A KV cache type name that is neither `f32` nor `f16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown KV cache dtype {0:?}: expected f32 or f16")]
pub struct UnknownKvDType(pub String);

impl std::str::FromStr for KvDType {
    type Err = UnknownKvDType;

    /// `f32` or `f16`, any case, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        KvDType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownKvDType(s.to_string()))
    }
}

/// One layer's K (or V) elements, in either storage type.
#[derive(Debug, Clone, Copy)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvData<'_> {
    /// Element type.
    pub fn dtype(&self) -> KvDType {
        match self {
            KvData::F32(_) => KvDType::F32,
            KvData::F16(_) => KvDType::F16,
        }
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(x) => x.len(),
            KvData::F16(x) => x.len(),
        }
    }

    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of elements `range`, if they exist (for prefetching).
    pub(crate) fn bytes(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        match self {
            KvData::F32(x) => x.get(range).map(bytemuck::cast_slice),
            KvData::F16(x) => x.get(range).map(bytemuck::cast_slice),
        }
    }
}

/// Read-only view of one layer's paged K and V.
#[derive(Debug, Clone, Copy)]
pub struct KvLayerView<'a> {
    pub k: KvData<'a>,
    pub v: KvData<'a>,
    pub block_size: usize,
}

impl<'a> KvLayerView<'a> {
    /// A view of f32 K and V.
    pub fn f32(k: &'a [f32], v: &'a [f32], block_size: usize) -> Self {
        Self {
            k: KvData::F32(k),
            v: KvData::F32(v),
            block_size,
        }
    }

    /// A view of f16 K and V.
    pub fn f16(k: &'a [f16], v: &'a [f16], block_size: usize) -> Self {
        Self {
            k: KvData::F16(k),
            v: KvData::F16(v),
            block_size,
        }
    }
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

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

/// An element type a KV cache stores: f32 or [`half::f16`].
pub trait KvElement: sealed::Sealed + bytemuck::Pod + Send + Sync + std::fmt::Debug {
    /// The matching [`KvDType`].
    const DTYPE: KvDType;

    /// `dst[i] = src[i]`, rounded to nearest even where the type is
    /// narrower; the slices have the same length.
    fn store(dst: &mut [Self], src: &[f32]);
}

impl KvElement for f32 {
    const DTYPE: KvDType = KvDType::F32;

    fn store(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
}

impl KvElement for f16 {
    const DTYPE: KvDType = KvDType::F16;

    fn store(dst: &mut [f16], src: &[f32]) {
        // F16C when the CPU has it (detected at run time by `half`).
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
    }
}

/// Writes new K/V rows (`[tokens, kv_heads * head_dim]`) into cache slots
/// (`slot = block * block_size + offset`), converting to the cache's type.
pub fn write_kv<T: KvElement>(
    cache_k: &mut [T],
    cache_v: &mut [T],
    slots: &[usize],
    k: &[f32],
    v: &[f32],
) {
    let row = k.len() / slots.len().max(1);
    for (i, &s) in slots.iter().enumerate() {
        T::store(
            &mut cache_k[s * row..(s + 1) * row],
            &k[i * row..(i + 1) * row],
        );
        T::store(
            &mut cache_v[s * row..(s + 1) * row],
            &v[i * row..(i + 1) * row],
        );
    }
}

/// Query vectors one attention task covers at most: the heads that share a
/// KV head, over as many of one sequence's new tokens as fit. Each K/V row a
/// task loads then serves all of them from L1.
pub const MAX_TILE_QUERIES: usize = 16;

/// One attention task: query vectors of one sequence that read the same KV
/// head, each over its own causal prefix of the cache.
#[derive(Debug, Clone, Copy)]
pub struct AttendTile<'a> {
    /// `[lens.len(), head_dim]` query vectors.
    pub q: &'a [f32],
    /// Positions each query vector sees (`0..lens[i]`), at most
    /// [`MAX_TILE_QUERIES`] of them.
    pub lens: &'a [usize],
    pub kv: KvLayerView<'a>,
    pub block_table: &'a [u32],
    /// The first (usually only) KV head the queries read.
    pub kv_head: usize,
    /// Consecutive KV heads from `kv_head` the queries read, in order and
    /// in equal shares: query `i` of `n` reads head
    /// `kv_head + i / ceil(n / kv_span)` (1: all read `kv_head`).
    pub kv_span: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k.
    pub scale: f32,
}

/// A task of [`paged_attention`]: sequence, KV heads, first new token, tokens.
struct Task {
    seq: usize,
    kv_head: usize,
    /// KV heads from `kv_head` (see [`AttendTile::kv_span`]).
    span: usize,
    t0: usize,
    tokens: usize,
    /// First query head; the task covers `heads` of them from here.
    h0: usize,
    /// Query heads per token.
    heads: usize,
}

/// Causal attention for every sequence in a batch. `q` and `out` are
/// `[tokens, heads, head_dim]`; query row `i` of a sequence sits at position
/// `context_len - q_len + i` and sees positions `0..=` that. Rows no
/// sequence owns come out zero.
///
/// Each query vector's arithmetic is the same whichever tile it lands in,
/// so a token's output does not depend on what else is in the batch.
pub fn paged_attention(
    q: &[f32],
    kv: &KvLayerView<'_>,
    seqs: &[SeqAttention<'_>],
    shape: AttentionShape,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let kv_heads = shape.kv_heads.max(1);
    let group = (shape.heads / kv_heads).max(1);
    let qd = shape.heads * hd;
    // Whole head groups share each K/V row; with too few tasks to keep every
    // thread busy (one decoding sequence), heads go one per task instead.
    let tiles = |heads: usize| -> usize {
        let per_task = (MAX_TILE_QUERIES / heads).max(1);
        seqs.iter()
            .map(|s| s.q_len.div_ceil(per_task))
            .sum::<usize>()
            * kv_heads
            * (group / heads)
    };
    let threads = rayon::current_num_threads().max(1);
    let heads = if tiles(group) >= 4 * threads {
        group
    } else {
        1
    };
    let per_task = (MAX_TILE_QUERIES / heads).max(1);
    // Many decoding sequences: one task per sequence takes the heads of
    // several KV heads at once, so it reads whole cache rows (one stretch
    // of memory per position) instead of one head's slice of each row per
    // task; in a batched decode step every row comes from DRAM.
    let span = (MAX_TILE_QUERIES / group).clamp(1, kv_heads);
    let decoding = seqs.iter().filter(|s| s.q_len == 1).count();
    let whole_rows = span > 1 && decoding * kv_heads.div_ceil(span) >= 4 * threads;
    let mut tasks = Vec::new();
    for (seq, s) in seqs.iter().enumerate() {
        if whole_rows && s.q_len == 1 {
            for kv_head in (0..kv_heads).step_by(span) {
                let span = span.min(kv_heads - kv_head);
                tasks.push(Task {
                    seq,
                    kv_head,
                    span,
                    t0: 0,
                    tokens: 1,
                    h0: kv_head * group,
                    heads: span * group,
                });
            }
            continue;
        }
        for t0 in (0..s.q_len).step_by(per_task) {
            for kv_head in 0..kv_heads {
                for g0 in (0..group).step_by(heads) {
                    tasks.push(Task {
                        seq,
                        kv_head,
                        span: 1,
                        t0,
                        tokens: per_task.min(s.q_len - t0),
                        h0: kv_head * group + g0,
                        heads,
                    });
                }
            }
        }
    }
    let kern = crate::cpu::simd::Kernels::get();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|task| {
            let s = &seqs[task.seq];
            let first_pos = s.context_len - s.q_len + task.t0;
            let heads = task.heads;
            let mut qs = Vec::with_capacity(task.tokens * heads * hd);
            let mut lens = Vec::with_capacity(task.tokens * heads);
            for t in 0..task.tokens {
                let row = s.q_start + task.t0 + t;
                qs.extend_from_slice(&q[row * qd + task.h0 * hd..][..heads * hd]);
                lens.extend(std::iter::repeat_n(first_pos + t + 1, heads));
            }
            let mut acc = vec![0f32; qs.len()];
            let tile = AttendTile {
                q: &qs,
                lens: &lens,
                kv: *kv,
                block_table: s.block_table,
                kv_head: task.kv_head,
                kv_span: task.span,
                kv_heads,
                head_dim: hd,
                scale: shape.scale,
            };
            (kern.attend_tile)(&tile, &mut acc);
            acc
        })
        .collect();
    out.fill(0.0);
    for (task, acc) in tasks.iter().zip(&results) {
        let s = &seqs[task.seq];
        let heads = task.heads;
        for (t, a) in acc.chunks_exact(heads * hd).enumerate() {
            let row = s.q_start + task.t0 + t;
            out[row * qd + task.h0 * hd..][..heads * hd].copy_from_slice(a);
        }
    }
}

/// Positions scored together: one exp pass and one max update per chunk.
pub(crate) const CHUNK: usize = 32;

thread_local! {
    /// f32 staging for f16 K/V rows, kept per thread: a fresh buffer per
    /// tile would cost an allocation (or a stack fill) every time.
    static STAGING: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's two staging buffers (for K and V) of `n`
/// floats each. Tiles never nest, so the buffer is always free here.
pub(crate) fn with_staging<R>(n: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    STAGING.with_borrow_mut(|buf| {
        if buf.len() < 2 * n {
            buf.resize(2 * n, 0.0);
        }
        let (k, v) = buf[..2 * n].split_at_mut(n);
        f(k, v)
    })
}

/// Online-softmax attention of a tile's query vectors on a table's `dot`
/// and `axpy` (the SIMD tables inline theirs; the exp pass vectorizes
/// inside their `target_feature`s). Positions go
/// by chunks: the chunk's K/V addresses once, then per query vector its
/// scores, one running-max update, a vectorizable exp over the chunk, and
/// the weighted V rows. `acc` is `[queries, head_dim]`. An f16 cache's
/// rows of a chunk are widened by `widen` into an f32 staging buffer once,
/// for all the tile's queries; f32 rows are read in place.
#[inline(always)]
pub(crate) fn attend_tile_with(
    t: &AttendTile<'_>,
    acc: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    axpy: impl Fn(f32, &[f32], &mut [f32]),
    widen: impl Fn(&[f16], &mut [f32]),
) {
    match (t.kv.k, t.kv.v) {
        (KvData::F32(_), KvData::F32(_)) => {
            attend_tile_staged(t, acc, &mut [], &mut [], dot, axpy, widen)
        }
        _ => with_staging(CHUNK * t.head_dim, |kst, vst| {
            attend_tile_staged(t, acc, kst, vst, dot, axpy, widen)
        }),
    }
}

/// [`attend_tile_with`] with its staging buffers (`CHUNK * head_dim` floats
/// each where that operand is f16, else unused).
#[inline(always)]
fn attend_tile_staged(
    t: &AttendTile<'_>,
    acc: &mut [f32],
    kst: &mut [f32],
    vst: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    axpy: impl Fn(f32, &[f32], &mut [f32]),
    widen: impl Fn(&[f16], &mut [f32]),
) {
    let hd = t.head_dim;
    let row = t.kv_heads * hd;
    let bs = t.kv.block_size.max(1);
    let nq = t
        .lens
        .len()
        .min(MAX_TILE_QUERIES)
        .min(t.q.len() / hd.max(1));
    acc.fill(0.0);
    let mut max = [f32::NEG_INFINITY; MAX_TILE_QUERIES];
    let mut denom = [0f32; MAX_TILE_QUERIES];
    let mut scores = [0f32; CHUNK];
    let mut slots = [0usize; CHUNK];
    let mut bases = [0usize; CHUNK];
    let (mut kofs, mut vofs) = ([0usize; CHUNK], [0usize; CHUNK]);
    let len = t.lens[..nq].iter().copied().max().unwrap_or(0);
    // Query i reads KV head kv_head + i / per.
    let span = t.kv_span.clamp(1, nq.max(1));
    let per = nq.div_ceil(span);
    let mut p0 = 0;
    while p0 < len {
        let n = CHUNK.min(len - p0);
        for (j, b) in slots[..n].iter_mut().enumerate() {
            let p = p0 + j;
            *b = (t.block_table[p / bs] as usize * bs + p % bs) * row + t.kv_head * hd;
        }
        for h in 0..span {
            for (b, &s) in bases[..n].iter_mut().zip(&slots) {
                *b = s + h * hd;
            }
            let ks = chunk_rows(t.kv.k, &bases[..n], hd, &mut *kst, &mut kofs, &widen);
            let vs = chunk_rows(t.kv.v, &bases[..n], hd, &mut *vst, &mut vofs, &widen);
            for i in h * per..((h + 1) * per).min(nq) {
                let ni = t.lens[i].saturating_sub(p0).min(n);
                if ni == 0 {
                    continue;
                }
                let qi = &t.q[i * hd..(i + 1) * hd];
                let ai = &mut acc[i * hd..(i + 1) * hd];
                let w = &mut scores[..ni];
                let mut cmax = f32::NEG_INFINITY;
                for (s, &b) in w.iter_mut().zip(&kofs) {
                    *s = dot(qi, &ks[b..b + hd]) * t.scale;
                    cmax = cmax.max(*s);
                }
                if cmax > max[i] {
                    if denom[i] > 0.0 {
                        let f = (max[i] - cmax).exp();
                        denom[i] *= f;
                        ai.iter_mut().for_each(|a| *a *= f);
                    }
                    max[i] = cmax;
                }
                for x in w.iter_mut() {
                    *x -= max[i];
                }
                exp_nonpositive(w);
                for (&wj, &b) in w.iter().zip(&vofs) {
                    denom[i] += wj;
                    axpy(wj, &vs[b..b + hd], ai);
                }
            }
        }
        p0 += n;
    }
    for i in 0..nq {
        if denom[i] > 0.0 {
            let r = 1.0 / denom[i];
            acc[i * hd..(i + 1) * hd].iter_mut().for_each(|a| *a *= r);
        }
    }
}

/// The f32 rows of one chunk of K (or V), whose positions start at cache
/// offsets `bases`: an f32 cache itself (`ofs` = `bases`), or, for f16,
/// `staging` with row `j` widened into it at `ofs[j] = j * hd`.
#[inline(always)]
fn chunk_rows<'s>(
    data: KvData<'s>,
    bases: &[usize],
    hd: usize,
    staging: &'s mut [f32],
    ofs: &mut [usize; CHUNK],
    widen: &impl Fn(&[f16], &mut [f32]),
) -> &'s [f32] {
    match data {
        KvData::F32(x) => {
            ofs[..bases.len()].copy_from_slice(bases);
            x
        }
        KvData::F16(x) => {
            for (j, (&b, o)) in bases.iter().zip(ofs.iter_mut()).enumerate() {
                widen(&x[b..b + hd], &mut staging[j * hd..(j + 1) * hd]);
                *o = j * hd;
            }
            staging
        }
    }
}

/// [`attend_tile_with`] on the portable dot and axpy.
pub fn attend_tile_reference(t: &AttendTile<'_>, acc: &mut [f32]) {
    attend_tile_with(
        t,
        acc,
        crate::cpu::matmul::dot_plain,
        crate::cpu::simd::scalar::axpy,
        half::slice::HalfFloatSliceExt::convert_to_f32_slice,
    );
}

/// `x = exp(x)` for `x <= 0` (NaN stays NaN), written so the loop
/// vectorizes: x = n·ln 2 + r with integer n (exponent bits) and
/// |r| <= ln 2 / 2 (a degree-7 polynomial); ln 2 is split in two (Cody-Waite)
/// so r keeps full precision. Relative error below 3e-7.
#[inline(always)]
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
        let view = KvLayerView::f32(&ck, &cv, bs);
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
        let view = KvLayerView::f32(&ck, &cv, bs);
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

    /// A random cache of `ctx` positions in a reversed block table, stored
    /// both as f32 and as f16 (NaN in unused slots).
    struct Cache {
        k: Vec<f32>,
        v: Vec<f32>,
        ck: Vec<f32>,
        cv: Vec<f32>,
        hk: Vec<f16>,
        hv: Vec<f16>,
        table: Vec<u32>,
    }

    impl Cache {
        /// The cache in `dtype`.
        fn view(&self, dtype: KvDType, bs: usize) -> KvLayerView<'_> {
            match dtype {
                KvDType::F32 => KvLayerView::f32(&self.ck, &self.cv, bs),
                KvDType::F16 => KvLayerView::f16(&self.hk, &self.hv, bs),
            }
        }

        /// The K and V values (contiguous, by position) a `dtype` cache holds.
        fn values(&self, dtype: KvDType) -> (Vec<f32>, Vec<f32>) {
            match dtype {
                KvDType::F32 => (self.k.clone(), self.v.clone()),
                KvDType::F16 => (rounded(&self.k), rounded(&self.v)),
            }
        }
    }

    /// `x` rounded to f16 and back.
    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&a| f16::from_f32(a).to_f32()).collect()
    }

    fn random_cache(rng: &mut rand::rngs::StdRng, ctx: usize, row: usize, bs: usize) -> Cache {
        let k: Vec<f32> = (0..ctx * row)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let v: Vec<f32> = (0..ctx * row)
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
        let mut hk = vec![f16::NAN; blocks * bs * row];
        let mut hv = vec![f16::NAN; blocks * bs * row];
        write_kv(&mut hk, &mut hv, &slots, &k, &v);
        Cache {
            k,
            v,
            ck,
            cv,
            hk,
            hv,
            table,
        }
    }

    #[test]
    fn many_decoding_sequences_read_whole_rows_with_the_same_bits_as_alone() {
        // Twelve sequences decoding one token each in one shared cache, on a
        // 2-thread pool: enough of them for one task per sequence over all
        // its KV heads (9 query heads on 3 KV heads, and 12 on 4, spans of
        // 3 and 4, plus 24 heads on 8 KV heads: two tiles of 4 per token).
        // Each output must equal dense attention and, bit for bit, the same
        // sequence run alone (one head per task).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a 2-thread pool");
        for (heads, kv_heads) in [(9, 3), (12, 4), (24, 8)] {
            for dtype in KvDType::ALL {
                let mut rng = rand::rngs::StdRng::seed_from_u64(heads as u64);
                let (hd, bs, nseq) = (32, 8, 12);
                let shape = AttentionShape {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    scale: 0.2,
                };
                let (row, qd) = (kv_heads * hd, heads * hd);
                let ctxs: Vec<usize> = (0..nseq).map(|i| 5 + 9 * i).collect();
                // Sequence i owns blocks i, i + nseq, i + 2·nseq, ...
                let per_seq = ctxs.iter().max().map_or(0, |c| c.div_ceil(bs));
                let tables: Vec<Vec<u32>> = (0..nseq)
                    .map(|i| (0..per_seq).map(|b| (b * nseq + i) as u32).collect())
                    .collect();
                let blocks = per_seq * nseq;
                let mut ck = vec![0f32; blocks * bs * row];
                let mut cv = vec![0f32; blocks * bs * row];
                let mut hk = vec![f16::ZERO; blocks * bs * row];
                let mut hv = vec![f16::ZERO; blocks * bs * row];
                let mut kvs = Vec::new();
                for (i, &ctx) in ctxs.iter().enumerate() {
                    let k: Vec<f32> = (0..ctx * row)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect();
                    let v: Vec<f32> = (0..ctx * row)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect();
                    let slots: Vec<usize> = (0..ctx)
                        .map(|p| tables[i][p / bs] as usize * bs + p % bs)
                        .collect();
                    write_kv(&mut ck, &mut cv, &slots, &k, &v);
                    write_kv(&mut hk, &mut hv, &slots, &k, &v);
                    kvs.push(match dtype {
                        KvDType::F32 => (k, v),
                        KvDType::F16 => (rounded(&k), rounded(&v)),
                    });
                }
                let view = match dtype {
                    KvDType::F32 => KvLayerView::f32(&ck, &cv, bs),
                    KvDType::F16 => KvLayerView::f16(&hk, &hv, bs),
                };
                let q: Vec<f32> = (0..nseq * qd)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                let seqs: Vec<SeqAttention<'_>> = (0..nseq)
                    .map(|i| SeqAttention {
                        q_start: i,
                        q_len: 1,
                        context_len: ctxs[i],
                        block_table: &tables[i],
                    })
                    .collect();
                let mut all = vec![f32::NAN; q.len()];
                pool.install(|| paged_attention(&q, &view, &seqs, shape, &mut all));
                for (i, s) in seqs.iter().enumerate() {
                    let qi = &q[i * qd..(i + 1) * qd];
                    let (k, v) = &kvs[i];
                    let want = dense(qi, k, v, shape, ctxs[i] - 1);
                    let got = &all[i * qd..(i + 1) * qd];
                    for (x, y) in want.iter().zip(got) {
                        assert!(
                            (x - y).abs() < 2e-5,
                            "{dtype} {heads}/{kv_heads}: {x} vs {y}"
                        );
                    }
                    let alone = SeqAttention { q_start: 0, ..*s };
                    let mut one = vec![f32::NAN; qd];
                    pool.install(|| paged_attention(qi, &view, &[alone], shape, &mut one));
                    let bits = |x: &[f32]| x.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&one), bits(got), "{dtype} {heads}/{kv_heads} seq {i}");
                }
            }
        }
    }

    #[test]
    fn a_query_gets_the_same_bits_alone_as_in_any_tile_and_batch() {
        same_bits_alone_as_in_any_tile_and_batch(KvDType::F32);
    }

    #[test]
    fn a_query_gets_the_same_bits_alone_as_in_any_tile_and_batch_from_an_f16_cache() {
        same_bits_alone_as_in_any_tile_and_batch(KvDType::F16);
    }

    fn same_bits_alone_as_in_any_tile_and_batch(dtype: KvDType) {
        // Two sequences, 9 query heads on 3 KV heads (SmolLM2's shape), one
        // prefilling 13 tokens (several tiles, a ragged last one) and one
        // decoding; then every token again alone.
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let shape = AttentionShape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            scale: 0.125,
        };
        let (bs, row, qd) = (16, 3 * 64, 9 * 64);
        let a = random_cache(&mut rng, 77, row, bs);
        let b = random_cache(&mut rng, 40, row, bs);
        let (na, nb) = (13, 1);
        let q: Vec<f32> = (0..(na + nb) * qd)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let va = a.view(dtype, bs);
        let vb = b.view(dtype, bs);
        // Both sequences share one cache in the engine; here each has its
        // own, so run them as two calls over the same q/out layout.
        let seq_a = SeqAttention {
            q_start: 0,
            q_len: na,
            context_len: 77,
            block_table: &a.table,
        };
        let seq_b = SeqAttention {
            q_start: na,
            q_len: nb,
            context_len: 40,
            block_table: &b.table,
        };
        let mut out_a = vec![f32::NAN; q.len()];
        paged_attention(&q, &va, &[seq_a], shape, &mut out_a);
        let mut out_b = vec![f32::NAN; q.len()];
        paged_attention(&q, &vb, &[seq_b], shape, &mut out_b);
        // Unowned rows are zero.
        assert!(out_a[na * qd..].iter().all(|&x| x == 0.0));
        assert!(out_b[..na * qd].iter().all(|&x| x == 0.0));
        let (ak, av) = a.values(dtype);
        let want = dense(&q[..na * qd], &ak, &av, shape, 77 - na);
        for (x, y) in want.iter().zip(&out_a[..na * qd]) {
            assert!((x - y).abs() < 2e-5, "{dtype}: {x} vs {y}");
        }
        for t in 0..na {
            let one = SeqAttention {
                q_start: 0,
                q_len: 1,
                context_len: 77 - na + t + 1,
                block_table: &a.table,
            };
            let mut o = vec![0f32; qd];
            paged_attention(&q[t * qd..(t + 1) * qd], &va, &[one], shape, &mut o);
            assert_eq!(
                o.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                out_a[t * qd..(t + 1) * qd]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
                "{dtype} token {t}"
            );
        }
    }

    #[test]
    fn every_head_size_and_mixed_lengths_in_one_tile_match_dense_attention() {
        let worst = head_sizes_and_mixed_lengths_against_dense(KvDType::F32);
        assert!(worst < 2e-5, "{worst}");
    }

    #[test]
    fn every_kernel_table_attends_over_an_f16_cache_like_dense_attention_over_rounded_kv() {
        // Tight against the rounded K/V (the kernels' only new error is the
        // storage), loose against the f32 cache's exact result.
        let worst = head_sizes_and_mixed_lengths_against_dense(KvDType::F16);
        assert!(worst < 5e-4, "{worst}");
    }

    /// Every table over a `dtype` cache against dense attention over the K/V
    /// that cache holds (2e-5); returns the largest difference from dense
    /// attention over the unrounded f32 K/V.
    fn head_sizes_and_mixed_lengths_against_dense(dtype: KvDType) -> f32 {
        // Head sizes the AVX-512 tile specializes (multiples of 16 up to 128)
        // and two it leaves to the portable tile; one tile mixes 15 queries
        // of five tokens (three heads each) with different causal lengths,
        // read through the second of two KV heads.
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let mut worst_vs_f32 = 0f32;
        for hd in [16, 32, 48, 64, 80, 96, 112, 128, 40, 136] {
            let shape = AttentionShape {
                heads: 6,
                kv_heads: 2,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            let (bs, ctx, n) = (16, 83, 5);
            let row = 2 * hd;
            let c = random_cache(&mut rng, ctx, row, bs);
            let q: Vec<f32> = (0..n * 6 * hd)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let view = c.view(dtype, bs);
            let (k, v) = c.values(dtype);
            let want = dense(&q, &k, &v, shape, ctx - n);
            let exact = dense(&q, &c.k, &c.v, shape, ctx - n);
            let mut qs = Vec::new();
            let mut lens = Vec::new();
            for t in 0..n {
                qs.extend_from_slice(&q[(t * 6 + 3) * hd..(t * 6 + 6) * hd]);
                lens.extend([ctx - n + t + 1; 3]);
            }
            for kern in crate::cpu::simd::Kernels::available() {
                let tile = AttendTile {
                    q: &qs,
                    lens: &lens,
                    kv: view,
                    block_table: &c.table,
                    kv_head: 1,
                    kv_span: 1,
                    kv_heads: 2,
                    head_dim: hd,
                    scale: shape.scale,
                };
                let mut acc = vec![f32::NAN; qs.len()];
                (kern.attend_tile)(&tile, &mut acc);
                for t in 0..n {
                    let heads = (t * 6 + 3) * hd..(t * 6 + 6) * hd;
                    let a = &acc[t * 3 * hd..(t + 1) * 3 * hd];
                    for ((x, y), e) in want[heads.clone()].iter().zip(a).zip(&exact[heads]) {
                        assert!(
                            (x - y).abs() < 2e-5,
                            "{} {dtype} hd {hd}: {x} vs {y}",
                            kern.isa
                        );
                        worst_vs_f32 = worst_vs_f32.max((e - y).abs());
                    }
                }
            }
        }
        eprintln!("{dtype}: largest difference from f32 dense attention {worst_vs_f32:e}");
        worst_vs_f32
    }

    #[test]
    fn write_kv_rounds_to_f16_and_reads_back_through_the_slots() {
        let (row, slots) = (8, [5usize, 0, 3]);
        let k: Vec<f32> = (0..3 * row).map(|i| i as f32 * 0.37 - 4.1).collect();
        let v: Vec<f32> = (0..3 * row).map(|i| 1e-3 * i as f32 + 65504.0).collect();
        let mut hk = vec![f16::NAN; 6 * row];
        let mut hv = vec![f16::NAN; 6 * row];
        write_kv(&mut hk, &mut hv, &slots, &k, &v);
        for (i, &s) in slots.iter().enumerate() {
            for j in 0..row {
                let (kx, vx) = (k[i * row + j], v[i * row + j]);
                assert_eq!(hk[s * row + j], f16::from_f32(kx));
                assert_eq!(hv[s * row + j], f16::from_f32(vx));
                // Rounded to nearest: within half an f16 ulp.
                assert!((hk[s * row + j].to_f32() - kx).abs() <= kx.abs() * 4.9e-4);
            }
        }
        // Untouched slots keep what they held.
        assert!(hk[row..3 * row].iter().all(|x| x.is_nan()));
        // Values f16 holds exactly come back with the same bits.
        let exact: Vec<f32> = k.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        write_kv(&mut hk, &mut hv, &slots, &exact, &exact);
        for (i, &s) in slots.iter().enumerate() {
            let back: Vec<f32> = hk[s * row..(s + 1) * row]
                .iter()
                .map(|x| x.to_f32())
                .collect();
            assert_eq!(back, exact[i * row..(i + 1) * row]);
        }
    }

    #[test]
    fn kv_dtypes_parse_and_print() {
        for d in KvDType::ALL {
            assert_eq!(d.to_string().parse::<KvDType>(), Ok(d));
        }
        assert_eq!(" F16 ".parse::<KvDType>(), Ok(KvDType::F16));
        assert_eq!(KvDType::default(), KvDType::F32);
        assert_eq!((KvDType::F32.bytes(), KvDType::F16.bytes()), (4, 2));
        let e = "bf16".parse::<KvDType>().unwrap_err().to_string();
        assert!(e.contains("\"bf16\"") && e.contains("f32 or f16"), "{e}");
    }

    #[test]
    fn every_kernel_table_attends_like_dense_attention() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(33);
        let shape = AttentionShape {
            heads: 4,
            kv_heads: 1,
            head_dim: 40,
            scale: 0.2,
        };
        let (bs, row) = (8, 40);
        let c = random_cache(&mut rng, 70, row, bs);
        let n = 6;
        let q: Vec<f32> = (0..n * 4 * 40)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        for dtype in KvDType::ALL {
            let (k, v) = c.values(dtype);
            let want = dense(&q, &k, &v, shape, 70 - n);
            every_table_tile_by_tile(&q, &c.view(dtype, bs), &c.table, &want, n);
        }
    }

    fn every_table_tile_by_tile(
        q: &[f32],
        view: &KvLayerView<'_>,
        table: &[u32],
        want: &[f32],
        n: usize,
    ) {
        for kern in crate::cpu::simd::Kernels::available() {
            for t in 0..n {
                let lens = vec![70 - n + t + 1; 4];
                let tile = AttendTile {
                    q: &q[t * 160..(t + 1) * 160],
                    lens: &lens,
                    kv: *view,
                    block_table: table,
                    kv_head: 0,
                    kv_span: 1,
                    kv_heads: 1,
                    head_dim: 40,
                    scale: 0.2,
                };
                let mut acc = vec![f32::NAN; 160];
                (kern.attend_tile)(&tile, &mut acc);
                for (x, y) in want[t * 160..(t + 1) * 160].iter().zip(&acc) {
                    let dtype = view.k.dtype();
                    assert!((x - y).abs() < 2e-5, "{} {dtype}: {x} vs {y}", kern.isa);
                }
            }
        }
    }
}
