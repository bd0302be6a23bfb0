//! `y = x · Wᵀ` for every weight format, parallel across weight rows.

use rayon::prelude::*;

use super::quant::{self, BlockQ8, QK};
use super::weight::{WeightDType, WeightMatrix};

/// How activations meet quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationMode {
    /// Activations stay f32; weights are dequantized block by block inside the dot.
    #[default]
    Exact,
    /// Activations are quantized to 8 bits per block and dotted in integers,
    /// as llama.cpp does. Applies only to quantized weights.
    Fast,
}

/// Rows of W handled by one parallel task: enough work to amortize scheduling.
const ROWS_PER_TASK: usize = 32;

/// Computes `out[m, n] = x[m, k] · W[n, k]ᵀ`.
///
/// # Panics
/// If `x.len() != m * w.cols` or `out.len() != m * w.rows` (callers own shapes).
pub fn matmul(x: &[f32], m: usize, w: &WeightMatrix<'_>, out: &mut [f32], mode: ActivationMode) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "matmul: x is not [m, k]");
    assert_eq!(out.len(), m * n, "matmul: out is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if mode == ActivationMode::Fast && w.dtype.is_quantized() {
        let mut xq = vec![BlockQ8::default(); m * k / QK];
        for (xr, qr) in x.chunks_exact(k).zip(xq.chunks_exact_mut(k / QK)) {
            quant::quantize_q8(xr, qr);
        }
        let dot = q8_dot_for(w.dtype);
        run_rows(m, w, out, |row, r| dot(row, &xq[r * (k / QK)..(r + 1) * (k / QK)]));
    } else {
        let dot = f32_dot_for(w.dtype);
        run_rows(m, w, out, |row, r| dot(row, &x[r * k..(r + 1) * k]));
    }
}

/// Drives `dot(weight_row, input_row_index)` over all (n, m) pairs in parallel.
fn run_rows<F>(m: usize, w: &WeightMatrix<'_>, out: &mut [f32], dot: F)
where
    F: Fn(&[u8], usize) -> f32 + Sync,
{
    let n = w.rows;
    if m == 1 {
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, o)| {
                for (i, o) in o.iter_mut().enumerate() {
                    *o = dot(w.row(c * ROWS_PER_TASK + i), 0);
                }
            });
        return;
    }
    // Weight-row-major scratch [n, m]: each task owns whole weight rows, which
    // stay in cache while every input row meets them; transposed after.
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(c, tc)| {
            for (i, tr) in tc.chunks_exact_mut(m).enumerate() {
                let row = w.row(c * ROWS_PER_TASK + i);
                for (r, o) in tr.iter_mut().enumerate() {
                    *o = dot(row, r);
                }
            }
        });
    for (j, tr) in t.chunks_exact(m).enumerate() {
        for (r, &v) in tr.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
}

type F32Dot = fn(&[u8], &[f32]) -> f32;
type Q8Dot = fn(&[u8], &[BlockQ8]) -> f32;

fn f32_dot_for(dtype: WeightDType) -> F32Dot {
    match dtype {
        WeightDType::F32 => dot_f32_f32,
        WeightDType::F16 => dot_f32_f16,
        WeightDType::BF16 => dot_f32_bf16,
        WeightDType::Q8_0 => quant::dot_f32_q8_0,
        WeightDType::Q4_0 => quant::dot_f32_q4_0,
        WeightDType::Q4_1 => quant::dot_f32_q4_1,
    }
}

fn q8_dot_for(dtype: WeightDType) -> Q8Dot {
    match dtype {
        WeightDType::Q8_0 => quant::dot_q8_q8_0,
        WeightDType::Q4_0 => quant::dot_q8_q4_0,
        // Plain float formats never reach here (checked by the caller).
        _ => quant::dot_q8_q4_1,
    }
}

/// f32 row (little-endian bytes) · f32 activations.
pub fn dot_f32_f32(row: &[u8], x: &[f32]) -> f32 {
    if let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(row) {
        return dot_plain(w, x);
    }
    row.chunks_exact(4)
        .zip(x)
        .map(|(c, v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
        .sum()
}

/// f16 row · f32 activations.
pub fn dot_f32_f16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, v)| half::f16::from_le_bytes([c[0], c[1]]).to_f32() * v)
        .sum()
}

/// bf16 row · f32 activations.
pub fn dot_f32_bf16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, v)| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16) * v)
        .sum()
}

/// Plain f32 dot with several accumulators so the compiler vectorizes it.
pub fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::{quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn encode(dtype: WeightDType, w: &[f32], k: usize) -> Vec<u8> {
        let rows = w.chunks_exact(k);
        match dtype {
            WeightDType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightDType::F16 => w
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            WeightDType::BF16 => w
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            WeightDType::Q8_0 => rows.flat_map(quantize_row_q8_0).collect(),
            WeightDType::Q4_0 => rows.flat_map(quantize_row_q4_0).collect(),
            WeightDType::Q4_1 => rows.flat_map(quantize_row_q4_1).collect(),
        }
    }

    /// The reference: dequantize every row, then a plain f64 product.
    fn reference(x: &[f32], m: usize, w: &WeightMatrix<'_>) -> Vec<f32> {
        let (n, k) = (w.rows, w.cols);
        let mut deq = vec![0f32; k];
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            w.dequantize_row(j, &mut deq);
            for r in 0..m {
                let s: f64 = deq
                    .iter()
                    .zip(&x[r * k..(r + 1) * k])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn matmul_matches_reference_for_every_dtype_and_mode() {
        let (n, k) = (70, 128);
        let w = random(n * k, 7);
        for dtype in [
            WeightDType::F32,
            WeightDType::F16,
            WeightDType::BF16,
            WeightDType::Q8_0,
            WeightDType::Q4_0,
            WeightDType::Q4_1,
        ] {
            let bytes = encode(dtype, &w, k);
            let wm = WeightMatrix::new(dtype, n, k, &bytes).unwrap();
            for m in [1, 3, 9] {
                let x = random(m * k, 8 + m as u64);
                let want = reference(&x, m, &wm);
                for mode in [ActivationMode::Exact, ActivationMode::Fast] {
                    let mut got = vec![f32::NAN; m * n];
                    matmul(&x, m, &wm, &mut got, mode);
                    let tol = if mode == ActivationMode::Fast && dtype.is_quantized() {
                        0.1
                    } else {
                        1e-3
                    };
                    for (a, b) in want.iter().zip(&got) {
                        assert!((a - b).abs() <= tol, "{dtype:?} {mode:?} m={m}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
