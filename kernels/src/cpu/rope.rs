//! Rotary position embeddings.

/// Which dimensions rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + d/2` (Hugging Face `rotate_half`, GPT-NeoX).
    Half,
    /// Dimension `2i` pairs with `2i + 1` (GPT-J; llama.cpp's llama GGUFs, whose
    /// Q/K rows were permuted at conversion to match).
    Interleaved,
}

/// Inverse frequencies of one head's rotary dimensions (length `rotary_dim / 2`).
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub inv_freq: Vec<f32>,
    pub style: RopeStyle,
    /// Multiplies cos and sin (1.0 except for YaRN-style attention scaling).
    pub attention_factor: f32,
}

/// Cosines and sines of every (token, rotary pair) of a batch, computed once
/// per forward pass and shared by every layer's q and k (the angles depend
/// only on the positions; `sin`/`cos` per layer were a tenth of a batched
/// step's element-wise time).
#[derive(Debug, Clone)]
pub struct RopeAngles {
    /// `[tokens, pairs]`, times the table's attention factor.
    cos: Vec<f32>,
    /// `[tokens, pairs]`, times the table's attention factor.
    sin: Vec<f32>,
    pairs: usize,
    style: RopeStyle,
}

impl RopeAngles {
    /// The angles of tokens at `positions` under `table`.
    pub fn new(positions: &[u32], table: &RopeTable) -> Self {
        let pairs = table.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * pairs);
        let mut sin = Vec::with_capacity(positions.len() * pairs);
        for &pos in positions {
            for &f in &table.inv_freq {
                // Same order of f32 operations as transformers: (pos * inv_freq), then cos/sin.
                let a = pos as f32 * f;
                cos.push(a.cos() * table.attention_factor);
                sin.push(a.sin() * table.attention_factor);
            }
        }
        Self {
            cos,
            sin,
            pairs,
            style: table.style,
        }
    }

    /// Tokens covered.
    pub fn tokens(&self) -> usize {
        self.cos.len() / self.pairs.max(1)
    }

    /// Rotates `x` (`[tokens, heads, head_dim]`, the tokens of `new`'s
    /// positions in order) in place. Only the first `2 * pairs` dims of each
    /// head rotate.
    pub fn apply(&self, x: &mut [f32], heads: usize, head_dim: usize) {
        let half = self.pairs;
        if half == 0 {
            return;
        }
        let toks = x.chunks_exact_mut(heads * head_dim);
        for ((tok, cos), sin) in toks
            .zip(self.cos.chunks_exact(half))
            .zip(self.sin.chunks_exact(half))
        {
            for h in tok.chunks_exact_mut(head_dim) {
                match self.style {
                    RopeStyle::Half => {
                        let (lo, hi) = h.split_at_mut(half);
                        for i in 0..half {
                            let (x0, x1) = (lo[i], hi[i]);
                            lo[i] = x0 * cos[i] - x1 * sin[i];
                            hi[i] = x1 * cos[i] + x0 * sin[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, p) in h[..2 * half].chunks_exact_mut(2).enumerate() {
                            let (x0, x1) = (p[0], p[1]);
                            p[0] = x0 * cos[i] - x1 * sin[i];
                            p[1] = x1 * cos[i] + x0 * sin[i];
                        }
                    }
                }
            }
        }
    }
}

/// Rotates `x` (`[tokens, heads, head_dim]`) in place; token `t` sits at
/// `positions[t]`. Only the first `2 * inv_freq.len()` dims of each head rotate.
/// (A forward pass builds [`RopeAngles`] once instead.)
pub fn apply_rope(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    positions: &[u32],
    table: &RopeTable,
) {
    RopeAngles::new(positions, table).apply(x, heads, head_dim);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_preserved() {
        let table = RopeTable {
            inv_freq: vec![1.0, 0.1],
            style: RopeStyle::Half,
            attention_factor: 1.0,
        };
        let orig = [1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        let mut x = orig;
        apply_rope(&mut x, 1, 4, &[0, 7], &table);
        assert_eq!(&x[..4], &orig[..4]);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x[4..]) - n(&orig[4..])).abs() < 1e-4);
    }

    #[test]
    fn interleaved_equals_half_on_permuted_dims() {
        let inv_freq = vec![0.5, 0.25];
        let half = RopeTable {
            inv_freq: inv_freq.clone(),
            style: RopeStyle::Half,
            attention_factor: 1.0,
        };
        let inter = RopeTable {
            inv_freq,
            style: RopeStyle::Interleaved,
            attention_factor: 1.0,
        };
        let x = [0.3f32, -1.2, 2.0, 0.7];
        // Half pairs (0,2),(1,3); interleaved layout of the same pairs is [0,2,1,3].
        let mut a = x;
        apply_rope(&mut a, 1, 4, &[5], &half);
        let mut b = [x[0], x[2], x[1], x[3]];
        apply_rope(&mut b, 1, 4, &[5], &inter);
        assert_eq!([a[0], a[2], a[1], a[3]], b);
    }

    #[test]
    fn shared_angles_rotate_q_and_k_like_per_call_tables() {
        let table = RopeTable {
            inv_freq: vec![1.0, 0.3, 0.01],
            style: RopeStyle::Half,
            attention_factor: 1.0,
        };
        let positions = [3u32, 4, 900];
        let angles = RopeAngles::new(&positions, &table);
        assert_eq!(angles.tokens(), 3);
        // head_dim 8 with 3 pairs: dims 6 and 7 stay as they are.
        let x: Vec<f32> = (0..3 * 2 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = x.clone();
        angles.apply(&mut a, 2, 8);
        for (t, &pos) in positions.iter().enumerate() {
            for h in 0..2 {
                let o = (t * 2 + h) * 8;
                for (i, &f) in table.inv_freq.iter().enumerate() {
                    let (c, s) = ((pos as f32 * f).cos(), (pos as f32 * f).sin());
                    let (x0, x1) = (x[o + i], x[o + i + 3]);
                    assert_eq!(a[o + i], x0 * c - x1 * s);
                    assert_eq!(a[o + i + 3], x1 * c + x0 * s);
                }
                assert_eq!(a[o + 6..o + 8], x[o + 6..o + 8]);
            }
        }
    }
}
