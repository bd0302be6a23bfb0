//! One step's host-side work for the CUDA executor: validate the batch (as
//! `Model::check` does on the CPU, so a bad batch is an error and never a
//! device fault) and lay out the metadata the kernels read.

use factory_models::ForwardError;

use crate::executor::{Batch, ExecutorError};

/// What a batch must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    pub vocab_size: usize,
    /// Longest sequence (positions `0..max_model_len`).
    pub max_model_len: usize,
    pub block_size: usize,
    /// KV blocks in the cache.
    pub num_blocks: usize,
    pub max_seqs: usize,
    pub max_tokens: usize,
}

impl StepLimits {
    /// Columns of the block-table matrix: blocks of one longest sequence.
    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_model_len.div_ceil(self.block_size.max(1))
    }
}

/// A validated step, flattened for upload. Sequences with no new tokens are
/// left out of the device metadata (they get no logits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// New tokens, in batch order.
    pub tokens: Vec<u32>,
    /// Position of each token.
    pub positions: Vec<i32>,
    /// Cache slot (`block * block_size + offset`) of each token.
    pub slots: Vec<i32>,
    /// `[seqs, table_width]`, unused entries 0 (never read).
    pub block_tables: Vec<i32>,
    /// Columns of `block_tables`: blocks of this step's longest context.
    pub table_width: usize,
    /// Per sequence with tokens: first row, rows, and context after the step.
    pub q_starts: Vec<i32>,
    pub q_lens: Vec<i32>,
    pub context_lens: Vec<i32>,
    pub max_q_len: usize,
    pub max_context: usize,
    /// Token rows whose logits are wanted, in batch order.
    pub logit_rows: Vec<i32>,
    /// For each sequence of the batch, its logits row.
    pub rows: Vec<Option<usize>>,
}

impl StepPlan {
    /// Sequences with tokens this step.
    pub fn num_seqs(&self) -> usize {
        self.q_lens.len()
    }

    /// Whether every sequence brings exactly one token (the decode kernel's case).
    pub fn all_decode(&self) -> bool {
        self.max_q_len == 1
    }
}

