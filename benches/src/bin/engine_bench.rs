//! Offline throughput of the engine on the CPU backend: at each concurrency
//! level c, submit exactly c requests at once, step the engine until all have
//! finished, and report output tokens/s, latency, time to first token and how
//! much of each step is spent outside the model.
//!
//! `cargo run --release -p factory-benches --bin engine_bench -- [--model PATH] [--workload fixed|mixed|both] [--concurrency 1,2,4,8,16,32,64] [--prompt 128] [--output 128] [--block-size 16] [--kv-blocks N] [--kv-cache-dtype f32|f16] [--max-batched-tokens 512] [--max-num-seqs N] [--shared-prefix N] [--seed 0] [--no-prefix-caching] [--repeat N] [--quick]`
//!
//! `--repeat N` runs every level N times, in rounds over all levels (on a
//! shared machine a slow spell then hits every level alike), and reports
//! each level's fastest run, with all runs listed below the table.
//!
//! `--quick` (a smoke run) means concurrency 1,4 and 32 output tokens.
//! Every request is greedy with `ignore_eos`, so it generates exactly its
//! `max_tokens`. Prompts are seeded random ordinary (non-special) token ids
//! with a distinct first token per request, so the prefix cache cannot help
//! unless `--shared-prefix N` prepends the same N tokens to every prompt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use factory_benches::offline::Progress;
use factory_engine::{
    CpuExecutor, EngineConfig, EngineCore, GenerateRequest, SamplingParams, SchedulerConfig,
    TokenEvent,
};
use factory_kernels::cpu::ActivationMode;
use factory_models::bundle::ModelBundle;
use factory_models::tokenizer::Tokenizer;
use factory_models::{default_model, KvDType, Model};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const DEFAULT_CONCURRENCY: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
/// Mixed workload: inclusive ranges of prompt and output lengths.
const MIXED_PROMPT: (usize, usize) = (16, 512);
const MIXED_OUTPUT: (usize, usize) = (16, 256);
/// The targets this benchmark checks.
const OVERHEAD_TARGET_PCT: f64 = 2.0;
const OVERHEAD_TARGET_SEQS: usize = 64;
const SPEEDUP_TARGET: f64 = 3.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Fixed,
    Mixed,
}

struct Opts {
    model: Option<String>,
    workloads: Vec<Workload>,
    concurrency: Vec<usize>,
    prompt: usize,
    output: usize,
    /// Caps the mixed workload's output lengths (set by `--quick`).
    mixed_output_max: usize,
    block_size: usize,
    kv_blocks: Option<usize>,
    kv_dtype: KvDType,
    max_batched_tokens: usize,
    max_num_seqs: Option<usize>,
    shared_prefix: usize,
    seed: u64,
    prefix_caching: bool,
    /// Runs per level, interleaved across levels; the best is reported.
    repeat: usize,
}

fn parse_list(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .with_context(|| format!("bad number {x:?}"))
        })
        .collect()
}

fn parse() -> anyhow::Result<Opts> {
    let mut model = None;
    let mut workloads = vec![Workload::Fixed, Workload::Mixed];
    let mut concurrency = None;
    let mut prompt = 128;
    let mut output = None;
    let mut block_size = 16;
    let mut kv_blocks = None;
    let mut kv_dtype = KvDType::F32;
    let mut max_batched_tokens = 512;
    let mut max_num_seqs = None;
    let mut shared_prefix = 0;
    let mut seed = 0;
    let mut prefix_caching = true;
    let mut quick = false;
    let mut repeat = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(val()?),
            "--workload" => {
                workloads = match val()?.as_str() {
                    "fixed" => vec![Workload::Fixed],
                    "mixed" => vec![Workload::Mixed],
                    "both" => vec![Workload::Fixed, Workload::Mixed],
                    other => bail!("--workload is fixed, mixed or both, not {other}"),
                }
            }
            "--concurrency" => concurrency = Some(parse_list(&val()?)?),
            "--prompt" => prompt = val()?.parse()?,
            "--output" => output = Some(val()?.parse()?),
            "--block-size" => block_size = val()?.parse()?,
            "--kv-blocks" => kv_blocks = Some(val()?.parse()?),
            "--kv-cache-dtype" => kv_dtype = val()?.parse()?,
            "--max-batched-tokens" => max_batched_tokens = val()?.parse()?,
            "--max-num-seqs" => max_num_seqs = Some(val()?.parse()?),
            "--shared-prefix" => shared_prefix = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--no-prefix-caching" => prefix_caching = false,
            "--quick" => quick = true,
            "--repeat" => repeat = val()?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other}"),
        }
    }
    // Explicit flags win over --quick, whatever their order.
    let mut concurrency = concurrency.unwrap_or_else(|| {
        if quick {
            vec![1, 4]
        } else {
            DEFAULT_CONCURRENCY.to_vec()
        }
    });
    // Sorted so that concurrency 1, the speed-up baseline, runs first.
    concurrency.sort_unstable();
    concurrency.dedup();
    if concurrency.is_empty() || concurrency[0] == 0 {
        bail!("concurrency levels must be at least 1");
    }
    let output = output.unwrap_or(if quick { 32 } else { 128 });
    if prompt == 0 || output == 0 || block_size == 0 || repeat == 0 {
        bail!("--prompt, --output, --block-size and --repeat must be at least 1");
    }
    Ok(Opts {
        model,
        workloads,
        concurrency,
        prompt,
        output,
        mixed_output_max: if quick { 32 } else { MIXED_OUTPUT.1 },
        block_size,
        kv_blocks,
        kv_dtype,
        max_batched_tokens,
        max_num_seqs,
        shared_prefix,
        seed,
        prefix_caching,
        repeat,
    })
}

