//! The portable table: the scalar reference functions, plus the few helpers
//! that have no reference elsewhere (dequantizers, axpy, the block product).

use super::{Isa, Kernels};
use crate::cpu::weight::{dequantize_row, WeightDType};
use crate::cpu::{activation, attention, matmul, quant};

pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    dot_f32: matmul::dot_f32_f32,
    dot_f16: matmul::dot_f32_f16,
    dot_bf16: matmul::dot_f32_bf16,
    dot_q8_0: quant::dot_f32_q8_0,
    dot_q4_0: quant::dot_f32_q4_0,
    dot_q4_1: quant::dot_f32_q4_1,
    qdot_q8_0: quant::dot_q8_q8_0,
    qdot_q4_0: quant::dot_q8_q4_0,
    qdot_q4_1: quant::dot_q8_q4_1,
    quantize_q8: quant::quantize_q8,
    dequant_f16,
    dequant_bf16,
    dequant_q8_0: quant::dequantize_q8_0,
    dequant_q4_0: quant::dequantize_q4_0,
    dequant_q4_1: quant::dequantize_q4_1,
    dot_plain: matmul::dot_plain,
    axpy,
    scale,
    silu_mul: activation::silu_mul_reference,
    attend_tile: attention::attend_tile_reference,
    prepare_q4: None,
    dot_q4_0p: None,
    dot_q4_1p: None,
    dot_q4_0p_rows: None,
    dot_q4_1p_rows: None,
    gemm_rows,
    gemm_nr: 4,
    gemm_t: None,
    gemm_t_rows: 1,
};

/// f16 row to f32.
pub fn dequant_f16(row: &[u8], out: &mut [f32]) {
    dequantize_row(WeightDType::F16, row, out);
}

/// bf16 row to f32.
pub fn dequant_bf16(row: &[u8], out: &mut [f32]) {
    dequantize_row(WeightDType::BF16, row, out);
}

/// `y += a * x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y *= a`.
pub fn scale(a: f32, y: &mut [f32]) {
    y.iter_mut().for_each(|v| *v *= a);
}

/// Reference block product: one f32 dot per (input row, weight row).
pub fn gemm_rows(x: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]) {
    if k == 0 {
        out.iter_mut().take(w.len()).for_each(|o| *o = 0.0);
        return;
    }
    let c = w.len();
    for (xr, orow) in x.chunks_exact(k).zip(out.chunks_mut(c.max(1))) {
        for (o, wr) in orow.iter_mut().zip(w) {
            *o = matmul::dot_f32_f32(wr, xr);
        }
    }
}
