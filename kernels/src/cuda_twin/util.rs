//! Twin of util.cu: bias add, row gather, device-side weight initialisation.

use half::bf16;

/// `y[r, i] = bf16(y[r, i] + b[i])` for `i < b.len()`, `rows` rows `stride` apart.
pub fn bias_add(y: &mut [bf16], b: &[bf16], rows: usize, stride: usize) {
    for r in 0..rows {
        for (i, bi) in b.iter().enumerate() {
            let e = &mut y[r * stride + i];
            *e = bf16::from_f32(e.to_f32() + bi.to_f32());
        }
    }
}

/// `dst[i, :] = src[rows[i], :]` (`width` elements); an index outside the
/// source gives zeros (`T::default()`).
pub fn gather_rows<T: Copy + Default>(src: &[T], rows: &[i32], width: usize, dst: &mut [T]) {
    let src_rows = src.len() / width.max(1);
    for (i, &r) in rows.iter().enumerate() {
        let out = &mut dst[i * width..(i + 1) * width];
        match usize::try_from(r).ok().filter(|&r| r < src_rows) {
            Some(r) => out.copy_from_slice(&src[r * width..(r + 1) * width]),
            None => out.fill(T::default()),
        }
    }
}

/// splitmix64's finaliser (the kernel's `mix64`).
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Element `i` of `fill_uniform_bf16(seed, scale)`: uniform in `[-scale, scale)`.
pub fn uniform_at(seed: u64, i: u64, scale: f32) -> bf16 {
    let h = mix64(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let u = (h >> 40) as f32 * (1.0 / 16_777_216.0);
    bf16::from_f32(scale * (2.0 * u - 1.0))
}

/// `out[i] = uniform_at(seed, i, scale)`.
pub fn fill_uniform(out: &mut [bf16], seed: u64, scale: f32) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = uniform_at(seed, i as u64, scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_twin::{to_bf16, to_f32};

    #[test]
    fn bias_is_added_per_row_and_strided_padding_is_untouched() {
        let mut y = to_bf16(&[1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
        bias_add(&mut y, &to_bf16(&[0.5, -1.0]), 2, 3);
        assert_eq!(to_f32(&y), [1.5, 1.0, 9.0, 3.5, 3.0, 9.0]);
    }

    #[test]
    fn gather_picks_rows_and_zeroes_bad_indices() {
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut dst = vec![f32::NAN; 8];
        gather_rows(&src, &[2, 0, -1, 3], 2, &mut dst);
        assert_eq!(dst, [4.0, 5.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn uniform_fill_is_in_range_centred_and_depends_on_the_seed() {
        let mut a = vec![bf16::ZERO; 100_000];
        fill_uniform(&mut a, 7, 0.02);
        let f = to_f32(&a);
        // Within the scale, up to bf16 rounding (8 significant bits).
        let bound = 0.02 * (1.0 + 1.0 / 256.0);
        assert!(f.iter().all(|v| v.abs() <= bound));
        assert!(f.iter().any(|v| v.abs() > 0.019));
        let mean = f.iter().sum::<f32>() / f.len() as f32;
        let var = f.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / f.len() as f32;
        assert!(mean.abs() < 2e-4, "{mean}");
        // Uniform on [-s, s): variance s^2 / 3.
        assert!((var / (0.02f32 * 0.02 / 3.0) - 1.0).abs() < 0.02, "{var}");
        let mut b = vec![bf16::ZERO; 16];
        fill_uniform(&mut b, 8, 0.02);
        assert_ne!(&a[..16], &b[..]);
        assert_eq!(uniform_at(7, 5, 0.02), a[5]);
    }
}
