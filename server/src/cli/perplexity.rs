//! `factory perplexity`: teacher-forced perplexity over a text file, scored as
//! llama.cpp's `llama-perplexity` does so the numbers compare: the text is cut
//! into windows of `--context` tokens and only each window's second half is
//! scored (the first half is context).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use factory_models::{KvCache, LogitsRequest, SeqInput};

use super::load::load_bundle;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A UTF-8 text file.
    #[arg(long)]
    pub file: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
}

pub fn run(args: PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let bundle = load_bundle(&args.model)?;
    let model = &bundle.model;
    let n_ctx = args.context.min(model.config.max_position_embeddings);
    if n_ctx < 4 {
        bail!("--context must be at least 4");
    }
    let mut ids = bundle.tokenizer.encode(&text, false)?;
    let bos = bundle
        .tokenizer
        .bos_token_id()
        .filter(|_| bundle.tokenizer.adds_bos_token());
    let windows = ids.len() / n_ctx;
    if windows == 0 {
        bail!(
            "{} has {} tokens, fewer than one window of {n_ctx}",
            args.file.display(),
            ids.len()
        );
    }
    ids.truncate(windows * n_ctx);
    let block = 16;
    let table: Vec<u32> = (0..n_ctx.div_ceil(block) as u32).collect();
    let mut cache = KvCache::new(&model.config, block, table.len());
    let (mut nll, mut count) = (0f64, 0usize);
    let t0 = Instant::now();
    for w in 0..windows {
        let mut win = ids[w * n_ctx..(w + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            win[0] = b;
        }
        let out = model.forward(
            &[SeqInput {
                tokens: &win,
                start_pos: 0,
                block_table: &table,
                logits: LogitsRequest::All,
            }],
            &mut cache,
        )?;
        for j in n_ctx / 2..n_ctx - 1 {
            nll -= log_softmax_at(out.row(0, j), win[j + 1] as usize);
            count += 1;
        }
        eprintln!(
            "[{}/{windows}] running perplexity {:.4}",
            w + 1,
            (nll / count as f64).exp()
        );
    }
    let ppl = (nll / count as f64).exp();
    println!("perplexity {ppl:.4} over {count} scored tokens ({windows} windows of {n_ctx})");
    tracing::info!(
        "{:.1} tokens/s",
        (windows * n_ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `log softmax(logits)[i]`, in f64.
fn log_softmax_at(logits: &[f32], i: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits
        .get(i)
        .map_or(f64::NEG_INFINITY, |&l| l as f64 - max - z.ln())
}
