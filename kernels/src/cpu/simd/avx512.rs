//! x86_64 AVX-512 (F, BW, VL, VNNI) kernels; they also use the AVX2 set and
//! share its small helpers (a callee with fewer features inlines fine).
//!
//! Every `#[target_feature]` function here is reached only through the safe
//! wrappers in `KERNELS`, which `Kernels::for_isa` hands out after detecting
//! the features.

use std::arch::x86_64::*;

use super::avx2::{f16_bits, f16x8, hsum, hsum4, ld16b, ld32b, ldq, nibbles};
use super::{Isa, Kernels, GEMM_T_LANES, PREPARED_Q4_BLOCK};
use crate::cpu::attention::AttendTile;
use crate::cpu::quant::{BlockQ8, QK};

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
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
    prepare_q4: Some(prepare_q4_w),
    dot_q4_0p: Some(dot_q4_0p_w),
    dot_q4_1p: Some(dot_q4_1p_w),
    dot_q4_0p_rows: Some(dot_q4_0p_rows_w),
    dot_q4_1p_rows: Some(dot_q4_1p_rows_w),
    gemm_rows: gemm_rows_w,
    gemm_nr: NR,
    gemm_t: Some(gemm_t_w),
    gemm_t_rows: JT,
};

/// Safe entry points for the table.
macro_rules! safe_wrappers {
    ($($name:ident => $imp:path [ $($a:ident : $t:ty),* ] $(-> $r:ty)?;)*) => {$(
        fn $name($($a: $t),*) $(-> $r)? {
            // SAFETY: only reachable through `KERNELS`, which `Kernels::for_isa`
            // returns only after detecting AVX-512 F/BW/VL/VNNI, AVX2, FMA and
            // F16C (all `$imp` enables).
            unsafe { $imp($($a),*) }
        }
    )*};
}

safe_wrappers! {
    dot_f32_w => dot_float::<F32>[row: &[u8], x: &[f32]] -> f32;
    dot_f16_w => dot_float::<F16>[row: &[u8], x: &[f32]] -> f32;
    dot_bf16_w => dot_float::<BF16>[row: &[u8], x: &[f32]] -> f32;
    dot_q8_0_w => dot_q8_0[row: &[u8], x: &[f32]] -> f32;
    dot_q4_0_w => dot_q4::<false>[row: &[u8], x: &[f32]] -> f32;
    dot_q4_1_w => dot_q4::<true>[row: &[u8], x: &[f32]] -> f32;
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
    gemm_t_w => gemm_t[xt: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]];
    dot_q4_0p_w => dot_q4p::<false>[row: &[u8], xp: &[f32]] -> f32;
    dot_q4_1p_w => dot_q4p::<true>[row: &[u8], xp: &[f32]] -> f32;
    dot_q4_0p_rows_w => dot_q4p_rows::<false>[row: &[u8], xp: &[f32], out: &mut [f32]];
    dot_q4_1p_rows_w => dot_q4p_rows::<true>[row: &[u8], xp: &[f32], out: &mut [f32]];
}

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

// ---------------------------------------------------------------- helpers

/// 16 f32 from `x[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld(x: &[f32], i: usize) -> __m512 {
    let s = &x[i..i + 16];
    // SAFETY: `s` holds 16 f32; loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Up to 16 f32 from `x[i..]` (the rest zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld_tail(x: &[f32], i: usize) -> __m512 {
    let s = &x[i..];
    let mask = tail_mask(s.len());
    // SAFETY: the mask enables only lanes < s.len(); masked-off lanes are
    // neither read nor able to fault.
    unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr()) }
}

/// Stores 16 f32 to `y[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn st(y: &mut [f32], i: usize, v: __m512) {
    let s = &mut y[i..i + 16];
    // SAFETY: `s` holds 16 f32; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
}

/// Stores the first `y.len() - i` (at most 16) lanes of `v` to `y[i..]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn st_tail(y: &mut [f32], i: usize, v: __m512) {
    let s = &mut y[i..];
    let mask = tail_mask(s.len());
    // SAFETY: the mask enables only lanes < s.len().
    unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), mask, v) }
}