/// Checks `batch` against `lim` and lays it out.
pub fn plan_step(batch: &Batch<'_>, lim: &StepLimits) -> Result<StepPlan, ExecutorError> {
    let n_tokens = batch.num_tokens();
    let active = batch.seqs.iter().filter(|s| !s.tokens.is_empty()).count();
    if active > lim.max_seqs || n_tokens > lim.max_tokens {
        return Err(ExecutorError::Backend(format!(
            "batch of {active} sequences / {n_tokens} tokens exceeds the executor's \
             {} sequences / {} tokens",
            lim.max_seqs, lim.max_tokens
        )));
    }
    let bs = lim.block_size.max(1);
    let mut p = StepPlan {
        tokens: Vec::with_capacity(n_tokens),
        positions: Vec::with_capacity(n_tokens),
        slots: Vec::with_capacity(n_tokens),
        rows: Vec::with_capacity(batch.seqs.len()),
        ..StepPlan::default()
    };
    let mut tables = Vec::with_capacity(active);
    for (seq, s) in batch.seqs.iter().enumerate() {
        let vocab = lim.vocab_size;
        if let Some(&token) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ForwardError::TokenOutOfRange { token, vocab }.into());
        }
        let end = s.start_pos.saturating_add(s.tokens.len());
        if end > lim.max_model_len {
            return Err(ForwardError::ContextExceeded {
                seq,
                pos: end - 1,
                limit: lim.max_model_len,
            }
            .into());
        }
        let have = s.block_table.len().saturating_mul(bs);
        if have < end {
            return Err(ForwardError::BlockTableTooShort {
                seq,
                needed: end,
                have,
            }
            .into());
        }
        let used = &s.block_table[..end.div_ceil(bs)];
        if let Some(&block) = used.iter().find(|&&b| b as usize >= lim.num_blocks) {
            return Err(ForwardError::BlockOutOfRange {
                seq,
                block,
                blocks: lim.num_blocks,
            }
            .into());
        }
        if s.tokens.is_empty() {
            p.rows.push(None);
            continue;
        }
        // Every value below is bounded by max_model_len, num_blocks * block_size
        // (checked to fit i32 when the cache was sized) or max_tokens.
        let q_start = p.tokens.len();
        for (i, &tok) in s.tokens.iter().enumerate() {
            let pos = s.start_pos + i;
            p.tokens.push(tok);
            p.positions.push(pos as i32);
            p.slots
                .push((used[pos / bs] as usize * bs + pos % bs) as i32);
        }
        tables.push(used);
        p.q_starts.push(q_start as i32);
        p.q_lens.push(s.tokens.len() as i32);
        p.context_lens.push(end as i32);
        p.max_q_len = p.max_q_len.max(s.tokens.len());
        p.max_context = p.max_context.max(end);
        if s.want_logits {
            p.rows.push(Some(p.logit_rows.len()));
            p.logit_rows.push((q_start + s.tokens.len() - 1) as i32);
        } else {
            p.rows.push(None);
        }
    }
    // Only as wide as this step needs: the tables are uploaded every step.
    p.table_width = p.max_context.div_ceil(bs);
    p.block_tables = Vec::with_capacity(tables.len() * p.table_width);
    for used in tables {
        p.block_tables.extend(used.iter().map(|&b| b as i32));
        p.block_tables
            .extend(std::iter::repeat_n(0, p.table_width - used.len()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::BatchSeq;

    const LIM: StepLimits = StepLimits {
        vocab_size: 100,
        max_model_len: 64,
        block_size: 4,
        num_blocks: 10,
        max_seqs: 3,
        max_tokens: 20,
    };

    fn seq<'a>(tokens: &'a [u32], start_pos: usize, table: &'a [u32], want: bool) -> BatchSeq<'a> {
        BatchSeq {
            tokens,
            start_pos,
            block_table: table,
            want_logits: want,
        }
    }

    #[test]
    fn a_mixed_batch_is_laid_out_for_the_kernels() {
        let batch = Batch {
            seqs: vec![
                // A prefill chunk of 5 tokens at positions 2..7 over blocks 3, 7.
                seq(&[1, 2, 3, 4, 5], 2, &[3, 7, 9], false),
                // Nothing this step.
                seq(&[], 4, &[1, 2], true),
                // A decode at position 9 over blocks 0, 1, 2.
                seq(&[42], 9, &[0, 1, 2], true),
            ],
        };
        let p = plan_step(&batch, &LIM).unwrap();
        assert_eq!(p.tokens, [1, 2, 3, 4, 5, 42]);
        assert_eq!(p.positions, [2, 3, 4, 5, 6, 9]);
        assert_eq!(p.slots, [14, 15, 28, 29, 30, 9]);
        assert_eq!(LIM.max_blocks_per_seq(), 16);
        // The widest table this step: 10 tokens of context in blocks of 4.
        let w = p.table_width;
        assert_eq!(w, 3);
        assert_eq!(&p.block_tables[..3], [3, 7, 0]);
        assert_eq!(&p.block_tables[w..w + 3], [0, 1, 2]);
        assert_eq!(p.block_tables.len(), 2 * w);
        assert_eq!(p.q_starts, [0, 5]);
        assert_eq!(p.q_lens, [5, 1]);
        assert_eq!(p.context_lens, [7, 10]);
        assert_eq!((p.max_q_len, p.max_context), (5, 10));
        assert!(!p.all_decode());
        assert_eq!(p.logit_rows, [5]);
        assert_eq!(p.rows, [None, None, Some(0)]);
        assert_eq!(p.num_seqs(), 2);
    }

    #[test]
    fn bad_batches_are_the_cpu_forward_errors() {
        let err = |b: Batch<'_>| plan_step(&b, &LIM).unwrap_err().to_string();
        let e = err(Batch {
            seqs: vec![seq(&[100], 0, &[0], true)],
        });
        assert!(
            e.contains("token id 100 is outside the vocabulary of 100"),
            "{e}"
        );
        let e = err(Batch {
            seqs: vec![seq(&[1], 64, &[0; 17], true)],
        });
        assert!(e.contains("exceeds the context limit 64"), "{e}");
        let e = err(Batch {
            seqs: vec![seq(&[1, 2], 3, &[0], true)],
        });
        assert!(e.contains("block table covers 4 tokens, 5 needed"), "{e}");
        let e = err(Batch {
            seqs: vec![seq(&[1], 4, &[0, 10], true)],
        });
        assert!(
            e.contains("block 10 is outside the cache of 10 blocks"),
            "{e}"
        );
        // Unused entries past the context are not checked (the CPU forward does the same).
        assert!(plan_step(
            &Batch {
                seqs: vec![seq(&[1], 0, &[0, 99], true)]
            },
            &LIM
        )
        .is_ok());
        let many = [1u32; 21];
        let e = err(Batch {
            seqs: vec![seq(&many, 0, &[0; 6], true)],
        });
        assert!(e.contains("exceeds the executor's"), "{e}");
        let e = err(Batch {
            seqs: vec![seq(&[1], 0, &[0], true); 4],
        });
        assert!(e.contains("4 sequences"), "{e}");
    }

    #[test]
    fn all_decode_steps_are_recognised() {
        let batch = Batch {
            seqs: vec![seq(&[1], 0, &[0], true), seq(&[2], 5, &[1, 2], true)],
        };
        let p = plan_step(&batch, &LIM).unwrap();
        assert!(p.all_decode());
        assert_eq!(p.logit_rows, [0, 1]);
        assert_eq!(p.rows, [Some(0), Some(1)]);
    }
}
