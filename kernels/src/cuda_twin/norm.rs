//! Twin of rms_norm.cu.

use half::bf16;

/// For each row of `weight.len()` elements: `residual += delta` (when given),
/// then `out = bf16(residual / sqrt(mean(residual²) + eps) * weight)`.
/// `residual` is the f32 residual stream; `delta` and `out` are bf16.
pub fn add_rms_norm(
    residual: &mut [f32],
    delta: Option<&[bf16]>,
    weight: &[bf16],
    eps: f32,
    out: &mut [bf16],
) {
    let d = weight.len();
    for (r, (x, o)) in residual
        .chunks_exact_mut(d)
        .zip(out.chunks_exact_mut(d))
        .enumerate()
    {
        if let Some(delta) = delta {
            for (v, dv) in x.iter_mut().zip(&delta[r * d..(r + 1) * d]) {
                *v += dv.to_f32();
            }
        }
        let ss: f32 = x.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), w) in o.iter_mut().zip(x.iter()).zip(weight) {
            *o = bf16::from_f32(v * inv * w.to_f32());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::rms_norm;
    use crate::cuda_twin::{to_bf16, to_f32};
    use rand::{Rng, SeedableRng};

    #[test]
    fn equals_the_cpu_rms_norm_after_the_residual_add() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (rows, d) = (5usize, 96usize);
        let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-3.0..3.0)).collect();
        let delta = to_bf16(
            &(0..rows * d)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect::<Vec<f32>>(),
        );
        let w = to_bf16(
            &(0..d)
                .map(|_| rng.random_range(0.5..1.5))
                .collect::<Vec<f32>>(),
        );
        let mut residual = x.clone();
        let mut out = vec![bf16::NAN; rows * d];
        add_rms_norm(&mut residual, Some(&delta), &w, 1e-5, &mut out);

        let summed: Vec<f32> = x.iter().zip(to_f32(&delta)).map(|(a, b)| a + b).collect();
        assert_eq!(residual, summed);
        let mut want = vec![0f32; rows * d];
        rms_norm(&summed, &to_f32(&w), 1e-5, &mut want);
        for (a, b) in to_f32(&out).iter().zip(&want) {
            // One bf16 rounding apart at most.
            assert!(
                (a - b).abs() <= b.abs() * 2f32.powi(-8) + 1e-6,
                "{a} vs {b}"
            );
        }

        // Without delta: a plain norm, residual untouched.
        let mut r2 = x.clone();
        add_rms_norm(&mut r2, None, &w, 1e-5, &mut out);
        assert_eq!(r2, x);
    }
}
