//! x86_64 AVX2 + FMA + F16C kernels.
//!
//! Every `#[target_feature]` function here is reached only through the safe
//! wrappers in `KERNELS`, which `Kernels::for_isa` hands out after detecting
//! the features. Loads go through small checked helpers (bounds checks vanish
//! in `chunks_exact` loops) except in the register-tiled block product, which
//! checks its shapes once up front.

use std::arch::x86_64::*;

use super::{Isa, Kernels};
use crate::cpu::attention::AttendTile;
use crate::cpu::quant::{BlockQ8, QK};

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    dot_f32: dot_f32_w,
    dot_f16: dot_f16_w,
    dot_bf16: dot_bf16_w,
    dot_q8_0: dot_q8_0_w,
    dot_q4_0: dot_q4_0_w,
    dot_q4_1: dot_q4_1_w,
    qdot_q8_0: qdot_q8_0_w,
    qdot_q4_0: qdot_q4_0_w,
    qdot_q4_1: qdot_q4_1_w,
    quantize_q8: quantize_q8_w,
    dequant_f16: dequant_f16_w,
    dequant_bf16: dequant_bf16_w,
    dequant_q8_0: dequant_q8_0_w,
    dequant_q4_0: dequant_q4_0_w,
    dequant_q4_1: dequant_q4_1_w,
    dot_plain: dot_plain_w,
    axpy: axpy_w,
    scale: scale_w,
    silu_mul: silu_mul_w,
    attend_tile: attend_tile_w,
    prepare_q4: None,
    dot_q4_0p: None,
    dot_q4_1p: None,
    dot_q4_0p_rows: None,
    dot_q4_1p_rows: None,
    gemm_rows: gemm_rows_w,
    gemm_nr: NR,
    gemm_t: None,
    gemm_t_rows: 1,
};

/// Safe entry points for the table.
macro_rules! safe_wrappers {
    ($($name:ident => $imp:path [ $($a:ident : $t:ty),* ] $(-> $r:ty)?;)*) => {$(
        fn $name($($a: $t),*) $(-> $r)? {
            // SAFETY: only reachable through `KERNELS`, which `Kernels::for_isa`
            // returns only after detecting AVX2, FMA and F16C (all `$imp` enables).
            unsafe { $imp($($a),*) }
        }
    )*};
}

safe_wrappers! {
    dot_f32_w => dot_float::<F32>[row: &[u8], x: &[f32]] -> f32;
    dot_f16_w => dot_float::<F16>[row: &[u8], x: &[f32]] -> f32;
    dot_bf16_w => dot_float::<BF16>[row: &[u8], x: &[f32]] -> f32;
    dot_q8_0_w => dot_q8_0[row: &[u8], x: &[f32]] -> f32;
    dot_q4_0_w => dot_q4_0[row: &[u8], x: &[f32]] -> f32;
    dot_q4_1_w => dot_q4_1[row: &[u8], x: &[f32]] -> f32;
    qdot_q8_0_w => qdot_q8_0[row: &[u8], x: &[BlockQ8]] -> f32;
    qdot_q4_0_w => qdot_q4_0[row: &[u8], x: &[BlockQ8]] -> f32;
    qdot_q4_1_w => qdot_q4_1[row: &[u8], x: &[BlockQ8]] -> f32;
    quantize_q8_w => quantize_q8[x: &[f32], out: &mut [BlockQ8]];
    dequant_f16_w => dequant_float::<F16>[row: &[u8], out: &mut [f32]];
    dequant_bf16_w => dequant_float::<BF16>[row: &[u8], out: &mut [f32]];
    dequant_q8_0_w => dequant_q8_0[row: &[u8], out: &mut [f32]];
    dequant_q4_0_w => dequant_q4::<false>[row: &[u8], out: &mut [f32]];
    dequant_q4_1_w => dequant_q4::<true>[row: &[u8], out: &mut [f32]];
    dot_plain_w => dot_plain[a: &[f32], b: &[f32]] -> f32;
    axpy_w => axpy[a: f32, x: &[f32], y: &mut [f32]];
    scale_w => scale[a: f32, y: &mut [f32]];
    silu_mul_w => silu_mul[gate: &mut [f32], up: &[f32]];
    attend_tile_w => attend_tile[t: &AttendTile<'_>, acc: &mut [f32]];
    gemm_rows_w => gemm_rows[x: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]];
}