/// Lanes `0..min(n, 16)` set.
#[inline]
fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// 16 weights of kind `K` from element `i` of a byte row, as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ldw<const K: u8>(row: &[u8], i: usize) -> __m512 {
    match K {
        F32 => {
            let s = &row[4 * i..4 * i + 64];
            // SAFETY: `s` holds 64 bytes = 16 f32; loadu has no alignment requirement.
            unsafe { _mm512_loadu_ps(s.as_ptr().cast()) }
        }
        F16 => _mm512_cvtph_ps(ld32b(row, 2 * i)),
        _ => bf16_ps(ld32b(row, 2 * i)),
    }
}

/// Up to 16 weights of kind `K` from element `i` (`n` elements in the row).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ldw_tail<const K: u8>(row: &[u8], i: usize, n: usize) -> __m512 {
    let mask = tail_mask(n - i);
    if K == F32 {
        let s = &row[4 * i..4 * n];
        // SAFETY: the mask enables only lanes < n - i, all inside `s`.
        unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr().cast()) }
    } else {
        let s = &row[2 * i..2 * n];
        // SAFETY: the mask enables only lanes < n - i, all inside `s`.
        let h = unsafe { _mm256_maskz_loadu_epi16(mask, s.as_ptr().cast()) };
        if K == F16 {
            _mm512_cvtph_ps(h)
        } else {
            bf16_ps(h)
        }
    }
}

/// 16 bf16 to f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bf16_ps(h: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// The f16 at `b[off..off + 2]`, as f32 in all 16 lanes (one broadcast load).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16x16(lut: &[f32; 1 << 16], b: &[u8], off: usize) -> __m512 {
    _mm512_set1_ps(lut[f16_bits(b, off)])
}
/// Folds 512 bits to 256.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fold(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

// ---------------------------------------------------------------- float dots

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_float<const K: u8>(row: &[u8], x: &[f32]) -> f32 {
    let esz = if K == F32 { 4 } else { 2 };
    let n = (row.len() / esz).min(x.len());
    let (row, x) = (&row[..n * esz], &x[..n]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut rc = row.chunks_exact(64 * esz);
    let mut xc = x.chunks_exact(64);
    for (r, xv) in (&mut rc).zip(&mut xc) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(ldw::<K>(r, 16 * j), ld(xv, 16 * j), *a);
        }
    }
    let (r, xv) = (rc.remainder(), xc.remainder());
    let rn = xv.len();
    let mut i = 0;
    while i + 16 <= rn {
        acc[0] = _mm512_fmadd_ps(ldw::<K>(r, i), ld(xv, i), acc[0]);
        i += 16;
    }
    if i < rn {
        acc[1] = _mm512_fmadd_ps(ldw_tail::<K>(r, i, rn), ld_tail(xv, i), acc[1]);
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut ac = a.chunks_exact(64);
    let mut bc = b.chunks_exact(64);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for (j, s) in acc.iter_mut().enumerate() {
            *s = _mm512_fmadd_ps(ld(x, 16 * j), ld(y, 16 * j), *s);
        }
    }
    let (x, y) = (ac.remainder(), bc.remainder());
    let mut i = 0;
    while i + 16 <= x.len() {
        acc[0] = _mm512_fmadd_ps(ld(x, i), ld(y, i), acc[0]);
        i += 16;
    }
    if i < x.len() {
        acc[1] = _mm512_fmadd_ps(ld_tail(x, i), ld_tail(y, i), acc[1]);
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let av = _mm512_set1_ps(a);
    let mut i = 0;
    while i + 16 <= n {
        st(y, i, _mm512_fmadd_ps(av, ld(x, i), ld(y, i)));
        i += 16;
    }
    if i < n {
        st_tail(y, i, _mm512_fmadd_ps(av, ld_tail(x, i), ld_tail(y, i)));
    }
}

/// The attention tile on this table's dot and axpy.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn attend_tile(t: &AttendTile<'_>, acc: &mut [f32]) {
    if super::avx512_attention::attend_tile_vec(t, acc) {
        return;
    }
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    crate::cpu::activation::silu_mul_lanes(gate, up);
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scale(a: f32, y: &mut [f32]) {
    let av = _mm512_set1_ps(a);
    let n = y.len();
    let mut i = 0;
    while i + 16 <= n {
        st(y, i, _mm512_mul_ps(av, ld(y, i)));
        i += 16;
    }
    if i < n {
        st_tail(y, i, _mm512_mul_ps(av, ld_tail(y, i)));
    }
}

