//! Twin of embedding.cu.

use half::bf16;

/// `out[t, :] = table[tokens[t], :]` as f32 for a `[vocab, hidden]` table; a
/// token outside the vocabulary gives zeros.
pub fn embedding_gather(table: &[bf16], hidden: usize, tokens: &[u32], out: &mut [f32]) {
    let vocab = table.len() / hidden.max(1);
    for (o, &tok) in out.chunks_exact_mut(hidden).zip(tokens) {
        let t = tok as usize;
        if t < vocab {
            for (d, s) in o.iter_mut().zip(&table[t * hidden..(t + 1) * hidden]) {
                *d = s.to_f32();
            }
        } else {
            o.fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{WeightDType, WeightMatrix};

    #[test]
    fn gathers_the_rows_the_cpu_dequantizes_and_zeros_unknown_tokens() {
        let (vocab, hidden) = (7usize, 12usize);
        let table: Vec<bf16> = (0..vocab * hidden)
            .map(|i| bf16::from_f32(i as f32 * 0.37 - 9.0))
            .collect();
        let bytes: &[u8] = bytemuck::cast_slice(&table);
        let w = WeightMatrix::new(WeightDType::BF16, vocab, hidden, bytes).unwrap();
        let tokens = [3u32, 0, 6, 99];
        let mut out = vec![f32::NAN; tokens.len() * hidden];
        embedding_gather(&table, hidden, &tokens, &mut out);
        let mut want = vec![0f32; hidden];
        for (i, &t) in tokens[..3].iter().enumerate() {
            w.dequantize_row(t as usize, &mut want);
            assert_eq!(&out[i * hidden..(i + 1) * hidden], &want[..]);
        }
        assert!(out[3 * hidden..].iter().all(|&v| v == 0.0));
    }
}
