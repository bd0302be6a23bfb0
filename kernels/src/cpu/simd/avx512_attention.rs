//! AVX-512 attention tile for head sizes of 16..=128 in steps of 16.
//!
//! The portable tile (`attend_tile_with`) runs one dot with a horizontal
//! sum per (query, position) and an axpy through memory per position, whose
//! store-to-load chain on the accumulator bounds it. Here a query's vectors
//! stay in registers: scores of 16 positions come from 16 partial-product
//! vectors folded by one transpose-add tree, and the weighted V rows
//! accumulate in two register sets (even and odd positions) so the FMAs
//! pipeline. The chunking, the running max and the exp are the portable
//! tile's, and each query's arithmetic depends only on its own vector and
//! length, never on the tile it lands in. An f16 cache's rows of a chunk are
//! widened (`vcvtph2ps`) into a per-thread staging buffer once for all the
//! tile's queries, then read like f32 rows; f32 rows are read in place.

use std::arch::x86_64::*;

use half::f16;

use crate::cpu::attention::{with_staging, AttendTile, KvData, CHUNK, MAX_TILE_QUERIES};

/// Runs the tile if its head size is a multiple of 16 up to 128; `false`
/// leaves it to the caller.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn attend_tile_vec(t: &AttendTile<'_>, acc: &mut [f32]) -> bool {
    match t.head_dim {
        16 => tile::<1>(t, acc),
        32 => tile::<2>(t, acc),
        48 => tile::<3>(t, acc),
        64 => tile::<4>(t, acc),
        80 => tile::<5>(t, acc),
        96 => tile::<6>(t, acc),
        112 => tile::<7>(t, acc),
        128 => tile::<8>(t, acc),
        _ => return false,
    }
    true
}

/// 16 f32 from `x[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld(x: &[f32], i: usize) -> __m512 {
    let s = &x[i..i + 16];
    // SAFETY: `s` holds 16 f32; loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Stores 16 f32 to `y[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn st(y: &mut [f32], i: usize, v: __m512) {
    let s = &mut y[i..i + 16];
    // SAFETY: `s` holds 16 f32; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
}

/// 16 f16 from `x[i..i + 16]`, widened to f32 (exactly).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld_f16(x: &[f16], i: usize) -> __m512 {
    let s = &x[i..i + 16];
    // SAFETY: `s` holds 16 f16 (32 bytes); loadu has no alignment requirement.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s.as_ptr().cast()) })
}

/// `exp(x)` for `x <= 0` lane by lane, as the portable tile's
/// `exp_nonpositive` computes it (x = n·ln 2 + r, degree-7 polynomial in r;
/// NaN stays NaN), with fused multiply-adds.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn exp_nonpositive_ps(x: __m512) -> __m512 {
    let xc = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    let e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    // max() mapped NaN to -87: put NaN lanes back.
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_ps(e, nan, x)
}

/// Lane `j` = the sum of the 16 lanes of `p[j]`: three rounds of
/// shuffle-and-add halve the lanes per vector while doubling the vectors
/// per register, then one permute restores the order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sum16(p: &[__m512; 16]) -> __m512 {
    // u[i]: 256-bit halves added; chunks [p2i, p2i, p2i+1, p2i+1] (8 lanes each).
    let u: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (p[2 * i], p[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // w[i]: chunk c holds p[4i + c] folded to 4 lanes.
    let w: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (u[2 * i], u[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    let x0 = _mm512_add_ps(
        _mm512_unpacklo_ps(w[0], w[1]),
        _mm512_unpackhi_ps(w[0], w[1]),
    );
    let x1 = _mm512_add_ps(
        _mm512_unpacklo_ps(w[2], w[3]),
        _mm512_unpackhi_ps(w[2], w[3]),
    );
    // Lane 4c + r now holds the sum of p[4r + c].
    let z = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(x0, x1),
        _mm512_shuffle_ps::<0xEE>(x0, x1),
    );
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, z)
}

/// The tile for head size `16 * V`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const V: usize>(t: &AttendTile<'_>, acc: &mut [f32]) {
    match (t.kv.k, t.kv.v) {
        (KvData::F32(_), KvData::F32(_)) => tile_rows::<V>(t, acc, &mut [], &mut []),
        _ => with_staging(CHUNK * 16 * V, |kst, vst| tile_rows::<V>(t, acc, kst, vst)),
    }
}

