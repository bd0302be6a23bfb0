//! Twin of the cuBLASLt products in `cuda::gemm` (`Gemm::linear_bf16*`).
//!
//! `y[m, n] = x[m, k] · w[n, k]ᵀ`, row-major, `w` as HF stores a Linear weight
//! (`[out, in]`): bf16 inputs widened exactly, products summed in f32, one
//! rounding at the output. cuBLASLt's summation order (tiles, split-K) differs
//! from this one, so GPU results agree to f32 rounding of the sums, then to
//! bf16 rounding of the output: compare with a tolerance, not bit for bit.

use half::bf16;

/// `out[i, j] = Σ_p x[i, p] · w[j, p]` in f32 (the `linear_bf16_f32` contract).
///
/// # Panics
/// If a buffer is shorter than its shape.
pub fn linear_f32(x: &[bf16], w: &[bf16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            out[i * n + j] = xr
                .iter()
                .zip(wr)
                .fold(0f32, |acc, (a, b)| a.to_f32().mul_add(b.to_f32(), acc));
        }
    }
}

/// [`linear_f32`] rounded once to bf16 (the `linear_bf16` contract).
///
/// # Panics
/// If a buffer is shorter than its shape.
pub fn linear_bf16(x: &[bf16], w: &[bf16], m: usize, n: usize, k: usize, out: &mut [bf16]) {
    let mut acc = vec![0f32; m * n];
    linear_f32(x, w, m, n, k, &mut acc);
    for (o, v) in out.iter_mut().zip(acc) {
        *o = bf16::from_f32(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{matmul, ActivationMode, WeightDType, WeightMatrix};
    use crate::cuda_twin::{to_bf16, to_f32};

    #[test]
    fn equals_the_cpu_matmul_on_bf16_weights() {
        for (m, n, k) in [(1usize, 5usize, 3usize), (7, 33, 64), (4, 16, 100)] {
            let x = to_bf16(
                &(0..m * k)
                    .map(|i| (i as f32 * 0.37).sin() * 3.0)
                    .collect::<Vec<_>>(),
            );
            let w = to_bf16(
                &(0..n * k)
                    .map(|i| (i as f32 * 0.71).cos())
                    .collect::<Vec<_>>(),
            );
            let mut got = vec![f32::NAN; m * n];
            linear_f32(&x, &w, m, n, k, &mut got);
            let wm = WeightMatrix::new(WeightDType::BF16, n, k, bytemuck::cast_slice(&w)).unwrap();
            let mut want = vec![f32::NAN; m * n];
            matmul(&to_f32(&x), m, &wm, &mut want, ActivationMode::Exact);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Same products, different summation order.
                let tol = 1e-5 * (k as f32) * (1.0 + w.abs());
                assert!((g - w).abs() <= tol, "{m}x{n}x{k} [{i}]: {g} vs {w}");
            }
            let mut rounded = vec![bf16::NAN; m * n];
            linear_bf16(&x, &w, m, n, k, &mut rounded);
            assert_eq!(rounded, to_bf16(&got));
        }
    }

    #[test]
    fn the_weight_is_used_as_out_by_in() {
        // x = [1, 2], w rows [1, 0] and [0, 1] and [1, 1]: y = [1, 2, 3].
        let x = to_bf16(&[1.0, 2.0]);
        let w = to_bf16(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let mut y = vec![0f32; 3];
        linear_f32(&x, &w, 1, 3, 2, &mut y);
        assert_eq!(y, [1.0, 2.0, 3.0]);
    }
}