// Float weight kinds for the generic float paths.
const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

// ---------------------------------------------------------------- helpers

/// 8 f32 from `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn ld(x: &[f32], i: usize) -> __m256 {
    let s = &x[i..i + 8];
    // SAFETY: `s` holds 8 f32; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Stores 8 f32 to `y[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn st(y: &mut [f32], i: usize, v: __m256) {
    let s = &mut y[i..i + 8];
    // SAFETY: `s` holds 8 f32; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
}

/// 8 bytes from `b[off..off + 8]` into the low half of an xmm.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn ld8b(b: &[u8], off: usize) -> __m128i {
    let s = &b[off..off + 8];
    // SAFETY: `s` holds 8 bytes, exactly what loadl reads; no alignment needed.
    unsafe { _mm_loadl_epi64(s.as_ptr().cast()) }
}

/// 16 bytes from `b[off..off + 16]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn ld16b(b: &[u8], off: usize) -> __m128i {
    let s = &b[off..off + 16];
    // SAFETY: `s` holds 16 bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// 32 bytes from `b[off..off + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn ld32b(b: &[u8], off: usize) -> __m256i {
    let s = &b[off..off + 32];
    // SAFETY: `s` holds 32 bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// The 32 activation quants of a block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn ldq(xb: &BlockQ8) -> __m256i {
    // SAFETY: `qs` is exactly 32 bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) }
}

/// The f16 at `b[off..off + 2]` as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_at(b: &[u8], off: usize) -> f32 {
    // A broadcast, not a scalar insert: inserting into a register would make
    // LLVM merge into whatever it holds (often an accumulator), chaining
    // every block's scale behind the previous block's sum.
    let h = i16::from_le_bytes([b[off], b[off + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h)))
}

/// The f16 bits at `b[off..off + 2]`, as a table index.
#[inline]
pub(super) fn f16_bits(b: &[u8], off: usize) -> usize {
    // One 16-bit load (byte-wise assembly would cost four ALU ops).
    <[u8; 2]>::try_from(&b[off..off + 2]).map_or(0, |h| usize::from(u16::from_le_bytes(h)))
}

/// The f16 at `b[off..off + 2]`, as f32 in all 8 lanes (one broadcast load).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x8(lut: &[f32; 1 << 16], b: &[u8], off: usize) -> __m256 {
    _mm256_broadcast_ss(&lut[f16_bits(b, off)])
}
/// 8 weights of kind `K` starting at element `i` of a byte row, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ldw<const K: u8>(row: &[u8], i: usize) -> __m256 {
    match K {
        F32 => {
            let s = &row[4 * i..4 * i + 32];
            // SAFETY: `s` holds 32 bytes = 8 f32; loadu has no alignment requirement.
            unsafe { _mm256_loadu_ps(s.as_ptr().cast()) }
        }
        F16 => _mm256_cvtph_ps(ld16b(row, 2 * i)),
        _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(ld16b(
            row,
            2 * i,
        )))),
    }
}

/// One weight of kind `K` (element `i`), as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn w1<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32 => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
        F16 => f16_at(row, 2 * i),
        _ => f32::from_bits(u32::from(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])) << 16),
    }
}

/// Horizontal sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// `[Σa, Σb, Σc, Σd]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
}

/// Sign-extends 8 i8 (low half of `v`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn i8x8_ps(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Widens 8 u8 (low half of `v`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn u8x8_ps(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// A Q4 block's 16 nibble bytes as 32 u8 in element order (low nibbles,
/// then high nibbles). A 128-bit broadcast load and a per-half shift keep
/// this off the (single) cross-lane shuffle port.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles(blk: &[u8], off: usize) -> __m256i {
    let v = _mm256_broadcastsi128_si256(ld16b(blk, off));
    let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// Sums the i16 pairs of `p` into 8 i32 and converts to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn pairs_ps(p: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

