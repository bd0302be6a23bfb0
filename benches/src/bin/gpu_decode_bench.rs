//! Decode on the CUDA executor against the roofline (issue 5, benchmark 1).
//!
//! A `CudaExecutor` with random weights of a config's shape (default
//! Llama-3.1-8B, bf16) runs decode steps of one token per sequence at each
//! batch size and context length: the contexts are prefilled first (chunked),
//! then `--warmup` untimed and `--steps` timed steps. Each step is timed on the
//! host around `Executor::execute`, which returns the logits to the host (so
//! the time is what the engine sees). Reported per point: median and p90 step
//! time, tokens/s, the bytes a step must read (weights + K/V) and the roofline:
//! those bytes over the card's measured copy bandwidth (or FLOPs over the GEMM
//! rate, when larger), and the share of it reached. Target at batch 1: ≥ 85 %.
//!
//! `gpu_decode_bench [--config PATH] [--batches 1,8,64,256] [--contexts 512,2048]
//!  [--steps 32] [--warmup 3] [--ceilings gpu_ceilings.json] [--json out.json]
//!  [--no-cuda-graphs] [--no-logits-pass]`
//!
//! The bandwidth comes from `--ceilings` (the JSON `gpu_ceilings --json`
//! writes); without it a device-to-device copy is timed here first. Points
//! whose K/V do not fit the cache are reported as skipped. Without
//! `--features cuda` it says so and exits 2; without a GPU it exits 1.

use std::process::ExitCode;

#[cfg(not(feature = "cuda"))]
fn main() -> ExitCode {
    eprintln!(
        "gpu_decode_bench needs the CUDA backend: \
         cargo run --release -p factory-benches --features cuda --bin gpu_decode_bench"
    );
    ExitCode::from(2)
}

#[cfg(feature = "cuda")]
fn main() -> ExitCode {
    match decode::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_decode_bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "cuda")]
mod decode {
    use std::path::PathBuf;
    use std::time::Instant;

    use anyhow::{bail, Context, Result};
    use clap::Parser;
    use factory_benches::roofline::{self, percentile, Ceilings};
    use factory_engine::executor::{Batch, BatchSeq, CudaExecutor, CudaExecutorOptions, Executor};
    use factory_kernels::cuda::CudaDevice;
    use factory_models::ModelConfig;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    /// The target at batch 1, in percent of the roofline.
    const TARGET_PCT_BATCH_1: f64 = 85.0;

    #[derive(Parser, Debug)]
    #[command(about = "Decode step time of the CUDA executor vs the bandwidth roofline")]
    struct Args {
        /// A Hugging Face config.json (the shape; weights are random).
        #[arg(long, default_value = "benches/data/llama-3.1-8b-config.json")]
        config: PathBuf,
        /// Batch sizes (sequences per step), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
        batches: Vec<usize>,
        /// Context lengths (cached positions before the first timed step).
        #[arg(long, value_delimiter = ',', default_value = "512,2048")]
        contexts: Vec<usize>,
        /// Timed decode steps per point.
        #[arg(long, default_value_t = 32)]
        steps: usize,
        /// Untimed decode steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// `gpu_ceilings --json` output: bandwidth and GEMM rate of this card.
        #[arg(long)]
        ceilings: Option<PathBuf>,
        /// Size of each buffer of the in-run copy measurement (without --ceilings), GiB.
        #[arg(long, default_value_t = 1.0)]
        copy_gib: f64,
        /// Also write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 0.9)]
        gpu_memory_utilization: f64,
        #[arg(long, default_value_t = 16)]
        block_size: usize,
        /// Most tokens per prefill step.
        #[arg(long, default_value_t = 8192)]
        max_batch_tokens: usize,
        /// Capture no CUDA graphs.
        #[arg(long)]
        no_cuda_graphs: bool,
        /// Skip the second pass of each point without logits (no LM head read back).
        #[arg(long)]
        no_logits_pass: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        device: usize,
    }

    /// Times `reps` device-to-device copies of `bytes`: bytes/s read + written.
    fn copy_bandwidth(dev: &CudaDevice, bytes: usize, reps: usize) -> Result<f64> {
        let s = &dev.stream;
        let src = s.alloc_zeros::<u8>(bytes)?;
        let mut dst = s.alloc_zeros::<u8>(bytes)?;
        for _ in 0..2 {
            s.memcpy_dtod(&src, &mut dst)?;
        }
        s.synchronize()?;
        let t = Instant::now();
        for _ in 0..reps {
            s.memcpy_dtod(&src, &mut dst)?;
        }
        s.synchronize()?;
        Ok(2.0 * bytes as f64 * reps as f64 / t.elapsed().as_secs_f64())
    }

