//! The decoder forward pass over a batch of sequences and a paged KV cache.
//!
//! A batch mixes prefill chunks and decode steps of different sequences: each
//! sequence brings its new tokens, the position of the first, and its block
//! table. All tokens go through the dense layers together; attention reads
//! each sequence's cache through its block table.

use factory_kernels::cpu::{
    matmul, matmul_many, norm::rms_norm_inplace, paged_attention, rms_norm, silu_mul_inplace,
    ActivationMode, AttentionShape, RopeAngles, RopeTable, SeqAttention,
};

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::weights::ModelWeights;

/// Which logits a sequence wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsRequest {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The last new token's (the next-token distribution).
    Last,
    /// Every new token's (perplexity, speculative checks).
    All,
}

/// One sequence's part of a batch.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// New tokens of this step.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; the cache already holds positions `0..start_pos`.
    pub start_pos: usize,
    /// Physical blocks covering positions `0..start_pos + tokens.len()`.
    pub block_table: &'a [u32],
    pub logits: LogitsRequest,
}

/// Logits rows, in batch order: for each sequence, its requested rows.
#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    /// `[rows, vocab]`.
    pub logits: Vec<f32>,
    /// For each sequence, the range of `logits` rows that are its own.
    pub seq_rows: Vec<std::ops::Range<usize>>,
    pub vocab_size: usize,
}

impl ForwardOutput {
    /// The logits row `i` of sequence `seq`.
    pub fn row(&self, seq: usize, i: usize) -> &[f32] {
        let r = self.seq_rows[seq].start + i;
        &self.logits[r * self.vocab_size..(r + 1) * self.vocab_size]
    }

    /// The last logits row of sequence `seq`, if it asked for any.
    pub fn last(&self, seq: usize) -> Option<&[f32]> {
        let rows = self.seq_rows.get(seq)?;
        (!rows.is_empty()).then(|| self.row(seq, rows.len() - 1))
    }
}

/// A batch the model cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("sequence {seq}: block table covers {have} tokens, {needed} needed")]
    BlockTableTooShort {
        seq: usize,
        needed: usize,
        have: usize,
    },
    #[error("sequence {seq}: block {block} is outside the cache of {blocks} blocks")]
    BlockOutOfRange {
        seq: usize,
        block: u32,
        blocks: usize,
    },
    #[error("sequence {seq}: position {pos} exceeds the context limit {limit}")]
    ContextExceeded {
        seq: usize,
        pos: usize,
        limit: usize,
    },
}

/// A loaded decoder and how it computes.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub rope: RopeTable,
    pub activation_mode: ActivationMode,
}

impl Model {
    /// Assembles a model from its parts.
    pub fn new(
        config: ModelConfig,
        weights: ModelWeights,
        activation_mode: ActivationMode,
    ) -> Self {
        let rope = RopeTable {
            inv_freq: config.rope_inv_freq(),
            style: config.rope_style,
            attention_factor: 1.0,
        };
        Self {
            config,
            weights,
            rope,
            activation_mode,
        }
    }