// ---------------------------------------------------------------- exact quantized dots

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let (v, _) = block_sum!(zmm, row, x, 34, QK, |blk, xv| {
        let w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(ld16b(blk, 2)));
        let w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(ld16b(blk, 18)));
        let s = _mm512_fmadd_ps(w1, ld(xv, 16), _mm512_mul_ps(w0, ld(xv, 0)));
        (s, f16x16(lut, blk, 0), -0.0)
    });
    _mm512_reduce_add_ps(v)
}

/// Q4 block nibbles as two f32 vectors (elements 0..16, 16..32), `n - 8` unless `Q4_1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_ps<const Q4_1: bool>(blk: &[u8], off: usize) -> [__m512; 2] {
    let v = ld16b(blk, off);
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    if Q4_1 {
        [
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)),
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)),
        ]
    } else {
        let e = _mm_set1_epi8(8);
        [
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(lo, e))),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(hi, e))),
        ]
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q4<const Q4_1: bool>(row: &[u8], x: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let bb = if Q4_1 { 20 } else { 18 };
    let mut accm = _mm512_setzero_ps();
    let (v, _) = block_sum!(zmm, row, x, bb, QK, |blk, xv| {
        let [w0, w1] = q4_ps::<Q4_1>(blk, bb - 16);
        let (x0, x1) = (ld(xv, 0), ld(xv, 16));
        if Q4_1 {
            accm = _mm512_fmadd_ps(_mm512_add_ps(x0, x1), f16x16(lut, blk, 2), accm);
        }
        let s = _mm512_fmadd_ps(w1, x1, _mm512_mul_ps(w0, x0));
        (s, f16x16(lut, blk, 0), -0.0)
    });
    _mm512_reduce_add_ps(_mm512_add_ps(v, accm))
}

// ---------------------------------------------------------------- exact Q4 dots on prepared activations

/// Element of a 16-lane half block that prepared lane `i` holds: the 4×4
/// transpose `4·(i % 4) + i / 4` (see `dot_q4p`).
const fn prepared_elem(i: usize) -> usize {
    4 * (i % 4) + i / 4
}

/// Lays out each block of 32 activations as `dot_q4p` reads them. Plain
/// Rust: it runs once per input row.
fn prepare_q4_w(x: &[f32], out: &mut [f32]) {
    for (xb, pb) in x
        .chunks_exact(QK)
        .zip(out.chunks_exact_mut(PREPARED_Q4_BLOCK))
    {
        for i in 0..16 {
            pb[i] = xb[prepared_elem(i)];
            pb[16 + i] = xb[16 + prepared_elem(i)];
        }
    }
}

/// One Q4 block's weights as two vectors (prepared order), built from a
/// 16-entry per-block table (`d·n - 8d` or `d·n + m`): the block's 16 nibble
/// bytes are broadcast to all four 128-bit lanes, so dword `d` of lane `l`
/// holds bytes `4d..4d + 4`; shifting it right by `8l` (`8l + 4`) puts the
/// low (high) nibble of byte `4d + l` in bits 0..4, which is all `vpermps`
/// reads. Lane `4l + d` thus holds element `4d + l`, the order
/// `prepare_q4_w` gave the activations. No zero-extending shuffles, no
/// int-to-float converts, and scale and minimum come for free.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_prepared_weights<const Q4_1: bool>(lut: &[f32; 1 << 16], blk: &[u8]) -> [__m512; 2] {
    let nib = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let sh_lo = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
    let sh_hi = _mm512_add_epi32(sh_lo, _mm512_set1_epi32(4));
    let d = f16x16(lut, blk, 0);
    let table = if Q4_1 {
        _mm512_fmadd_ps(nib, d, f16x16(lut, blk, 2))
    } else {
        _mm512_mul_ps(_mm512_sub_ps(nib, _mm512_set1_ps(8.0)), d)
    };
    let z = _mm512_broadcast_i32x4(ld16b(blk, if Q4_1 { 4 } else { 2 }));
    [
        _mm512_permutexvar_ps(_mm512_srlv_epi32(z, sh_lo), table),
        _mm512_permutexvar_ps(_mm512_srlv_epi32(z, sh_hi), table),
    ]
}