    /// One point's timings.
    struct Point {
        context: usize,
        batch: usize,
        step: roofline::DecodeStep,
        floor_s: f64,
        median_s: f64,
        p90_s: f64,
        no_logits_median_s: Option<f64>,
        logits_finite: bool,
    }

    impl Point {
        fn pct(&self) -> f64 {
            self.floor_s / self.median_s * 100.0
        }
    }

    /// Runs `steps` timed decode steps (after `warmup`) of the first `batch`
    /// sequences, each at `context` cached positions; returns step seconds and
    /// whether the first step's logits were all finite.
    #[allow(clippy::too_many_arguments)]
    fn decode_steps(
        ex: &mut CudaExecutor,
        tables: &[Vec<u32>],
        batch: usize,
        context: usize,
        warmup: usize,
        steps: usize,
        block_size: usize,
        want_logits: bool,
        rng: &mut StdRng,
        vocab: u32,
    ) -> Result<(Vec<f64>, bool)> {
        let mut times = Vec::with_capacity(steps);
        let mut finite = true;
        for k in 0..warmup + steps {
            let pos = context + k;
            let tokens: Vec<[u32; 1]> = (0..batch).map(|_| [rng.random_range(0..vocab)]).collect();
            let seqs = (0..batch)
                .map(|i| BatchSeq {
                    tokens: &tokens[i],
                    start_pos: pos,
                    block_table: &tables[i][..(pos + 1).div_ceil(block_size)],
                    want_logits,
                })
                .collect();
            let b = Batch { seqs };
            let t = Instant::now();
            let out = ex
                .execute(&b)
                .with_context(|| format!("decode step at batch {batch}, position {pos}"))?;
            let dt = t.elapsed().as_secs_f64();
            if k == 0 && want_logits {
                finite = (0..batch).all(|i| {
                    out.logits(i)
                        .is_some_and(|row| row.iter().all(|v| v.is_finite()))
                });
            }
            if k >= warmup {
                times.push(dt);
            }
        }
        Ok((times, finite))
    }

    /// Writes `context` random tokens into the cache for each sequence, in
    /// chunks of at most `max_tokens` tokens and `max_seqs` sequences a step.
    fn prefill(
        ex: &mut CudaExecutor,
        tables: &[Vec<u32>],
        context: usize,
        max_tokens: usize,
        max_seqs: usize,
        rng: &mut StdRng,
        vocab: u32,
    ) -> Result<(usize, f64)> {
        let prompts: Vec<Vec<u32>> = tables
            .iter()
            .map(|_| (0..context).map(|_| rng.random_range(0..vocab)).collect())
            .collect();
        // (sequence, next position) of the work left, in order.
        let mut next = vec![0usize; tables.len()];
        let mut seq = 0;
        let mut steps = 0;
        let t = Instant::now();
        while seq < tables.len() {
            let mut seqs = Vec::new();
            let mut budget = max_tokens;
            let mut i = seq;
            while i < tables.len() && budget > 0 && seqs.len() < max_seqs {
                let start = next[i];
                let n = (context - start).min(budget);
                seqs.push(BatchSeq {
                    tokens: &prompts[i][start..start + n],
                    start_pos: start,
                    block_table: &tables[i][..(start + n).div_ceil(ex.capabilities().block_size)],
                    want_logits: false,
                });
                budget -= n;
                next[i] += n;
                i += 1;
            }
            ex.execute(&Batch { seqs })
                .with_context(|| format!("prefill step {steps}"))?;
            steps += 1;
            while seq < tables.len() && next[seq] == context {
                seq += 1;
            }
        }
        Ok((steps, t.elapsed().as_secs_f64()))
    }

