//! Twin of activation.cu.

use half::bf16;

/// `out[r, i] = bf16(silu(gate[r, i]) * up[r, i])` for `i < ff`; gate and up
/// rows are `in_stride` elements apart (`gate` and `up` start at their first
/// element: for a fused `[gate | up]` buffer, `up = &buf[ff..]`, `in_stride = 2 ff`).
pub fn silu_mul(
    gate: &[bf16],
    up: &[bf16],
    rows: usize,
    ff: usize,
    in_stride: usize,
    out: &mut [bf16],
) {
    for r in 0..rows {
        for i in 0..ff {
            let g = gate[r * in_stride + i].to_f32();
            let u = up[r * in_stride + i].to_f32();
            out[r * ff + i] = bf16::from_f32(g / (1.0 + (-g).exp()) * u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::silu_mul_inplace;
    use crate::cuda_twin::{to_bf16, to_f32};

    #[test]
    fn fused_gate_up_equals_the_cpu_silu_mul() {
        let (rows, ff) = (3usize, 10usize);
        let buf = to_bf16(
            &(0..rows * 2 * ff)
                .map(|i| (i as f32 * 0.77).sin() * 4.0)
                .collect::<Vec<f32>>(),
        );
        let mut out = vec![bf16::NAN; rows * ff];
        silu_mul(&buf, &buf[ff..], rows, ff, 2 * ff, &mut out);
        for r in 0..rows {
            let row = to_f32(&buf[r * 2 * ff..(r + 1) * 2 * ff]);
            let mut g = row[..ff].to_vec();
            silu_mul_inplace(&mut g, &row[ff..]);
            assert_eq!(to_f32(&out[r * ff..(r + 1) * ff]), to_f32(&to_bf16(&g)));
        }
    }
}
