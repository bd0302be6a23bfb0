//! ggml block formats (Q8_0, Q4_0, Q4_1): dequantization, 8-bit activation
//! quantization, and scalar reference dot products.
//!
//! Layouts follow ggml: a Q4 block stores element `j` in the low nibble of
//! byte `j` and element `j + 16` in its high nibble.

use half::f16;

/// Elements per quantization block.
pub const QK: usize = 32;

/// A block of 32 activations quantized to i8 for the fast (integer) dot path.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale: value ≈ d * q.
    pub d: f32,
    /// `d * Σq`, needed by Q4_1's minimum term.
    pub s: f32,
    pub qs: [i8; QK],
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes a Q8_0 row (34-byte blocks).
pub fn dequantize_q8_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        for (o, &q) in o.iter_mut().zip(&blk[2..34]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// Dequantizes a Q4_0 row (18-byte blocks).
pub fn dequantize_q4_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        for j in 0..16 {
            let b = blk[2 + j];
            o[j] = d * (f32::from(b & 0x0f) - 8.0);
            o[j + 16] = d * (f32::from(b >> 4) - 8.0);
        }
    }
}

/// Dequantizes a Q4_1 row (20-byte blocks).
pub fn dequantize_q4_1(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        let m = f16_at(blk, 2);
        for j in 0..16 {
            let b = blk[4 + j];
            o[j] = d * f32::from(b & 0x0f) + m;
            o[j + 16] = d * f32::from(b >> 4) + m;
        }
    }
}

/// Quantizes `x` (length a multiple of 32) to 8-bit blocks, as llama.cpp does
/// for activations: per block, `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in ob.qs.iter_mut().zip(xb) {
            let r = (v * id).round() as i32;
            *q = r.clamp(-127, 127) as i8;
            sum += i32::from(*q);
        }
        ob.d = d;
        ob.s = d * sum as f32;
    }
}

/// Exact-mode dot of one quantized row with f32 activations (scalar reference).
pub fn dot_f32_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(34).zip(x.chunks_exact(QK)) {
        let d = f16_at(blk, 0);
        let s: f32 = blk[2..34]
            .iter()
            .zip(xb)
            .map(|(&q, &v)| f32::from(q as i8) * v)
            .sum();
        acc += d * s;
    }
    acc
}

/// Exact-mode Q4_0 row · f32 activations (scalar reference).
pub fn dot_f32_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(18).zip(x.chunks_exact(QK)) {
        let d = f16_at(blk, 0);
        let mut s = 0f32;
        for j in 0..16 {
            let b = blk[2 + j];
            s += (f32::from(b & 0x0f) - 8.0) * xb[j] + (f32::from(b >> 4) - 8.0) * xb[j + 16];
        }
        acc += d * s;
    }
    acc
}

/// Exact-mode Q4_1 row · f32 activations (scalar reference).
pub fn dot_f32_q4_1(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(20).zip(x.chunks_exact(QK)) {
        let d = f16_at(blk, 0);
        let m = f16_at(blk, 2);
        let mut s = 0f32;
        let mut xs = 0f32;
        for j in 0..16 {
            let b = blk[4 + j];
            s += f32::from(b & 0x0f) * xb[j] + f32::from(b >> 4) * xb[j + 16];
            xs += xb[j] + xb[j + 16];
        }
        acc += d * s + m * xs;
    }
    acc
}

/// Fast-mode Q8_0 row · 8-bit activations (scalar reference).
pub fn dot_q8_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(34).zip(x) {
        let d = f16_at(blk, 0);
        let s: i32 = blk[2..34]
            .iter()
            .zip(&xb.qs)
            .map(|(&q, &v)| i32::from(q as i8) * i32::from(v))
            .sum();
        acc += d * xb.d * s as f32;
    }
    acc
}

/// Fast-mode Q4_0 row · 8-bit activations (scalar reference).
pub fn dot_q8_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(18).zip(x) {
        let d = f16_at(blk, 0);
        let mut s = 0i32;
        for j in 0..16 {
            let b = blk[2 + j];
            s += (i32::from(b & 0x0f) - 8) * i32::from(xb.qs[j])
                + (i32::from(b >> 4) - 8) * i32::from(xb.qs[j + 16]);
        }
        acc += d * xb.d * s as f32;
    }
    acc
}