/// Exact Q4 dot on activations from `prepare_q4_w` (see
/// `q4_prepared_weights`); four accumulators, two blocks per step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q4p<const Q4_1: bool>(row: &[u8], xp: &[f32]) -> f32 {
    let lut = super::f16_lut();
    let bb = if Q4_1 { 20 } else { 18 };
    let nb = (row.len() / bb).min(xp.len() / PREPARED_Q4_BLOCK);
    let (row, xp) = (&row[..nb * bb], &xp[..nb * PREPARED_Q4_BLOCK]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut rc = row.chunks_exact(2 * bb);
    let mut xc = xp.chunks_exact(2 * PREPARED_Q4_BLOCK);
    for (r2, x2) in (&mut rc).zip(&mut xc) {
        for j in 0..2 {
            let [wl, wh] = q4_prepared_weights::<Q4_1>(lut, &r2[j * bb..(j + 1) * bb]);
            let xv = &x2[j * PREPARED_Q4_BLOCK..(j + 1) * PREPARED_Q4_BLOCK];
            acc[2 * j] = _mm512_fmadd_ps(wl, ld(xv, 0), acc[2 * j]);
            acc[2 * j + 1] = _mm512_fmadd_ps(wh, ld(xv, 16), acc[2 * j + 1]);
        }
    }
    if let (Some(blk), Some(xv)) = (
        rc.remainder().get(..bb),
        xc.remainder().get(..PREPARED_Q4_BLOCK),
    ) {
        let [wl, wh] = q4_prepared_weights::<Q4_1>(lut, blk);
        acc[0] = _mm512_fmadd_ps(wl, ld(xv, 0), acc[0]);
        acc[1] = _mm512_fmadd_ps(wh, ld(xv, 16), acc[1]);
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(v)
}

/// [`dot_q4p`] of one weight row against `out.len()` (1..=3) prepared
/// activation rows laid end to end in `xp`: each block is decoded once for
/// all of them. Per row the accumulators, their order and the final sum are
/// exactly `dot_q4p`'s, so every output equals the one-row dot bit for bit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q4p_rows<const Q4_1: bool>(row: &[u8], xp: &[f32], out: &mut [f32]) {
    match out.len() {
        0 => {}
        1 => dot_q4p_m::<Q4_1, 1>(row, xp, out),
        2 => dot_q4p_m::<Q4_1, 2>(row, xp, out),
        _ => dot_q4p_m::<Q4_1, 3>(row, xp, out),
    }
}