/// The f32 rows of one chunk of K (or V), whose positions start at cache
/// offsets `bases`: slices of an f32 cache, or of `staging` (`CHUNK * 16 * V`
/// floats) after widening an f16 cache's rows into it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn chunk_rows<'s, const V: usize>(
    data: KvData<'s>,
    bases: &[usize],
    staging: &'s mut [f32],
) -> [&'s [f32]; CHUNK] {
    let hd = 16 * V;
    let mut rows: [&[f32]; CHUNK] = [&[]; CHUNK];
    match data {
        KvData::F32(x) => {
            for (r, &b) in rows.iter_mut().zip(bases) {
                *r = &x[b..b + hd];
            }
        }
        KvData::F16(x) => {
            for (dst, &b) in staging.chunks_exact_mut(hd).zip(bases) {
                let src = &x[b..b + hd];
                for v in 0..V {
                    st(dst, 16 * v, ld_f16(src, 16 * v));
                }
            }
            let staged: &'s [f32] = staging;
            for (r, s) in rows
                .iter_mut()
                .zip(staged.chunks_exact(hd))
                .take(bases.len())
            {
                *r = s;
            }
        }
    }
    rows
}

/// [`tile`] with its staging buffers (empty for an f32 cache).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_rows<const V: usize>(
    t: &AttendTile<'_>,
    acc: &mut [f32],
    kst: &mut [f32],
    vst: &mut [f32],
) {
    let hd = 16 * V;
    let row = t.kv_heads * hd;
    let bs = t.kv.block_size.max(1);
    let nq = t.lens.len().min(MAX_TILE_QUERIES).min(t.q.len() / hd);
    acc.fill(0.0);
    let mut st8 = States {
        max: [f32::NEG_INFINITY; MAX_TILE_QUERIES],
        denom: [0f32; MAX_TILE_QUERIES],
    };
    let len = t.lens[..nq].iter().copied().max().unwrap_or(0);
    // Query i reads KV head kv_head + i / per.
    let span = t.kv_span.clamp(1, nq.max(1));
    let per = nq.div_ceil(span);
    // Queries of one KV head with the same length (a token's group of
    // heads) go through the chunk together: each K/V row is loaded once for
    // all of them and their dependency chains interleave.
    let qmax = (12 / V).clamp(1, 4);
    let mut slots = [0usize; CHUNK];
    let mut bases = [0usize; CHUNK];
    let mut p0 = 0;
    while p0 < len {
        let n = CHUNK.min(len - p0);
        for (j, b) in slots[..n].iter_mut().enumerate() {
            let p = p0 + j;
            *b = (t.block_table[p / bs] as usize * bs + p % bs) * row + t.kv_head * hd;
        }
        // The next chunk's rows (all the span's heads: one stretch of each
        // cache row) start streaming in while this one computes: a decoding
        // sequence's K/V come from DRAM once per step, and one query's dots
        // alone would wait on every line.
        let ahead = span * hd;
        for p in p0 + n..(p0 + n + CHUNK).min(len) {
            let b = (t.block_table[p / bs] as usize * bs + p % bs) * row + t.kv_head * hd;
            if let (Some(k), Some(v)) = (t.kv.k.bytes(b..b + ahead), t.kv.v.bytes(b..b + ahead)) {
                super::prefetch(k);
                super::prefetch(v);
            }
        }
        for h in 0..span {
            for (b, &s) in bases[..n].iter_mut().zip(&slots) {
                *b = s + h * hd;
            }
            let krows = chunk_rows::<V>(t.kv.k, &bases[..n], kst);
            let vrows = chunk_rows::<V>(t.kv.v, &bases[..n], vst);
            let rows = Rows {
                k: &krows,
                v: &vrows,
            };
            let end = ((h + 1) * per).min(nq);
            let mut i = h * per;
            while i < end {
                let ni = t.lens[i].saturating_sub(p0).min(n);
                let mut r = 1;
                while i + r < end && r < qmax && t.lens[i + r] == t.lens[i] {
                    r += 1;
                }
                if ni > 0 {
                    let g = Group {
                        i,
                        ni,
                        q: t.q,
                        scale: t.scale,
                    };
                    match r {
                        1 => group::<V, 1>(&g, &rows, &mut st8, acc),
                        2 => group::<V, 2>(&g, &rows, &mut st8, acc),
                        3 => group::<V, 3>(&g, &rows, &mut st8, acc),
                        _ => group::<V, 4>(&g, &rows, &mut st8, acc),
                    }
                }
                i += r;
            }
        }
        p0 += n;
    }
    for i in 0..nq {
        if st8.denom[i] > 0.0 {
            let r = _mm512_set1_ps(1.0 / st8.denom[i]);
            let ai = &mut acc[i * hd..(i + 1) * hd];
            for v in 0..V {
                st(ai, 16 * v, _mm512_mul_ps(r, ld(ai, 16 * v)));
            }
        }
    }
}

/// Running softmax state of a tile's query vectors.
struct States {
    max: [f32; MAX_TILE_QUERIES],
    denom: [f32; MAX_TILE_QUERIES],
}

/// One chunk's K and V rows (f32) of one KV head.
struct Rows<'r, 's> {
    k: &'r [&'s [f32]; CHUNK],
    v: &'r [&'s [f32]; CHUNK],
}

