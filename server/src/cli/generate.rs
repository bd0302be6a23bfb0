//! `factory generate`: one prompt through the engine, text streamed to
//! stdout as it is produced.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use factory_engine::{GenerateRequest, SamplingParams, TokenEvent};

use super::engine_args::{start_engine, EngineArgs};
use super::load::load_bundle;
use super::prompt::prompt_ids;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
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
    /// Divides logits of tokens already seen (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Subtracted from logits of tokens already generated (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted per earlier occurrence in the output (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// A string that ends generation (not printed); repeatable.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed,
    };
    sampling.validate()?;
    let bundle = load_bundle(&args.model)?;
    let prompt = prompt_ids(&bundle, args.system.as_deref(), &args.prompt, args.raw)?;
    let prompt_len = prompt.len();
    let engine = start_engine(&bundle, &args.engine)?;
    let mut req = GenerateRequest::new(prompt, args.max_tokens);
    req.sampling = sampling;
    req.stop_strings = args.stop;
    let t0 = Instant::now();
    let mut stream = engine.submit(req)?;
    let mut stdout = std::io::stdout().lock();
    let mut first_token = None;
    let mut generated = 0usize;
    while let Some(ev) = stream.blocking_next() {
        match ev {
            TokenEvent::Token { text, .. } => {
                first_token.get_or_insert_with(Instant::now);
                generated += 1;
                write!(stdout, "{text}")?;
                stdout.flush()?;
            }
            TokenEvent::Finished { reason, usage } => {
                writeln!(stdout)?;
                let prefill_s = first_token.map_or(0.0, |t| (t - t0).as_secs_f64());
                let decode_s = first_token.map_or(0.0, |t| t.elapsed().as_secs_f64());
                tracing::info!(
                    "prompt {prompt_len} tokens ({} cached), first token after {prefill_s:.3}s ({:.1} tok/s); {} tokens generated, {:.1} tok/s after the first; stop: {}",
                    usage.cached_prompt_tokens,
                    prompt_len as f64 / prefill_s.max(1e-9),
                    usage.output_tokens,
                    generated.saturating_sub(1) as f64 / decode_s.max(1e-9),
                    reason.as_str(),
                );
                return Ok(());
            }
            TokenEvent::Error { message } => bail!("generation failed: {message}"),
        }
    }
    bail!("the engine stopped before the request finished")
}