// ---------------------------------------------------------------- float dots

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_float<const K: u8>(row: &[u8], x: &[f32]) -> f32 {
    let esz = if K == F32 { 4 } else { 2 };
    let n = (row.len() / esz).min(x.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut rc = row[..n * esz].chunks_exact(32 * esz);
    let mut xc = x[..n].chunks_exact(32);
    for (r, xv) in (&mut rc).zip(&mut xc) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(ldw::<K>(r, 8 * j), ld(xv, 8 * j), *a);
        }
    }
    let (r, xv) = (rc.remainder(), xc.remainder());
    let mut i = 0;
    while i + 8 <= xv.len() {
        acc[0] = _mm256_fmadd_ps(ldw::<K>(r, i), ld(xv, i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    for (t, &xt) in xv.iter().enumerate().skip(i) {
        s += w1::<K>(r, t) * xt;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut ac = a[..n].chunks_exact(32);
    let mut bc = b[..n].chunks_exact(32);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for (j, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(ld(x, 8 * j), ld(y, 8 * j), *s);
        }
    }
    let (x, y) = (ac.remainder(), bc.remainder());
    let mut i = 0;
    while i + 8 <= x.len() {
        acc[0] = _mm256_fmadd_ps(ld(x, i), ld(y, i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(v) + x[i..].iter().zip(&y[i..]).map(|(p, q)| p * q).sum::<f32>()
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        st(y, i, _mm256_fmadd_ps(av, ld(x, i), ld(y, i)));
        i += 8;
    }
    for (yv, &xv) in y[i..n].iter_mut().zip(&x[i..n]) {
        *yv += a * xv;
    }
}

/// The attention tile on this table's dot and axpy.
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_tile(t: &AttendTile<'_>, acc: &mut [f32]) {
    crate::cpu::attention::attend_tile_with(
        t,
        acc,
        // Closures inherit this function's target features: direct calls.
        |a, b| dot_plain(a, b),
        |w, x, y| axpy(w, x, y),
        |h, out| dequant_float::<F16>(bytemuck::cast_slice(h), out),
    );
}

/// The portable body, vectorized by the compiler for this table's features.
#[target_feature(enable = "avx2,fma,f16c")]
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    crate::cpu::activation::silu_mul_lanes(gate, up);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn scale(a: f32, y: &mut [f32]) {
    let av = _mm256_set1_ps(a);
    let mut c = y.chunks_exact_mut(8);
    for s in &mut c {
        st(s, 0, _mm256_mul_ps(av, ld(s, 0)));
    }
    c.into_remainder().iter_mut().for_each(|v| *v *= a);
}

// ---------------------------------------------------------------- exact quantized dots

/// `Σ w·x` over one Q8_0 block (unscaled).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_block(blk: &[u8], xb: &[f32]) -> __m256 {
    let mut s = _mm256_mul_ps(i8x8_ps(ld8b(blk, 2)), ld(xb, 0));
    s = _mm256_fmadd_ps(i8x8_ps(ld8b(blk, 10)), ld(xb, 8), s);
    s = _mm256_fmadd_ps(i8x8_ps(ld8b(blk, 18)), ld(xb, 16), s);
    _mm256_fmadd_ps(i8x8_ps(ld8b(blk, 26)), ld(xb, 24), s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let (v, _) = block_sum!(ymm, row, x, 34, QK, |blk, xv| (
        q8_0_block(blk, xv),
        f16x8(lut, blk, 0),
        -0.0
    ));
    hsum(v)
}

/// Q4 block weights as four f32 vectors in element order (`n - 8` when `SUB8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_block_ps<const SUB8: bool>(blk: &[u8], off: usize) -> [__m256; 4] {
    let v = ld16b(blk, off);
    let m = _mm_set1_epi8(0x0f);
    let mut lo = _mm_and_si128(v, m);
    let mut hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    if SUB8 {
        lo = _mm_sub_epi8(lo, _mm_set1_epi8(8));
        hi = _mm_sub_epi8(hi, _mm_set1_epi8(8));
        [
            i8x8_ps(lo),
            i8x8_ps(_mm_srli_si128::<8>(lo)),
            i8x8_ps(hi),
            i8x8_ps(_mm_srli_si128::<8>(hi)),
        ]
    } else {
        [
            u8x8_ps(lo),
            u8x8_ps(_mm_srli_si128::<8>(lo)),
            u8x8_ps(hi),
            u8x8_ps(_mm_srli_si128::<8>(hi)),
        ]
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let (v, _) = block_sum!(ymm, row, x, 18, QK, |blk, xv| {
        let w = q4_block_ps::<true>(blk, 2);
        let mut s = _mm256_mul_ps(w[0], ld(xv, 0));
        s = _mm256_fmadd_ps(w[1], ld(xv, 8), s);
        s = _mm256_fmadd_ps(w[2], ld(xv, 16), s);
        s = _mm256_fmadd_ps(w[3], ld(xv, 24), s);
        (s, f16x8(lut, blk, 0), -0.0)
    });
    hsum(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let mut accm = _mm256_setzero_ps();
    let (v, _) = block_sum!(ymm, row, x, 20, QK, |blk, xv| {
        let w = q4_block_ps::<false>(blk, 4);
        let (x0, x1, x2, x3) = (ld(xv, 0), ld(xv, 8), ld(xv, 16), ld(xv, 24));
        let mut s = _mm256_mul_ps(w[0], x0);
        s = _mm256_fmadd_ps(w[1], x1, s);
        s = _mm256_fmadd_ps(w[2], x2, s);
        s = _mm256_fmadd_ps(w[3], x3, s);
        let xs = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
        accm = _mm256_fmadd_ps(xs, f16x8(lut, blk, 2), accm);
        (s, f16x8(lut, blk, 0), -0.0)
    });
    hsum(_mm256_add_ps(v, accm))
}

// ---------------------------------------------------------------- fast (integer) dots

#[target_feature(enable = "avx2,fma,f16c")]
fn qdot_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let (v, _) = block_sum!(ymm, row, x, 34, 1, |blk, xv| {
        let w = ld32b(blk, 2);
        // |w| · (q with w's sign): u8 × i8 pairs, at most 2·128·127 < 2¹⁵.
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(ldq(&xv[0]), w));
        (
            _mm256_mul_ps(pairs_ps(p), f16x8(lut, blk, 0)),
            _mm256_broadcast_ss(&xv[0].d),
            -0.0,
        )
    });
    hsum(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn qdot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let eight = _mm256_set1_epi8(8);
    let (v, _) = block_sum!(ymm, row, x, 18, 1, |blk, xv| {
        let q = ldq(&xv[0]);
        // Σ(n - 8)·q = Σn·q - Σ8·q, each pair sum well inside i16.
        let p = _mm256_sub_epi16(
            _mm256_maddubs_epi16(nibbles(blk, 2), q),
            _mm256_maddubs_epi16(eight, q),
        );
        (
            _mm256_mul_ps(pairs_ps(p), f16x8(lut, blk, 0)),
            _mm256_broadcast_ss(&xv[0].d),
            -0.0,
        )
    });
    hsum(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn qdot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let (v, ms) = block_sum!(ymm, row, x, 20, 1, |blk, xv| {
        let p = _mm256_maddubs_epi16(nibbles(blk, 4), ldq(&xv[0]));
        let v = _mm256_mul_ps(pairs_ps(p), f16x8(lut, blk, 0));
        (
            v,
            _mm256_broadcast_ss(&xv[0].d),
            lut[f16_bits(blk, 2)] * xv[0].s,
        )
    });
    hsum(v) + ms
}

// ---------------------------------------------------------------- activation quantization

/// Rounds half away from zero (as `f32::round`), NaN to 0, then clamps to ±127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn round_q(v: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v - trunc(v) is exact, so the halfway test is too.
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, sign));
    let r = _mm256_add_ps(t, _mm256_and_ps(up, one));
    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvttps_epi32(r)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let v = [ld(xb, 0), ld(xb, 8), ld(xb, 16), ld(xb, 24)];
        // max(|v|, acc) keeps acc when |v| is NaN, like `f32::max`.
        let mut m = _mm256_setzero_ps();
        for &vi in &v {
            m = _mm256_max_ps(_mm256_and_ps(vi, abs), m);
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let q = v.map(|vi| round_q(_mm256_mul_ps(vi, idv)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_srli_si128::<4>(s2)));
        // i32 → i16 → i8 packs work per 128-bit lane; a permute restores order.
        let p16a = _mm256_packs_epi32(q[0], q[1]);
        let p16b = _mm256_packs_epi32(q[2], q[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `qs` is exactly 32 bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(ob.qs.as_mut_ptr().cast(), p8) };
        ob.d = d;
        ob.s = d * total as f32;
    }
}

// ---------------------------------------------------------------- dequantization

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_float<const K: u8>(row: &[u8], out: &mut [f32]) {
    let n = (row.len() / 2).min(out.len());
    let mut i = 0;
    while i + 8 <= n {
        st(out, i, ldw::<K>(row, i));
        i += 8;
    }
    for (t, o) in out.iter_mut().enumerate().take(n).skip(i) {
        *o = w1::<K>(row, t);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q8_0(row: &[u8], out: &mut [f32]) {
    let lut = super::f16_lut();
    for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16x8(lut, blk, 0);
        for j in 0..4 {
            st(o, 8 * j, _mm256_mul_ps(d, i8x8_ps(ld8b(blk, 2 + 8 * j))));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q4<const Q4_1: bool>(row: &[u8], out: &mut [f32]) {
    let lut = super::f16_lut();
    let bb = if Q4_1 { 20 } else { 18 };
    for (blk, o) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = f16x8(lut, blk, 0);
        if Q4_1 {
            let m = f16x8(lut, blk, 2);
            let w = q4_block_ps::<false>(blk, 4);
            for (j, wj) in w.into_iter().enumerate() {
                st(o, 8 * j, _mm256_fmadd_ps(d, wj, m));
            }
        } else {
            let w = q4_block_ps::<true>(blk, 2);
            for (j, wj) in w.into_iter().enumerate() {
                st(o, 8 * j, _mm256_mul_ps(d, wj));
            }
        }
    }
}

// ---------------------------------------------------------------- prefill block product

/// Input rows per register tile.
const MR: usize = 3;
/// Weight rows per register tile.
const NR: usize = 4;

#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_rows(x: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]) {
    if k == 0 || w.is_empty() {
        return;
    }
    let m = x.len() / k;
    let c = w.len();
    assert!(out.len() >= m * c, "gemm_rows: out too short");
    assert!(
        w.iter().all(|r| r.len() >= 4 * k),
        "gemm_rows: short weight row"
    );
    for j0 in (0..c).step_by(NR) {
        let nr = NR.min(c - j0);
        // A short last group repeats its last row; those results are dropped.
        let wp: [*const f32; NR] = std::array::from_fn(|t| w[j0 + t.min(nr - 1)].as_ptr().cast());
        let mut r0 = 0;
        while r0 < m {
            let mr = MR.min(m - r0);
            let xp: [*const f32; MR] =
                std::array::from_fn(|t| x[(r0 + t.min(mr - 1)) * k..].as_ptr());
            // SAFETY: every `xp` row starts a whole row of `k` f32 inside `x`
            // and every `wp` row has at least `4k` bytes (checked above).
            let res = unsafe { tile(xp, wp, k) };
            for (t, rr) in res.iter().enumerate().take(mr) {
                let o = &mut out[(r0 + t) * c + j0..][..nr];
                o.copy_from_slice(&rr[..nr]);
            }
            r0 += mr;
        }
    }
}

/// `MR × NR` dots of length `k`.
///
/// # Safety
/// Each pointer must be valid for reading `k` f32 (any alignment).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile(xp: [*const f32; MR], wp: [*const f32; NR], k: usize) -> [[f32; NR]; MR] {
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let mut i = 0;
    while i + 8 <= k {
        // SAFETY: i + 8 <= k, so each load stays inside its row.
        let wv: [__m256; NR] = std::array::from_fn(|c| unsafe { _mm256_loadu_ps(wp[c].add(i)) });
        for r in 0..MR {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(xp[r].add(i)) };
            for c in 0..NR {
                acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
        i += 8;
    }
    if i < k {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - i) as i32), lane);
        // SAFETY: masked-off lanes are not read (no fault); lanes read are < k.
        let wv: [__m256; NR] =
            std::array::from_fn(|c| unsafe { _mm256_maskload_ps(wp[c].add(i), mask) });
        for r in 0..MR {
            // SAFETY: as above.
            let xv = unsafe { _mm256_maskload_ps(xp[r].add(i), mask) };
            for c in 0..NR {
                acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
    }
    let mut res = [[0f32; NR]; MR];
    for (r, a) in acc.iter().enumerate() {
        let s = hsum4(a[0], a[1], a[2], a[3]);
        // SAFETY: `res[r]` is 4 f32; storeu has no alignment requirement.
        unsafe { _mm_storeu_ps(res[r].as_mut_ptr(), s) };
    }
    res
}
