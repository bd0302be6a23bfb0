//! `factory generate`: one prompt, text streamed to stdout as it is produced.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use factory_engine::{Sampler, SamplingParams, Utf8Stream};
use factory_models::{KvCache, LogitsRequest, SeqInput};

use super::load::load_bundle;
use super::ModelArgs;

/// Tokens per block of the KV cache the command allocates.
const BLOCK_SIZE: usize = 16;
/// Longest prefill chunk, bounding activation memory for long prompts.
const PREFILL_CHUNK: usize = 512;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user's message (or the raw text with --raw).
    #[arg(long)]
    pub prompt: String,
    /// A system message placed before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 means no top-k cut.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: args.seed,
        ..Default::default()
    };
    params.validate()?;
    let bundle = load_bundle(&args.model)?;
    let tok = &bundle.tokenizer;
    let prompt_ids = if args.raw {
        tok.encode(&args.prompt, true)?
    } else {
        let Some(template) = &bundle.chat_template else {
            bail!("this model has no chat template; use --raw to feed the prompt as is");
        };
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(("system", s.as_str()));
        }
        messages.push(("user", args.prompt.as_str()));
        let text = template
            .render_simple(&messages, true)
            .context("rendering the chat template")?;
        tracing::debug!("rendered prompt: {text:?}");
        // Templates write their own special tokens.
        tok.encode(&text, false)?
    };
    let model = &bundle.model;
    let limit = model.config.max_position_embeddings;
    if prompt_ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    if prompt_ids.len() >= limit {
        bail!(
            "the prompt has {} tokens; this model's context is {limit}",
            prompt_ids.len()
        );
    }
    let total = (prompt_ids.len() + args.max_tokens).min(limit);
    let blocks = total.div_ceil(BLOCK_SIZE);
    let mut cache = KvCache::new(&model.config, BLOCK_SIZE, blocks);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut sampler = Sampler::new(params, &prompt_ids);

    let t0 = Instant::now();
    let mut logits = Vec::new();
    for (c, chunk) in prompt_ids.chunks(PREFILL_CHUNK).enumerate() {
        let out = model.forward(
            &[SeqInput {
                tokens: chunk,
                start_pos: c * PREFILL_CHUNK,
                block_table: &table,
                logits: LogitsRequest::Last,
            }],
            &mut cache,
        )?;
        if let Some(l) = out.last(0) {
            logits = l.to_vec();
        }
    }
    let prefill_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut text = Utf8Stream::new();
    let mut generated = 0usize;
    let mut reason = "max_tokens";
    let mut pos = prompt_ids.len();
    loop {
        let next = sampler.sample(&logits);
        if bundle.eos_token_ids.contains(&next) {
            reason = "end_turn";
            break;
        }
        sampler.accept(next);
        generated += 1;
        if !tok.is_special(next) {
            write!(stdout, "{}", text.push(&tok.token_bytes(next)))?;
            stdout.flush()?;
        }
        if generated >= args.max_tokens {
            break;
        }
        if pos >= total {
            reason = "context_length";
            break;
        }
        let out = model.forward(
            &[SeqInput {
                tokens: &[next],
                start_pos: pos,
                block_table: &table,
                logits: LogitsRequest::Last,
            }],
            &mut cache,
        )?;
        pos += 1;
        logits = out.last(0).map(<[f32]>::to_vec).unwrap_or_default();
    }
    writeln!(stdout, "{}", text.finish())?;
    let decode_s = t1.elapsed().as_secs_f64();
    tracing::info!(
        "prompt {} tokens in {:.3}s ({:.1} tok/s); generated {} tokens in {:.3}s ({:.1} tok/s); stop: {reason}",
        prompt_ids.len(),
        prefill_s,
        prompt_ids.len() as f64 / prefill_s,
        generated,
        decode_s,
        generated as f64 / decode_s.max(1e-9),
    );
    Ok(())
}