/// [`dot_q4p_rows`] for exactly `M` rows (registers, fully unrolled).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q4p_m<const Q4_1: bool, const M: usize>(row: &[u8], xp: &[f32], out: &mut [f32]) {
    let stride = xp.len() / out.len().max(1);
    let lut = super::f16_lut();
    let bb = if Q4_1 { 20 } else { 18 };
    let nb = (row.len() / bb).min(stride / PREPARED_Q4_BLOCK);
    let xs: [&[f32]; M] =
        std::array::from_fn(|r| &xp[r * stride..r * stride + nb * PREPARED_Q4_BLOCK]);
    let mut acc = [[_mm512_setzero_ps(); 4]; M];
    let mut b = 0;
    while b + 2 <= nb {
        for j in 0..2 {
            let [wl, wh] = q4_prepared_weights::<Q4_1>(lut, &row[(b + j) * bb..(b + j + 1) * bb]);
            let o = (b + j) * PREPARED_Q4_BLOCK;
            for r in 0..M {
                acc[r][2 * j] = _mm512_fmadd_ps(wl, ld(xs[r], o), acc[r][2 * j]);
                acc[r][2 * j + 1] = _mm512_fmadd_ps(wh, ld(xs[r], o + 16), acc[r][2 * j + 1]);
            }
        }
        b += 2;
    }
    if b < nb {
        let [wl, wh] = q4_prepared_weights::<Q4_1>(lut, &row[b * bb..(b + 1) * bb]);
        let o = b * PREPARED_Q4_BLOCK;
        for r in 0..M {
            acc[r][0] = _mm512_fmadd_ps(wl, ld(xs[r], o), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(wh, ld(xs[r], o + 16), acc[r][1]);
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        let v = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        *o = _mm512_reduce_add_ps(v);
    }
}

// ---------------------------------------------------------------- fast (VNNI) dots

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn qdot_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let zero = _mm256_setzero_si256();
    let (v, _) = block_sum!(ymm, row, x, 34, 1, |blk, xv| {
        let w = ld32b(blk, 2);
        // |w| (u8) · q with w's sign (i8): exact, as vpdpbusd wants.
        let p = _mm256_dpbusd_epi32(zero, _mm256_abs_epi8(w), _mm256_sign_epi8(ldq(&xv[0]), w));
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(p), f16x8(lut, blk, 0));
        (v, _mm256_broadcast_ss(&xv[0].d), -0.0)
    });
    hsum(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn qdot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let zero = _mm256_setzero_si256();
    let eight = _mm256_set1_epi8(8);
    let (v, _) = block_sum!(ymm, row, x, 18, 1, |blk, xv| {
        let q = ldq(&xv[0]);
        // Σ(n - 8)·q = Σn·q - Σ8·q, both exact in i32.
        let p = _mm256_sub_epi32(
            _mm256_dpbusd_epi32(zero, nibbles(blk, 2), q),
            _mm256_dpbusd_epi32(zero, eight, q),
        );
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(p), f16x8(lut, blk, 0));
        (v, _mm256_broadcast_ss(&xv[0].d), -0.0)
    });
    hsum(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn qdot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
    let lut = super::f16_lut();
    let zero = _mm256_setzero_si256();
    let (v, ms) = block_sum!(ymm, row, x, 20, 1, |blk, xv| {
        let p = _mm256_dpbusd_epi32(zero, nibbles(blk, 4), ldq(&xv[0]));
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(p), f16x8(lut, blk, 0));
        (
            v,
            _mm256_broadcast_ss(&xv[0].d),
            lut[f16_bits(blk, 2)] * xv[0].s,
        )
    });
    hsum(v) + ms
}

// ---------------------------------------------------------------- activation quantization

/// Rounds half away from zero (as `f32::round`), NaN to 0, clamps to ±127.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn round_q(v: __m512) -> __m512i {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v - trunc(v) is exact, so the halfway test is too.
    let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    // ±1 with v's sign (integer ops: the float ones need AVX-512 DQ).
    let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
    let one = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_set1_epi32(0x3f80_0000)));
    let r = _mm512_mask_add_ps(t, up, t, one);
    let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), r);
    let r = _mm512_min_ps(
        _mm512_max_ps(r, _mm512_set1_ps(-127.0)),
        _mm512_set1_ps(127.0),
    );
    _mm512_cvttps_epi32(r)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (v0, v1) = (ld(xb, 0), ld(xb, 16));
        // max(|v|, acc) keeps acc when |v| is NaN, like `f32::max`.
        let m = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps());
        let m = _mm512_max_ps(_mm512_abs_ps(v1), m);
        let amax = _mm512_reduce_max_ps(m);
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm512_set1_ps(id);
        let q0 = round_q(_mm512_mul_ps(v0, idv));
        let q1 = round_q(_mm512_mul_ps(v1, idv));
        let total = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        let b = _mm256_set_m128i(_mm512_cvtsepi32_epi8(q1), _mm512_cvtsepi32_epi8(q0));
        // SAFETY: `qs` is exactly 32 bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(ob.qs.as_mut_ptr().cast(), b) };
        ob.d = d;
        ob.s = d * total as f32;
    }
}

// ---------------------------------------------------------------- dequantization

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dequant_float<const K: u8>(row: &[u8], out: &mut [f32]) {
    let n = (row.len() / 2).min(out.len());
    let mut i = 0;
    while i + 16 <= n {
        st(out, i, ldw::<K>(row, i));
        i += 16;
    }
    if i < n {
        st_tail(&mut out[..n], i, ldw_tail::<K>(row, i, n));
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dequant_q8_0(row: &[u8], out: &mut [f32]) {
    let lut = super::f16_lut();
    for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16x16(lut, blk, 0);
        st(
            o,
            0,
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(ld16b(blk, 2)))),
        );
        st(
            o,
            16,
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(ld16b(blk, 18)))),
        );
    }
}