    pub fn run() -> Result<()> {
        let a = Args::parse();
        if a.batches.is_empty() || a.contexts.is_empty() || a.steps == 0 {
            bail!("--batches, --contexts and --steps must not be empty or zero");
        }
        if a.batches.contains(&0) || a.contexts.contains(&0) {
            bail!("batch sizes and contexts must be at least 1");
        }
        let config = ModelConfig::from_hf_file(&a.config)
            .with_context(|| format!("reading {}", a.config.display()))?;
        let mut batches = a.batches.clone();
        batches.sort_unstable();
        batches.dedup();
        let mut contexts = a.contexts.clone();
        contexts.sort_unstable();
        contexts.dedup();
        let max_batch = *batches.last().unwrap_or(&1);
        let max_ctx = *contexts.last().unwrap_or(&1);
        let model_len = max_ctx + a.warmup + a.steps + 1;
        if model_len > config.max_position_embeddings {
            bail!(
                "context {max_ctx} + {} steps exceeds the model's {} positions",
                a.warmup + a.steps,
                config.max_position_embeddings
            );
        }

        let dev = CudaDevice::open(a.device).context("opening the GPU")?;
        println!(
            "device: {} (sm_{}{}, {} SMs, {:.1} GiB)",
            dev.name,
            dev.capability.0,
            dev.capability.1,
            dev.sm_count,
            dev.total_memory as f64 / (1u64 << 30) as f64
        );
        let ceilings = match &a.ceilings {
            Some(p) => {
                let c = roofline::read_ceilings(p)?;
                println!(
                    "ceilings from {}: copy {:.0} GB/s (read + write){}{}",
                    p.display(),
                    c.copy_bytes_per_s / 1e9,
                    c.read_bytes_per_s.map_or(String::new(), |r| format!(
                        ", streaming read {:.0} GB/s",
                        r / 1e9
                    )),
                    c.gemm_flops_per_s.map_or(String::new(), |f| format!(
                        ", bf16 GEMM {:.0} TFLOP/s",
                        f / 1e12
                    ))
                );
                c
            }
            None => {
                let bytes = (a.copy_gib * (1u64 << 30) as f64) as usize;
                let bw = copy_bandwidth(&dev, bytes, 10).context("timing the copy bandwidth")?;
                println!(
                    "copy bandwidth measured here: {:.0} GB/s (read + write, {:.1} GiB buffers; no GEMM rate: pass --ceilings for the compute floor)",
                    bw / 1e9,
                    a.copy_gib
                );
                Ceilings {
                    copy_bytes_per_s: bw,
                    read_bytes_per_s: None,
                    gemm_flops_per_s: None,
                }
            }
        };
        drop(dev);

        let opts = CudaExecutorOptions {
            device: a.device,
            gpu_memory_utilization: a.gpu_memory_utilization,
            block_size: a.block_size,
            max_batch_seqs: max_batch,
            max_batch_tokens: a.max_batch_tokens.max(max_batch),
            max_model_len: Some(model_len),
            cuda_graphs: !a.no_cuda_graphs,
        };
        let mut ex = CudaExecutor::random(config.clone(), a.seed, &opts)
            .context("starting the CUDA executor with random weights")?;
        let st = ex.startup().clone();
        let caps = ex.capabilities().clone();
        println!(
            "model: {} ({} layers, hidden {}, {:.2} B parameters), random bf16 weights {:.2} GiB, loaded in {:.1} s",
            a.config.display(),
            config.num_layers,
            config.hidden_size,
            roofline::param_count(&config) as f64 / 1e9,
            st.weight_bytes as f64 / (1u64 << 30) as f64,
            st.load_seconds
        );
        println!(
            "KV cache: {} blocks of {} ({:.2} GiB); CUDA graphs: {}; max {} seqs / {} tokens a step",
            st.kv_blocks,
            caps.block_size,
            st.kv_bytes as f64 / (1u64 << 30) as f64,
            st.graph_capture_seconds
                .map_or("none captured".to_owned(), |s| format!("captured in {s:.2} s")),
            caps.max_batch_seqs,
            caps.max_batch_tokens
        );

        let vocab = config.vocab_size as u32;
        let bs = caps.block_size;
        let mut rng = StdRng::seed_from_u64(a.seed);
        let mut points = Vec::new();
        let mut skipped = Vec::new();
        let mut prefills = Vec::new();
        for &ctx in &contexts {
            let per_seq = (ctx + a.warmup + a.steps + 1).div_ceil(bs);
            let fit = (caps.num_kv_blocks / per_seq).min(max_batch);
            if fit == 0 {
                skipped
                    .push(json!({"context": ctx, "why": "one sequence does not fit the KV cache"}));
                println!(
                    "context {ctx}: one sequence needs {per_seq} blocks, the cache has {}: skipped",
                    caps.num_kv_blocks
                );
                continue;
            }
            let n = batches
                .iter()
                .copied()
                .filter(|&b| b <= fit)
                .max()
                .unwrap_or(0);
            if n == 0 {
                continue;
            }
            let tables: Vec<Vec<u32>> = (0..n)
                .map(|i| ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect())
                .collect();
            let (psteps, psecs) = prefill(
                &mut ex,
                &tables,
                ctx,
                caps.max_batch_tokens,
                caps.max_batch_seqs,
                &mut rng,
                vocab,
            )?;
            println!(
                "context {ctx}: prefilled {n} sequences ({} tokens) in {psteps} steps, {psecs:.2} s ({:.0} tok/s)",
                n * ctx,
                (n * ctx) as f64 / psecs
            );
            prefills.push(json!({"context": ctx, "sequences": n, "tokens": n * ctx, "steps": psteps, "seconds": psecs}));
            for &b in &batches {
                if b > n {
                    println!(
                        "context {ctx}, batch {b}: needs {} KV blocks, the cache has {}: skipped",
                        b * per_seq,
                        caps.num_kv_blocks
                    );
                    skipped.push(
                        json!({"context": ctx, "batch": b, "why": "KV cache too small",
                        "blocks_needed": b * per_seq, "blocks": caps.num_kv_blocks}),
                    );
                    continue;
                }
                let (times, finite) = decode_steps(
                    &mut ex, &tables, b, ctx, a.warmup, a.steps, bs, true, &mut rng, vocab,
                )?;
                let no_logits = if a.no_logits_pass {
                    None
                } else {
                    let (t, _) = decode_steps(
                        &mut ex, &tables, b, ctx, a.warmup, a.steps, bs, false, &mut rng, vocab,
                    )?;
                    Some(percentile(&t, 50.0))
                };
                let step = roofline::decode_step(&config, b, ctx, 2);
                let floor_s =
                    step.floor_seconds(ceilings.copy_bytes_per_s, ceilings.gemm_flops_per_s);
                let p = Point {
                    context: ctx,
                    batch: b,
                    step,
                    floor_s,
                    median_s: percentile(&times, 50.0),
                    p90_s: percentile(&times, 90.0),
                    no_logits_median_s: no_logits,
                    logits_finite: finite,
                };
                println!(
                    "context {ctx}, batch {b}: median {:.3} ms, p90 {:.3} ms, roofline {:.3} ms ({:.1} %){}",
                    p.median_s * 1e3,
                    p.p90_s * 1e3,
                    p.floor_s * 1e3,
                    p.pct(),
                    if finite { "" } else { ", NON-FINITE LOGITS" }
                );
                points.push(p);
            }
        }

        println!();
        println!("| context | batch | step ms (median) | p90 ms | tok/s | weights GB | KV GB | roofline ms | % of roofline | ms without logits |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for p in &points {
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} | {:.3} | {:.1} | {} |",
                p.context,
                p.batch,
                p.median_s * 1e3,
                p.p90_s * 1e3,
                p.batch as f64 / p.median_s,
                p.step.weight_bytes as f64 / 1e9,
                p.step.kv_bytes as f64 / 1e9,
                p.floor_s * 1e3,
                p.pct(),
                p.no_logits_median_s
                    .map_or("-".to_owned(), |s| format!("{:.3}", s * 1e3)),
            );
        }
        println!();
        println!(
            "roofline = (weights + K/V bytes a step must read) / copy bandwidth {:.0} GB/s{}; step time on the host around execute(), logits copied back",
            ceilings.copy_bytes_per_s / 1e9,
            ceilings
                .gemm_flops_per_s
                .map_or(String::new(), |f| format!(
                    ", or FLOPs / {:.0} TFLOP/s when larger",
                    f / 1e12
                ))
        );
        for p in points.iter().filter(|p| p.batch == 1) {
            println!(
                "target at batch 1, context {}: {:.1} % of the roofline (target >= {TARGET_PCT_BATCH_1} %: {})",
                p.context,
                p.pct(),
                if p.pct() >= TARGET_PCT_BATCH_1 { "met" } else { "NOT met" }
            );
        }
        let bad_logits = points.iter().any(|p| !p.logits_finite);
        if bad_logits {
            println!("WARNING: some steps returned non-finite logits (see above)");
        }

        if let Some(path) = &a.json {
            let out = json!({
                "bench": "gpu_decode_bench",
                "device": st.device_name,
                "config": a.config.display().to_string(),
                "parameters": roofline::param_count(&config),
                "weight_bytes_on_device": st.weight_bytes,
                "load_seconds": st.load_seconds,
                "kv_blocks": st.kv_blocks,
                "kv_bytes": st.kv_bytes,
                "block_size": bs,
                "graph_capture_seconds": st.graph_capture_seconds,
                "cuda_graphs": !a.no_cuda_graphs,
                "copy_bytes_per_s": ceilings.copy_bytes_per_s,
                "read_bytes_per_s": ceilings.read_bytes_per_s,
                "gemm_flops_per_s": ceilings.gemm_flops_per_s,
                "bandwidth_source": a.ceilings.as_ref().map_or("measured in run".to_owned(), |p| p.display().to_string()),
                "warmup_steps": a.warmup,
                "timed_steps": a.steps,
                "prefill": prefills,
                "skipped": skipped,
                "points": points.iter().map(|p| json!({
                    "context": p.context,
                    "batch": p.batch,
                    "median_ms": p.median_s * 1e3,
                    "p90_ms": p.p90_s * 1e3,
                    "tokens_per_s": p.batch as f64 / p.median_s,
                    "weight_bytes": p.step.weight_bytes,
                    "kv_bytes": p.step.kv_bytes,
                    "flops": p.step.flops,
                    "roofline_ms": p.floor_s * 1e3,
                    "pct_of_roofline": p.pct(),
                    "no_logits_median_ms": p.no_logits_median_s.map(|s| s * 1e3),
                    "logits_finite": p.logits_finite,
                })).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&out)?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        if bad_logits {
            bail!("non-finite logits");
        }
        Ok(())
    }
}
