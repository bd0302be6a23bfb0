//! Element-wise activations and softmax.

use rayon::prelude::*;

use super::simd::Kernels;

/// Elements from which [`silu_mul_inplace`] splits the work across threads
/// (a batch's worth: below it, waking the pool costs more than it saves).
const SILU_PAR_MIN: usize = 1 << 16;
/// Elements per parallel piece.
const SILU_PAR_CHUNK: usize = 1 << 14;

/// `gate = silu(gate) * up`, the SwiGLU feed-forward's middle, on the best
/// kernel table (vectorized `exp` where the CPU has AVX2 or AVX-512).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    let f = Kernels::get().silu_mul;
    let n = gate.len().min(up.len());
    if n < SILU_PAR_MIN {
        f(gate, up);
        return;
    }
    gate[..n]
        .par_chunks_mut(SILU_PAR_CHUNK)
        .zip(up[..n].par_chunks(SILU_PAR_CHUNK))
        .for_each(|(g, u)| f(g, u));
}

/// Reference [`silu_mul_inplace`] on the C library's `exp`.
pub fn silu_mul_reference(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// [`silu_mul_inplace`] written so the compiler vectorizes it: the SIMD
/// tables wrap it in their `target_feature`s (a libm `exp` call per element
/// would cost more than the feed-forward's other element-wise work together).
#[inline(always)]
pub(crate) fn silu_mul_lanes(gate: &mut [f32], up: &[f32]) {
    const L: usize = 16;
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    let mut gc = gate.chunks_exact_mut(L);
    let mut uc = up.chunks_exact(L);
    for (g, u) in (&mut gc).zip(&mut uc) {
        for i in 0..L {
            g[i] = g[i] / (1.0 + exp_poly(-g[i])) * u[i];
        }
    }
    for (g, &u) in gc.into_remainder().iter_mut().zip(uc.remainder()) {
        *g = *g / (1.0 + exp_poly(-*g)) * u;
    }
}

/// `e^x` within ~2 ulp for finite `x` (Cephes' `expf`: `x = n·ln2 + r`, a
/// degree-6 polynomial in `r`, `2^n` built in the exponent bits). Below
/// -87.3 it returns ~1e-38 instead of 0 or a subnormal, above 88.7 a
/// large finite value; NaN stays NaN. Branch-free so it vectorizes.
#[inline(always)]
pub(crate) fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n·LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r * r, r) + 1.0;
    // n is in [-126, 128]: 2^n fits the exponent field except at 128, where
    // the clamp keeps p·2^127·2 finite by splitting the power in two.
    let half = (n * 0.5).floor();
    // 2^e for integer e in [-63, 64]: e + 127 lands in the low mantissa bits
    // of e + 127 + 2^23, and the shift moves it into the exponent field. The
    // same bits as `(e as i32 + 127) << 23`, but without the saturating
    // float-to-int cast, which compiles to scalar code per lane.
    let pow = |e: f32| f32::from_bits((e + (127.0 + 8_388_608.0)).to_bits() << 23);
    p * pow(half) * pow(n - half)
}

/// Numerically stable softmax in place.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in x.iter_mut() {
            *v /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = [1.0f32, 2.0, 3.0, 1000.0];
        softmax_inplace(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.99 && x[0] <= x[1] && x[1] <= x[2]);
    }

    #[test]
    fn silu_mul_matches_definition() {
        let mut g = [0.0f32, 1.0, -2.0];
        silu_mul_reference(&mut g, &[2.0, 3.0, 4.0]);
        let silu = |v: f32| v / (1.0 + (-v).exp());
        assert_eq!(g, [0.0, silu(1.0) * 3.0, silu(-2.0) * 4.0]);
    }

    #[test]
    fn exp_poly_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3 + 0.000_37;
            let (got, want) = (exp_poly(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert!(exp_poly(-1000.0) < 1e-37 && exp_poly(-1000.0) >= 0.0);
        assert!(exp_poly(1000.0).is_finite() && exp_poly(1000.0) > 1e38);
        assert!(exp_poly(f32::NAN).is_nan());
    }

    #[test]
    fn every_table_silu_mul_matches_the_reference() {
        let n = 1000;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut want = gate.clone();
        silu_mul_reference(&mut want, &up);
        for kern in Kernels::available() {
            // Odd lengths exercise the tails.
            for len in [0, 1, 15, 16, 17, 999, 1000] {
                let mut got = gate[..len].to_vec();
                (kern.silu_mul)(&mut got, &up[..len]);
                for (i, (g, w)) in got.iter().zip(&want[..len]).enumerate() {
                    let tol = 4.0 * f32::EPSILON * w.abs().max(1e-30);
                    assert!((g - w).abs() <= tol, "{}: [{i}] {g} vs {w}", kern.isa);
                }
            }
        }
        // Long enough to go parallel: the same values.
        let big: Vec<f32> = (0..SILU_PAR_MIN + 77)
            .map(|i| (i % 2000) as f32 * 0.01 - 10.0)
            .collect();
        let ups = vec![0.5f32; big.len()];
        let (mut par, mut one) = (big.clone(), big);
        silu_mul_inplace(&mut par, &ups);
        (Kernels::get().silu_mul)(&mut one, &ups);
        assert_eq!(par, one);
        // Too-short `up`: only the common prefix changes.
        let mut g = vec![1.0f32; 20];
        (Kernels::get().silu_mul)(&mut g, &[1.0; 3]);
        assert!(g[3..].iter().all(|&v| v == 1.0));
    }
}