/// Query vectors `i..i + Q` of a tile, all seeing the chunk's first `ni`
/// positions.
struct Group<'a> {
    i: usize,
    ni: usize,
    q: &'a [f32],
    scale: f32,
}

/// One chunk for `Q` query vectors that see the same positions. Every
/// query's operations and their order are those of `Q = 1` (its own score
/// chains, tree, softmax update and even/odd V accumulators); only the
/// loads of K and V rows are shared.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
// Register tiles indexed by query and vector at once read clearer as index
// loops than as zipped iterators.
#[allow(clippy::needless_range_loop)]
fn group<const V: usize, const Q: usize>(
    g: &Group<'_>,
    rows: &Rows<'_, '_>,
    st8: &mut States,
    acc: &mut [f32],
) {
    let hd = 16 * V;
    let ni = g.ni;
    let qv: [[__m512; V]; Q] =
        std::array::from_fn(|a| std::array::from_fn(|v| ld(&g.q[(g.i + a) * hd..], 16 * v)));
    let mut cmax = [f32::NEG_INFINITY; Q];
    let mut sv = [[_mm512_setzero_ps(); CHUNK / 16]; Q];
    let mut masks = [0u16; CHUNK / 16];
    for (gi, mg) in masks.iter_mut().enumerate() {
        let j0 = 16 * gi;
        if j0 >= ni {
            break;
        }
        let gn = 16.min(ni - j0);
        let mut parts = [[_mm512_setzero_ps(); 16]; Q];
        for j in 0..gn {
            let k = rows.k[j0 + j];
            let kv: [__m512; V] = std::array::from_fn(|v| ld(k, 16 * v));
            for a in 0..Q {
                let mut s = _mm512_mul_ps(qv[a][0], kv[0]);
                for v in 1..V {
                    s = _mm512_fmadd_ps(qv[a][v], kv[v], s);
                }
                parts[a][j] = s;
            }
        }
        *mg = if gn == 16 { 0xffff } else { (1u16 << gn) - 1 };
        for a in 0..Q {
            sv[a][gi] = _mm512_mul_ps(sum16(&parts[a]), _mm512_set1_ps(g.scale));
            cmax[a] = cmax[a].max(_mm512_mask_reduce_max_ps(*mg, sv[a][gi]));
        }
    }
    let mut w = [[0f32; CHUNK]; Q];
    for a in 0..Q {
        let i = g.i + a;
        if cmax[a] > st8.max[i] {
            if st8.denom[i] > 0.0 {
                let f = (st8.max[i] - cmax[a]).exp();
                st8.denom[i] *= f;
                let fv = _mm512_set1_ps(f);
                let ai = &mut acc[i * hd..(i + 1) * hd];
                for v in 0..V {
                    st(ai, 16 * v, _mm512_mul_ps(fv, ld(ai, 16 * v)));
                }
            }
            st8.max[i] = cmax[a];
        }
        let mv = _mm512_set1_ps(st8.max[i]);
        let mut dsum = _mm512_setzero_ps();
        for (gi, &mg) in masks.iter().enumerate() {
            if mg == 0 {
                break;
            }
            let e = _mm512_maskz_mov_ps(mg, exp_nonpositive_ps(_mm512_sub_ps(sv[a][gi], mv)));
            dsum = _mm512_add_ps(dsum, e);
            st(&mut w[a], 16 * gi, e);
        }
        st8.denom[i] += _mm512_reduce_add_ps(dsum);
    }
    // Two register sets per query: even and odd positions, added at the end.
    let mut a0: [[__m512; V]; Q] = std::array::from_fn(|a| {
        let ai = &acc[(g.i + a) * hd..];
        std::array::from_fn(|v| ld(ai, 16 * v))
    });
    let mut a1 = [[_mm512_setzero_ps(); V]; Q];
    let mut j = 0;
    while j + 2 <= ni {
        let (r0, r1) = (rows.v[j], rows.v[j + 1]);
        for v in 0..V {
            let (x0, x1) = (ld(r0, 16 * v), ld(r1, 16 * v));
            for a in 0..Q {
                a0[a][v] = _mm512_fmadd_ps(_mm512_set1_ps(w[a][j]), x0, a0[a][v]);
                a1[a][v] = _mm512_fmadd_ps(_mm512_set1_ps(w[a][j + 1]), x1, a1[a][v]);
            }
        }
        j += 2;
    }
    if j < ni {
        let r0 = rows.v[j];
        for v in 0..V {
            let x0 = ld(r0, 16 * v);
            for a in 0..Q {
                a0[a][v] = _mm512_fmadd_ps(_mm512_set1_ps(w[a][j]), x0, a0[a][v]);
            }
        }
    }
    for a in 0..Q {
        let ai = &mut acc[(g.i + a) * hd..(g.i + a + 1) * hd];
        for v in 0..V {
            st(ai, 16 * v, _mm512_add_ps(a0[a][v], a1[a][v]));
        }
    }
}
