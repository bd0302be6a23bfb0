//! `factory batch`: many prompts from a JSONL file run concurrently through
//! the engine; each result is printed as a JSON line, then the throughput.
//!
//! Each input line is a JSON string (the user message) or an object:
//! `{"prompt": "...", "system": "...", "max_tokens": 64, "temperature": 0.7,
//! "top_p": 0.9, "top_k": 40, "seed": 1, "stop": ["\n\n"], "raw": false}`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use factory_engine::{GenerateRequest, SamplingParams, TokenEvent};
use serde::Deserialize;

use super::engine_args::{start_engine, EngineArgs};
use super::load::load_bundle;
use super::prompt::prompt_ids;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// JSONL file of prompts.
    #[arg(long)]
    pub file: PathBuf,
    /// Default most tokens per prompt (a line's `max_tokens` wins).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Text(String),
    Object(PromptLine),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptLine {
    prompt: String,
    system: Option<String>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    raw: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    text: String,
    stop_reason: String,
    prompt_tokens: usize,
    output_tokens: usize,
    cached_prompt_tokens: usize,
    seconds: f64,
    error: Option<String>,
}

pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let input = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let bundle = load_bundle(&args.model)?;
    let mut reqs = Vec::new();
    for (n, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = || format!("{}:{}", args.file.display(), n + 1);
        let parsed: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected a JSON string or object with \"prompt\"",
                where_()
            )
        })?;
        let p = match parsed {
            Line::Text(prompt) => PromptLine {
                prompt,
                system: None,
                max_tokens: None,
                temperature: None,
                top_p: None,
                top_k: None,
                seed: None,
                stop: Vec::new(),
                raw: false,
            },
            Line::Object(p) => p,
        };
        let ids =
            prompt_ids(&bundle, p.system.as_deref(), &p.prompt, p.raw).with_context(where_)?;
        let mut req = GenerateRequest::new(ids, p.max_tokens.unwrap_or(args.max_tokens));
        req.sampling = SamplingParams {
            temperature: p.temperature.unwrap_or(0.0),
            top_p: p.top_p.unwrap_or(1.0),
            top_k: p.top_k.unwrap_or(0),
            seed: p.seed,
            ..SamplingParams::default()
        };
        req.stop_strings = p.stop;
        reqs.push(req);
    }
    if reqs.is_empty() {
        bail!("{} holds no prompts", args.file.display());
    }
    let engine = start_engine(&bundle, &args.engine)?;
    let mut streams = Vec::new();
    for (i, r) in reqs.into_iter().enumerate() {
        streams.push(
            engine
                .submit(r)
                .with_context(|| format!("prompt {}", i + 1))?,
        );
    }
    let n = streams.len();
    tracing::info!("running {n} prompts");
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    let outcomes: Vec<Outcome> = rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for (i, mut s) in streams.into_iter().enumerate() {
            set.spawn(async move {
                let mut o = Outcome::default();
                while let Some(ev) = s.next().await {
                    match ev {
                        TokenEvent::Token { text, .. } => o.text.push_str(&text),
                        TokenEvent::Finished { reason, usage } => {
                            o.stop_reason = reason.as_str().to_owned();
                            o.prompt_tokens = usage.prompt_tokens;
                            o.output_tokens = usage.output_tokens;
                            o.cached_prompt_tokens = usage.cached_prompt_tokens;
                        }
                        TokenEvent::Error { message } => o.error = Some(message),
                    }
                }
                o.seconds = t0.elapsed().as_secs_f64();
                (i, o)
            });
        }
        let mut out: Vec<Outcome> = (0..n).map(|_| Outcome::default()).collect();
        while let Some(r) = set.join_next().await {
            if let Ok((i, o)) = r {
                out[i] = o;
            }
        }
        out
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    let mut total_out = 0;
    let mut failed = 0;
    for (i, o) in outcomes.iter().enumerate() {
        total_out += o.output_tokens;
        failed += usize::from(o.error.is_some());
        let v = serde_json::json!({
            "index": i,
            "text": o.text,
            "stop_reason": o.stop_reason,
            "prompt_tokens": o.prompt_tokens,
            "output_tokens": o.output_tokens,
            "cached_prompt_tokens": o.cached_prompt_tokens,
            "latency_s": (o.seconds * 1000.0).round() / 1000.0,
            "error": o.error,
        });
        writeln!(stdout, "{v}")?;
    }
    let stats = engine.stats();
    tracing::info!(
        "{n} prompts in {wall:.2}s: {total_out} output tokens, {:.1} output tok/s; {} preemptions; prefix cache hit {} of {} prompt tokens",
        total_out as f64 / wall.max(1e-9),
        stats.scheduler.preemptions,
        stats.scheduler.prefix.hit_tokens,
        stats.scheduler.prefix.queried_tokens,
    );
    if failed > 0 {
        bail!("{failed} of {n} prompts failed");
    }
    Ok(())
}
