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

/// Rotates `x` (`[tokens, heads, head_dim]`) in place; token `t` sits at
/// `positions[t]`. Only the first `2 * inv_freq.len()` dims of each head rotate.
pub fn apply_rope(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    positions: &[u32],
    table: &RopeTable,
) {
    let half = table.inv_freq.len();
    let mut cos = vec![0f32; half];
    let mut sin = vec![0f32; half];
    for (tok, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        for (i, &f) in table.inv_freq.iter().enumerate() {
            // Same order of f32 operations as transformers: (pos * inv_freq), then cos/sin.
            let a = pos as f32 * f;
            cos[i] = a.cos() * table.attention_factor;
            sin[i] = a.sin() * table.attention_factor;
        }
        for h in tok.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match table.style {
                    RopeStyle::Half => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (h[a], h[b]);
                h[a] = x0 * cos[i] - x1 * sin[i];
                h[b] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
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
}
