//! Twin of rope.cu: RoPE on Q and K with the optional per-head RMSNorm (Qwen3).

use half::bf16;

/// Shapes and tables of one rope_qk_bf16 launch. q and k live in one buffer
/// (e.g. a fused QKV projection) at element offsets `q_offset` / `k_offset`.
#[derive(Debug, Clone, Copy)]
pub struct RopeQk<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub q_offset: usize,
    pub k_offset: usize,
    /// Elements between consecutive tokens' rows of q (>= heads * head_dim).
    pub q_stride: usize,
    /// Elements between consecutive tokens' rows of k (>= kv_heads * head_dim).
    pub k_stride: usize,
    /// `rotary_dim / 2` inverse frequencies, any scaling folded in.
    pub inv_freq: &'a [f32],
    /// Pairs `(2i, 2i+1)` instead of `(i, i + rot_half)`.
    pub interleaved: bool,
    pub attention_factor: f32,
    /// Per-head RMSNorm weights for q and k (`[head_dim]`), applied before rotating.
    pub q_norm: Option<&'a [bf16]>,
    pub k_norm: Option<&'a [bf16]>,
    pub eps: f32,
}

/// Normalises (optionally) and rotates every head of q and k inside `qk` in
/// place; token `t` is at `positions[t]`.
pub fn rope_qk(qk: &mut [bf16], positions: &[i32], p: &RopeQk<'_>) {
    let hd = p.head_dim;
    let half = p.inv_freq.len();
    let mut s = vec![0f32; hd];
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..p.heads + p.kv_heads {
            let (o, norm) = if h < p.heads {
                (p.q_offset + t * p.q_stride + h * hd, p.q_norm)
            } else {
                (p.k_offset + t * p.k_stride + (h - p.heads) * hd, p.k_norm)
            };
            let x = &mut qk[o..o + hd];
            for (sv, xv) in s.iter_mut().zip(x.iter()) {
                *sv = xv.to_f32();
            }
            if let Some(w) = norm {
                let ss: f32 = s.iter().map(|v| v * v).sum();
                let inv = 1.0 / (ss / hd as f32 + p.eps).sqrt();
                for (sv, wv) in s.iter_mut().zip(w) {
                    *sv = *sv * inv * wv.to_f32();
                }
            }
            for (i, &f) in p.inv_freq.iter().enumerate() {
                let (a, b) = if p.interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let angle = pos as f32 * f;
                let (sn, cs) = angle.sin_cos();
                let (cs, sn) = (cs * p.attention_factor, sn * p.attention_factor);
                let (x0, x1) = (s[a], s[b]);
                s[a] = x0 * cs - x1 * sn;
                s[b] = x1 * cs + x0 * sn;
            }
            for (xv, sv) in x.iter_mut().zip(&s) {
                *xv = bf16::from_f32(*sv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{apply_rope, norm::rms_norm_inplace, RopeStyle, RopeTable};
    use crate::cuda_twin::{to_bf16, to_f32};
    use rand::{Rng, SeedableRng};

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= y.abs() * 2f32.powi(-8) + 1e-5,
                "{x} vs {y}"
            );
        }
    }

    /// Both styles, partial rotary, q/k norm, q and k inside one fused QKV row:
    /// the twin equals the CPU backend (rms_norm_inplace, then apply_rope) up to
    /// the final bf16 rounding.
    #[test]
    fn equals_the_cpu_rope_and_qk_norm_on_a_fused_qkv_buffer() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (heads, kv_heads, hd, tokens) = (4usize, 2usize, 16usize, 5usize);
        let stride = (heads + 2 * kv_heads) * hd;
        // rotary_dim 12 of 16: the last 4 dims of each head do not rotate.
        let inv_freq: Vec<f32> = (0..6)
            .map(|i| 10000f32.powf(-(2 * i) as f32 / 12.0))
            .collect();
        let positions = [0i32, 7, 300, 4095, 131071];
        for (interleaved, with_norm) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let qkv = to_bf16(
                &(0..tokens * stride)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect::<Vec<f32>>(),
            );
            let qn = to_bf16(
                &(0..hd)
                    .map(|_| rng.random_range(0.5..1.5))
                    .collect::<Vec<f32>>(),
            );
            let kn = to_bf16(
                &(0..hd)
                    .map(|_| rng.random_range(0.5..1.5))
                    .collect::<Vec<f32>>(),
            );
            let p = RopeQk {
                heads,
                kv_heads,
                head_dim: hd,
                q_offset: 0,
                k_offset: heads * hd,
                q_stride: stride,
                k_stride: stride,
                inv_freq: &inv_freq,
                interleaved,
                attention_factor: 1.0,
                q_norm: with_norm.then_some(&qn[..]),
                k_norm: with_norm.then_some(&kn[..]),
                eps: 1e-6,
            };
            let mut buf = qkv.clone();
            rope_qk(&mut buf, &positions, &p);

            let table = RopeTable {
                inv_freq: inv_freq.clone(),
                style: if interleaved {
                    RopeStyle::Interleaved
                } else {
                    RopeStyle::Half
                },
                attention_factor: 1.0,
            };
            let pos_u: Vec<u32> = positions.iter().map(|&x| x as u32).collect();
            let take = |off: usize, n: usize| -> Vec<f32> {
                (0..tokens)
                    .flat_map(|t| to_f32(&qkv[t * stride + off..t * stride + off + n]))
                    .collect()
            };
            let mut q = take(0, heads * hd);
            let mut k = take(heads * hd, kv_heads * hd);
            if with_norm {
                rms_norm_inplace(&mut q, &to_f32(&qn), 1e-6);
                rms_norm_inplace(&mut k, &to_f32(&kn), 1e-6);
            }
            apply_rope(&mut q, heads, hd, &pos_u, &table);
            apply_rope(&mut k, kv_heads, hd, &pos_u, &table);
            for t in 0..tokens {
                let row = to_f32(&buf[t * stride..(t + 1) * stride]);
                close(&row[..heads * hd], &q[t * heads * hd..(t + 1) * heads * hd]);
                close(
                    &row[heads * hd..(heads + kv_heads) * hd],
                    &k[t * kv_heads * hd..(t + 1) * kv_heads * hd],
                );
                // V (the rest of the fused row) is untouched.
                assert_eq!(
                    &buf[t * stride + (heads + kv_heads) * hd..(t + 1) * stride],
                    &qkv[t * stride + (heads + kv_heads) * hd..(t + 1) * stride]
                );
            }
        }
    }
}