/// Each block's 16 possible values (`d·n + m`, or `(n - 8)·d`) in one
/// register, looked up per element by `vpermps`, which reads only the low
/// four bits of each index: the zero-extended bytes index the low nibbles
/// as they are and, shifted right by 4, the high ones. The same products as
/// scaling each element (bit for bit), with no int-to-float converts.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dequant_q4<const Q4_1: bool>(row: &[u8], out: &mut [f32]) {
    let lut = super::f16_lut();
    let bb = if Q4_1 { 20 } else { 18 };
    let nib = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let nib8 = _mm512_sub_ps(nib, _mm512_set1_ps(8.0));
    for (blk, o) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = f16x16(lut, blk, 0);
        let table = if Q4_1 {
            _mm512_fmadd_ps(d, nib, f16x16(lut, blk, 2))
        } else {
            _mm512_mul_ps(d, nib8)
        };
        let bytes = _mm512_cvtepu8_epi32(ld16b(blk, bb - 16));
        st(o, 0, _mm512_permutexvar_ps(bytes, table));
        st(
            o,
            16,
            _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), table),
        );
    }
}

// ---------------------------------------------------------------- block product on transposed activations

/// Weight rows per transposed tile: 12 rows x 2 vectors = 24 accumulators.
const JT: usize = 12;

/// See [`super::GemmT`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_t(xt: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]) {
    let c = w.len();
    if k == 0 || c == 0 {
        return;
    }
    assert!(xt.len() >= k * GEMM_T_LANES, "gemm_t: xt too short");
    assert!(out.len() >= c * GEMM_T_LANES, "gemm_t: out too short");
    assert!(
        w.iter().all(|r| r.len() >= 4 * k),
        "gemm_t: short weight row"
    );
    let mut j0 = 0;
    while j0 < c {
        let jr = JT.min(c - j0);
        // A short last group repeats its last row; those results are dropped.
        let wp: [*const f32; JT] = std::array::from_fn(|t| w[j0 + t.min(jr - 1)].as_ptr().cast());
        // SAFETY: `xt` holds k rows of GEMM_T_LANES f32 and every `wp` row
        // has at least k f32 (both checked above).
        let acc = unsafe { tile_t(xt.as_ptr(), wp, k) };
        for (t, a) in acc.iter().enumerate().take(jr) {
            let o = &mut out[(j0 + t) * GEMM_T_LANES..][..GEMM_T_LANES];
            // SAFETY: `o` is GEMM_T_LANES = 32 f32: two unaligned stores fit.
            unsafe {
                _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
                _mm512_storeu_ps(o.as_mut_ptr().add(16), a[1]);
            }
        }
        j0 += JT;
    }
}

/// `JT x 32` sums over `k`, one lane per (weight row, input row), in `k` order.
///
/// # Safety
/// `xt` must be valid for reading `32 k` f32 and every `wp` row for `k` f32
/// (at any alignment).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_t(xt: *const f32, wp: [*const f32; JT], k: usize) -> [[__m512; 2]; JT] {
    let mut acc = [[_mm512_setzero_ps(); 2]; JT];
    for i in 0..k {
        // SAFETY: i < k: row i of `xt` and element i of each weight row exist.
        unsafe {
            let x0 = _mm512_loadu_ps(xt.add(i * GEMM_T_LANES));
            let x1 = _mm512_loadu_ps(xt.add(i * GEMM_T_LANES + 16));
            for t in 0..JT {
                // Weight rows may sit at any byte address.
                let b = _mm512_set1_ps(wp[t].add(i).read_unaligned());
                acc[t][0] = _mm512_fmadd_ps(b, x0, acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(b, x1, acc[t][1]);
            }
        }
    }
    acc
}

// ---------------------------------------------------------------- prefill block product