/// One request's prompt and output length.
struct Req {
    prompt: Vec<u32>,
    output: usize,
}

/// Request `i` of a workload. Request i is the same at every concurrency
/// level (its generator is seeded by `seed` and `i`), so level c runs the
/// first c requests of one fixed list.
fn make_request(
    o: &Opts,
    w: Workload,
    i: usize,
    ordinary: &[u32],
    first_tokens: &[u32],
    prefix: &[u32],
) -> Req {
    let mut rng =
        StdRng::seed_from_u64(o.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (len, output) = match w {
        Workload::Fixed => (o.prompt, o.output),
        Workload::Mixed => {
            let lo = MIXED_OUTPUT.0.min(o.mixed_output_max);
            (
                rng.random_range(MIXED_PROMPT.0..=MIXED_PROMPT.1),
                rng.random_range(lo..=o.mixed_output_max),
            )
        }
    };
    let mut prompt = Vec::with_capacity(prefix.len() + len);
    prompt.extend_from_slice(prefix);
    // A first token no other request shares: no prefix-cache hits past the
    // shared prefix.
    prompt.push(first_tokens[i]);
    prompt.extend((1..len).map(|_| ordinary[rng.random_range(0..ordinary.len())]));
    Req { prompt, output }
}

/// What one concurrency level measured.
struct Run {
    c: usize,
    requests: usize,
    output_tokens: usize,
    wall: f64,
    latencies: Vec<f64>,
    ttfts: Vec<f64>,
    steps: usize,
    step_total: Duration,
    step_execute: Duration,
    preemptions: u64,
    kv_blocks: usize,
    prefix_hit_tokens: u64,
    prefix_queried_tokens: u64,
}

impl Run {
    fn tok_per_s(&self) -> f64 {
        self.output_tokens as f64 / self.wall
    }

    /// Share of step time outside the executor: scheduling, batch assembly,
    /// sampling, detokenization and stop checks, event sends.
    fn overhead_pct(&self) -> f64 {
        let total = self.step_total.as_secs_f64();
        if total == 0.0 {
            return 0.0;
        }
        (total - self.step_execute.as_secs_f64()) / total * 100.0
    }

    fn overhead_us_per_step(&self) -> f64 {
        (self.step_total - self.step_execute).as_secs_f64() * 1e6 / self.steps.max(1) as f64
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Everything each run shares: the model is loaded once.
struct Shared {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    eos_ids: Vec<u32>,
}

/// Runs `reqs` to completion on a fresh engine (and KV cache).
fn run_level(sh: &Shared, o: &Opts, reqs: &[Req]) -> anyhow::Result<Run> {
    let c = reqs.len();
    let needed: usize = reqs
        .iter()
        .map(|r| (r.prompt.len() + r.output).div_ceil(o.block_size))
        .sum();
    let kv_blocks = o.kv_blocks.unwrap_or(needed);
    let executor =
        CpuExecutor::with_kv_dtype(sh.model.clone(), o.block_size, kv_blocks, o.kv_dtype);
    let mut core = EngineCore::new(
        Box::new(executor),
        sh.tokenizer.clone(),
        sh.eos_ids.clone(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: o.max_batched_tokens,
                max_num_seqs: o.max_num_seqs.unwrap_or(c.clamp(1, 256)),
                ..Default::default()
            },
            prefix_caching: o.prefix_caching,
        },
    );
    let mut rxs: Vec<UnboundedReceiver<TokenEvent>> = Vec::with_capacity(c);
    let t0 = Instant::now();
    for (i, r) in reqs.iter().enumerate() {
        let (tx, rx) = unbounded_channel();
        let req = GenerateRequest {
            sampling: SamplingParams::default(), // temperature 0: greedy
            ignore_eos: true,
            ..GenerateRequest::new(r.prompt.clone(), r.output)
        };
        core.add_request(i as u64, req, tx)
            .with_context(|| format!("request {i} ({} KV blocks)", kv_blocks))?;
        rxs.push(rx);
    }
    let mut progress = Progress::new(rxs, reqs.iter().map(|r| r.output).collect());
    let (mut steps, mut step_total, mut step_execute) = (0, Duration::ZERO, Duration::ZERO);
    let mut idle = 0;
    while core.has_work() {
        let r = core.step();
        steps += 1;
        step_total += r.total;
        step_execute += r.execute;
        // A scheduler that can never place anything would spin forever.
        if r.seqs == 0 {
            idle += 1;
            if idle > 1000 {
                bail!("the engine made no progress for 1000 steps");
            }
        } else {
            idle = 0;
        }
        progress.drain(t0.elapsed().as_secs_f64())?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let latencies = progress.latencies()?;
    let stats = core.stats();
    Ok(Run {
        c,
        requests: c,
        output_tokens: progress.output_tokens(),
        wall,
        latencies,
        ttfts: progress.first.iter().map(|f| f.unwrap_or(wall)).collect(),
        steps,
        step_total,
        step_execute,
        preemptions: stats.preemptions,
        kv_blocks,
        prefix_hit_tokens: stats.prefix.hit_tokens,
        prefix_queried_tokens: stats.prefix.queried_tokens,
    })
}

fn run_workload(sh: &Shared, o: &Opts, w: Workload) -> anyhow::Result<()> {
    let vocab = sh.model.config.vocab_size.min(sh.tokenizer.vocab_size()) as u32;
    let ordinary: Vec<u32> = (0..vocab)
        .filter(|&id| !sh.tokenizer.is_special(id))
        .collect();
    let max_c = *o.concurrency.last().unwrap_or(&1);
    if max_c > ordinary.len() {
        bail!("more requests than ordinary tokens to start them with");
    }
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut first_tokens = ordinary.clone();
    first_tokens.shuffle(&mut rng);
    let prefix: Vec<u32> = (0..o.shared_prefix)
        .map(|_| ordinary[rng.random_range(0..ordinary.len())])
        .collect();
    let all: Vec<Req> = (0..max_c)
        .map(|i| make_request(o, w, i, &ordinary, &first_tokens, &prefix))
        .collect();

    let title = match w {
        Workload::Fixed => format!(
            "fixed: {} prompt + {} output tokens per request",
            o.prompt, o.output
        ),
        Workload::Mixed => format!(
            "mixed: prompt lengths uniform in {}..={}, output lengths uniform in {}..={} (seed {})",
            MIXED_PROMPT.0,
            MIXED_PROMPT.1,
            MIXED_OUTPUT.0.min(o.mixed_output_max),
            o.mixed_output_max,
            o.seed
        ),
    };
    println!();
    println!("### workload {title}");
    if o.shared_prefix > 0 {
        println!(
            "every prompt starts with the same {} tokens",
            o.shared_prefix
        );
    }
    println!();
    println!("| concurrency | requests | output tok/s | speed-up vs c=1 | latency mean (s) | p50 (s) | p90 (s) | mean TTFT (s) | steps | mean step ms | sched overhead % | overhead µs/step | preemptions |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // Rounds over every level, so a slow spell of a shared machine lands on
    // all levels alike; each level keeps its fastest run.
    let mut best: Vec<Option<Run>> = o.concurrency.iter().map(|_| None).collect();
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); o.concurrency.len()];
    for _ in 0..o.repeat {
        for (i, &c) in o.concurrency.iter().enumerate() {
            let run = run_level(sh, o, &all[..c])?;
            seen[i].push(run.tok_per_s());
            if best[i]
                .as_ref()
                .is_none_or(|b| run.tok_per_s() > b.tok_per_s())
            {
                best[i] = Some(run);
            }
        }
    }
    let mut runs: Vec<Run> = Vec::new();
    for run in best.into_iter().flatten() {
        let base = runs.iter().find(|r| r.c == 1).map(Run::tok_per_s);
        let speedup = match (run.c, base) {
            (1, _) => "1.00×".to_owned(),
            (_, Some(b)) => format!("{:.2}×", run.tok_per_s() / b),
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {:.2} | {:.2} | {:.0} | {} |",
            run.c,
            run.requests,
            run.tok_per_s(),
            speedup,
            mean(&run.latencies),
            percentile(&run.latencies, 50.0),
            percentile(&run.latencies, 90.0),
            mean(&run.ttfts),
            run.steps,
            run.step_total.as_secs_f64() * 1e3 / run.steps.max(1) as f64,
            run.overhead_pct(),
            run.overhead_us_per_step(),
            run.preemptions,
        );
        runs.push(run);
    }
    if o.repeat > 1 {
        println!();
        let lists: Vec<String> = o
            .concurrency
            .iter()
            .zip(&seen)
            .map(|(c, v)| {
                let v: Vec<String> = v.iter().map(|t| format!("{t:.1}")).collect();
                format!("c={c}: {}", v.join(", "))
            })
            .collect();
        println!(
            "- best of {} interleaved runs per level; all runs (output tok/s): {}",
            o.repeat,
            lists.join("; ")
        );
    }
    summarize(&runs, sh, o);
    Ok(())
}

/// The checks against the engine's targets.
fn summarize(runs: &[Run], sh: &Shared, o: &Opts) {
    let Some(last) = runs.last() else { return };
    let kv_mib =
        (last.kv_blocks * CpuExecutor::bytes_per_block(&sh.model, o.block_size, o.kv_dtype)) as f64
            / (1 << 20) as f64;
    println!();
    println!(
        "- largest run, c={}: {} KV blocks ({kv_mib:.0} MiB); prefix-cache hits {} of {} prompt tokens looked up",
        last.c, last.kv_blocks, last.prefix_hit_tokens, last.prefix_queried_tokens
    );
    let verdict = if last.c < OVERHEAD_TARGET_SEQS {
        format!("target is stated at {OVERHEAD_TARGET_SEQS} sequences; not reached here")
    } else if last.overhead_pct() < OVERHEAD_TARGET_PCT {
        "met".to_owned()
    } else {
        "NOT met".to_owned()
    };
    println!(
        "- scheduler overhead at c={}: {:.2}% of step time, {:.0} µs/step (target < {OVERHEAD_TARGET_PCT}% at {OVERHEAD_TARGET_SEQS} sequences: {verdict})",
        last.c,
        last.overhead_pct(),
        last.overhead_us_per_step()
    );
    let tp = |c: usize| runs.iter().find(|r| r.c == c).map(Run::tok_per_s);
    match (tp(1), tp(32)) {
        (Some(t1), Some(t32)) => {
            let ratio = t32 / t1;
            println!(
                "- throughput c=32 / c=1: {ratio:.2}× (target ≥ {SPEEDUP_TARGET}×: {})",
                if ratio >= SPEEDUP_TARGET {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        _ => println!("- throughput c=32 / c=1: not measured (needs runs at 1 and 32)"),
    }
    match tp(32) {
        Some(t32) => {
            let above: Vec<&Run> = runs.iter().filter(|r| r.c > 32).collect();
            if above.is_empty() {
                println!("- throughput above c=32: no run with c > 32");
            }
            for r in above {
                let t = r.tok_per_s();
                println!(
                    "- throughput c={} vs c=32: {t:.1} vs {t32:.1} tok/s ({})",
                    r.c,
                    if t >= t32 { "not lower" } else { "LOWER" }
                );
            }
        }
        None => println!("- throughput above c=32: not measured (needs a run at 32)"),
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let path = match &o.model {
        Some(p) => p.into(),
        None => default_model::ensure()?,
    };
    println!(
        "machine: {} rayon threads; model: {}",
        rayon::current_num_threads(),
        path.display()
    );
    let bundle = ModelBundle::load(&path, ActivationMode::Exact)?;
    let sh = Shared {
        model: Arc::new(bundle.model),
        tokenizer: Arc::new(bundle.tokenizer),
        eos_ids: bundle.eos_token_ids,
    };
    println!(
        "engine: CPU executor, KV cache {}, block size {}, max {} batched tokens/step, max seqs {}, KV blocks {}, prefix caching {}",
        o.kv_dtype,
        o.block_size,
        o.max_batched_tokens,
        o.max_num_seqs
            .map_or("= concurrency (≤ 256)".to_owned(), |n| n.to_string()),
        o.kv_blocks
            .map_or("enough for every request at full length".to_owned(), |n| n.to_string()),
        if o.prefix_caching { "on" } else { "off" },
    );
    println!(
        "requests: greedy, ignore_eos (each generates exactly its max_tokens); seeded random ordinary-token prompts with distinct first tokens (no prefix-cache help{})",
        if o.shared_prefix > 0 { " past the shared prefix" } else { "" }
    );
    println!("tok/s = all output tokens / wall time from submission to the last finish; overhead = step time outside the executor (scheduling, batch assembly, sampling, detokenization, event sends)");
    // Warm-up, not reported: pages in the weights and starts the thread pool.
    let warm = Req {
        prompt: vec![
            sh.tokenizer
                .bos_token_id()
                .unwrap_or(0)
                .min(sh.model.config.vocab_size as u32 - 1);
            16
        ],
        output: 4,
    };
    run_level(&sh, &o, std::slice::from_ref(&warm))?;
    for &w in &o.workloads {
        run_workload(&sh, &o, w)?;
    }
    Ok(())
}