    fn check(&self, batch: &[SeqInput<'_>], cache: &KvCache) -> Result<(), ForwardError> {
        let vocab = self.config.vocab_size;
        for (seq, s) in batch.iter().enumerate() {
            if let Some(&token) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ForwardError::TokenOutOfRange { token, vocab });
            }
            let end = s.start_pos + s.tokens.len();
            if end > self.config.max_position_embeddings {
                return Err(ForwardError::ContextExceeded {
                    seq,
                    pos: end - 1,
                    limit: self.config.max_position_embeddings,
                });
            }
            let have = s.block_table.len() * cache.block_size;
            if have < end {
                return Err(ForwardError::BlockTableTooShort {
                    seq,
                    needed: end,
                    have,
                });
            }
            let used = end.div_ceil(cache.block_size);
            if let Some(&block) = s.block_table[..used]
                .iter()
                .find(|&&b| b as usize >= cache.num_blocks)
            {
                return Err(ForwardError::BlockOutOfRange {
                    seq,
                    block,
                    blocks: cache.num_blocks,
                });
            }
        }
        Ok(())
    }

    /// Runs one step: writes the new tokens' K/V into `cache` and returns the
    /// requested logits.
    pub fn forward(
        &self,
        batch: &[SeqInput<'_>],
        cache: &mut KvCache,
    ) -> Result<ForwardOutput, ForwardError> {
        self.check(batch, cache)?;
        Ok(rayon::scope(|_| self.forward_checked(batch, cache)))
    }

    fn forward_checked(&self, batch: &[SeqInput<'_>], cache: &mut KvCache) -> ForwardOutput {
        let cfg = &self.config;
        let (h, qd, kvd, ff) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let t: usize = batch.iter().map(|s| s.tokens.len()).sum();
        let mode = self.activation_mode;

        let mut positions = Vec::with_capacity(t);
        let mut slots = Vec::with_capacity(t);
        let mut seqs = Vec::with_capacity(batch.len());
        let mut x = vec![0f32; t * h];
        let embed = self.weights.embed.matrix();
        for s in batch {
            seqs.push(SeqAttention {
                q_start: positions.len(),
                q_len: s.tokens.len(),
                context_len: s.start_pos + s.tokens.len(),
                block_table: s.block_table,
            });
            for (i, &tok) in s.tokens.iter().enumerate() {
                let pos = s.start_pos + i;
                let row = positions.len();
                embed.dequantize_row(tok as usize, &mut x[row * h..(row + 1) * h]);
                positions.push(pos as u32);
                slots.push(
                    s.block_table[pos / cache.block_size] as usize * cache.block_size
                        + pos % cache.block_size,
                );
            }
        }

        let shape = AttentionShape {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        };
        let angles = RopeAngles::new(&positions, &self.rope);
        let mut hn = vec![0f32; t * h];
        let mut q = vec![0f32; t * qd];
        let mut k = vec![0f32; t * kvd];
        let mut v = vec![0f32; t * kvd];
        let mut attn = vec![0f32; t * qd];
        let mut o = vec![0f32; t * h];
        let mut gate = vec![0f32; t * ff];
        let mut up = vec![0f32; t * ff];
        for (li, lw) in self.weights.layers.iter().enumerate() {
            rms_norm(&x, &lw.attn_norm, cfg.rms_norm_eps, &mut hn);
            matmul_many(
                &hn,
                t,
                &mut [
                    (&lw.wq.matrix(), &mut q),
                    (&lw.wk.matrix(), &mut k),
                    (&lw.wv.matrix(), &mut v),
                ],
                mode,
            );
            add_bias(&mut q, lw.bq.as_deref());
            add_bias(&mut k, lw.bk.as_deref());
            add_bias(&mut v, lw.bv.as_deref());
            if let Some(w) = &lw.q_norm {
                rms_norm_inplace(&mut q, w, cfg.rms_norm_eps);
            }
            if let Some(w) = &lw.k_norm {
                rms_norm_inplace(&mut k, w, cfg.rms_norm_eps);
            }
            angles.apply(&mut q, cfg.num_heads, cfg.head_dim);
            angles.apply(&mut k, cfg.num_kv_heads, cfg.head_dim);
            cache.layers[li].write(&slots, &k, &v);
            paged_attention(&q, &cache.layer_view(li), &seqs, shape, &mut attn);
            matmul(&attn, t, &lw.wo.matrix(), &mut o, mode);
            add_inplace(&mut x, &o);

            rms_norm(&x, &lw.ffn_norm, cfg.rms_norm_eps, &mut hn);
            matmul_many(
                &hn,
                t,
                &mut [
                    (&lw.w_gate.matrix(), &mut gate),
                    (&lw.w_up.matrix(), &mut up),
                ],
                mode,
            );
            silu_mul_inplace(&mut gate, &up);
            matmul(&gate, t, &lw.w_down.matrix(), &mut o, mode);
            add_inplace(&mut x, &o);
        }

        // Only the rows someone asked for go through the output head.
        let mut rows = Vec::new();
        let mut seq_rows = Vec::with_capacity(batch.len());
        for (s, sa) in batch.iter().zip(&seqs) {
            let start = rows.len();
            match s.logits {
                LogitsRequest::None => {}
                LogitsRequest::Last if sa.q_len > 0 => rows.push(sa.q_start + sa.q_len - 1),
                LogitsRequest::Last => {}
                LogitsRequest::All => rows.extend(sa.q_start..sa.q_start + sa.q_len),
            }
            seq_rows.push(start..rows.len());
        }
        let mut sel = vec![0f32; rows.len() * h];
        for (i, &r) in rows.iter().enumerate() {
            rms_norm(
                &x[r * h..(r + 1) * h],
                &self.weights.final_norm,
                cfg.rms_norm_eps,
                &mut sel[i * h..(i + 1) * h],
            );
        }
        let vocab = cfg.vocab_size;
        let mut logits = vec![0f32; rows.len() * vocab];
        matmul(
            &sel,
            rows.len(),
            &self.weights.lm_head.matrix(),
            &mut logits,
            mode,
        );
        ForwardOutput {
            logits,
            seq_rows,
            vocab_size: vocab,
        }
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            add_inplace(row, b);
        }
    }
}

fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