/// Input rows per register tile.
const MR: usize = 6;
/// Most of `k` one pass of register tiles covers (see `gemm_rows`).
const KC: usize = 768;
/// Weight rows per register tile.
const NR: usize = 4;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    // Long rows go in panels of KC: an MR-row block of x and NR weight rows
    // of one panel fit L1 together (whole rows of k = 1536 do not, and the
    // tile then streams both from L2). Within a panel, input rows outer: the
    // x block stays in L1 while the weight rows (hot in L2) stream past it.
    for kc0 in (0..k).step_by(KC) {
        let kc = KC.min(k - kc0);
        let mut r0 = 0;
        while r0 < m {
            let mr = MR.min(m - r0);
            let xp = |t: usize| x[(r0 + t.min(mr - 1)) * k + kc0..].as_ptr();
            for j0 in (0..c).step_by(NR) {
                let nr = NR.min(c - j0);
                // A short last group repeats its last row; those results are dropped.
                let wp: [*const f32; NR] =
                    std::array::from_fn(|t| w[j0 + t.min(nr - 1)][4 * kc0..].as_ptr().cast());
                let mut res = [[0f32; NR]; MR];
                // SAFETY: every `xp` row has `kc` f32 left inside its row of
                // `x` from `kc0`; every `wp` row has at least `4k` bytes
                // (checked above), so `kc` f32 from `kc0`.
                unsafe {
                    match mr {
                        6 => tile_into::<6>(&xp, wp, kc, &mut res),
                        5 => tile_into::<5>(&xp, wp, kc, &mut res),
                        4 => tile_into::<4>(&xp, wp, kc, &mut res),
                        3 => tile_into::<3>(&xp, wp, kc, &mut res),
                        2 => tile_into::<2>(&xp, wp, kc, &mut res),
                        _ => tile_into::<1>(&xp, wp, kc, &mut res),
                    }
                }
                for (t, rr) in res.iter().enumerate().take(mr) {
                    let o = &mut out[(r0 + t) * c + j0..][..nr];
                    if kc0 == 0 {
                        o.copy_from_slice(&rr[..nr]);
                    } else {
                        o.iter_mut().zip(rr).for_each(|(o, r)| *o += r);
                    }
                }
            }
            r0 += mr;
        }
    }
}

/// [`tile`] for input rows `xp(0..R)`, into the first `R` rows of `res`.
///
/// # Safety
/// As [`tile`], for every `xp(t)`, `t < R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_into<const R: usize>(
    xp: &impl Fn(usize) -> *const f32,
    wp: [*const f32; NR],
    k: usize,
    res: &mut [[f32; NR]; MR],
) {
    // SAFETY: forwarded from the caller.
    let r = unsafe { tile::<R>(std::array::from_fn(xp), wp, k) };
    res[..R].copy_from_slice(&r);
}

/// `R × NR` dots of length `k`.
///
/// # Safety
/// Each pointer must be valid for reading `k` f32 (any alignment).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const R: usize>(
    xp: [*const f32; R],
    wp: [*const f32; NR],
    k: usize,
) -> [[f32; NR]; R] {
    let mut acc = [[_mm512_setzero_ps(); NR]; R];
    let mut i = 0;
    while i + 16 <= k {
        // SAFETY: i + 16 <= k, so each load stays inside its row.
        let wv: [__m512; NR] = std::array::from_fn(|c| unsafe { _mm512_loadu_ps(wp[c].add(i)) });
        for r in 0..R {
            // SAFETY: as above.
            let xv = unsafe { _mm512_loadu_ps(xp[r].add(i)) };
            for c in 0..NR {
                acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
        i += 16;
    }
    if i < k {
        let mask = tail_mask(k - i);
        // SAFETY: the mask enables only lanes < k - i: inside each row.
        let wv: [__m512; NR] =
            std::array::from_fn(|c| unsafe { _mm512_maskz_loadu_ps(mask, wp[c].add(i)) });
        for r in 0..R {
            // SAFETY: as above.
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, xp[r].add(i)) };
            for c in 0..NR {
                acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
    }
    let mut res = [[0f32; NR]; R];
    for (r, a) in acc.iter().enumerate() {
        let s = hsum4(fold(a[0]), fold(a[1]), fold(a[2]), fold(a[3]));
        // SAFETY: `res[r]` is 4 f32; storeu has no alignment requirement.
        unsafe { _mm_storeu_ps(res[r].as_mut_ptr(), s) };
    }
    res
}