/// Fast-mode Q4_1 row · 8-bit activations (scalar reference).
pub fn dot_q8_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (blk, xb) in row.chunks_exact(20).zip(x) {
        let d = f16_at(blk, 0);
        let m = f16_at(blk, 2);
        let mut s = 0i32;
        for j in 0..16 {
            let b = blk[4 + j];
            s += i32::from(b & 0x0f) * i32::from(xb.qs[j])
                + i32::from(b >> 4) * i32::from(xb.qs[j + 16]);
        }
        acc += d * xb.d * s as f32 + m * xb.s;
    }
    acc
}

/// Quantizes f32 values to a Q8_0 row (for building test data and fixtures).
pub fn quantize_row_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 34);
    for xb in x.chunks_exact(QK) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(
            xb.iter()
                .map(|v| ((v * id).round() as i32).clamp(-127, 127) as i8 as u8),
        );
    }
    out
}

/// Quantizes f32 values to a Q4_0 row (for building test data and fixtures).
pub fn quantize_row_q4_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 18);
    for xb in x.chunks_exact(QK) {
        // ggml picks the signed extreme so that it maps to -8 exactly.
        let max = xb
            .iter()
            .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
            out.push(q(xb[j]) | (q(xb[j + 16]) << 4));
        }
    }
    out
}

/// Quantizes f32 values to a Q4_1 row (for building test data and fixtures).
pub fn quantize_row_q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 20);
    for xb in x.chunks_exact(QK) {
        let min = xb.iter().copied().fold(f32::INFINITY, f32::min);
        let max = xb.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
            out.push(q(xb[j]) | (q(xb[j + 16]) << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    type Quantize = fn(&[f32]) -> Vec<u8>;
    type Dequantize = fn(&[u8], &mut [f32]);
    type ExactDot = fn(&[u8], &[f32]) -> f32;
    type FastDot = fn(&[u8], &[BlockQ8]) -> f32;

    #[test]
    fn quantize_then_dequantize_is_close_for_every_format() {
        let x = random(256, 1);
        let cases: [(Quantize, Dequantize, f32); 3] = [
            (quantize_row_q8_0, dequantize_q8_0, 0.01),
            // Q4_0 is asymmetric: the positive end can be a whole step (2/16) short.
            (quantize_row_q4_0, dequantize_q4_0, 0.13),
            (quantize_row_q4_1, dequantize_q4_1, 0.08),
        ];
        for (q, dq, tol) in cases {
            let mut back = vec![0f32; x.len()];
            dq(&q(&x), &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn exact_dots_equal_dequantized_dots() {
        let w = random(512, 2);
        let x = random(512, 3);
        let cases: [(Vec<u8>, Dequantize, ExactDot); 3] = [
            (quantize_row_q8_0(&w), dequantize_q8_0, dot_f32_q8_0),
            (quantize_row_q4_0(&w), dequantize_q4_0, dot_f32_q4_0),
            (quantize_row_q4_1(&w), dequantize_q4_1, dot_f32_q4_1),
        ];
        for (row, dq, dotf) in cases {
            let mut deq = vec![0f32; w.len()];
            dq(&row, &mut deq);
            let want = dot(&deq, &x);
            let got = dotf(&row, &x);
            assert!(
                (want - got).abs() < 1e-3 * want.abs().max(1.0),
                "{want} vs {got}"
            );
        }
    }

    #[test]
    fn fast_dots_approximate_exact_dots() {
        let w = random(1024, 4);
        let x = random(1024, 5);
        let mut xq = vec![BlockQ8::default(); x.len() / QK];
        quantize_q8(&x, &mut xq);
        let cases: [(Vec<u8>, ExactDot, FastDot); 3] = [
            (quantize_row_q8_0(&w), dot_f32_q8_0, dot_q8_q8_0),
            (quantize_row_q4_0(&w), dot_f32_q4_0, dot_q8_q4_0),
            (quantize_row_q4_1(&w), dot_f32_q4_1, dot_q8_q4_1),
        ];
        for (row, exact, fast) in cases {
            let e = exact(&row, &x);
            let f = fast(&row, &xq);
            // 8-bit activations: error a small fraction of the dot's scale (√n · |x|·|w|).
            assert!((e - f).abs() < 0.05 * (1024f32).sqrt() * 0.33, "{e} vs {f}");
        }
    }
}
