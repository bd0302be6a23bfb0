//! Single-stream prefill and decode speed of a model on this machine, beside
//! the memory-bandwidth floor (weight bytes read per token / DRAM bandwidth).
//!
//! `cargo run --release -p factory-benches --bin model_bench [-- --model PATH] [--prompt N] [--decode N] [--reps N] [--only exact|fast|f32] [--batch N] [--kv-cache-dtype f32|f16]`
//! With no --model, benchmarks the default model (Q4_1) in exact and fast
//! mode and its f32 form. `--batch N` adds batched decode: N sequences with
//! `--prompt` tokens of context each, one new token each per step (the
//! engine's steady state under load), in ms per step and tokens/s, over a KV
//! cache of `--kv-cache-dtype` (default f32).

use std::time::Instant;

use anyhow::Context;
use factory_kernels::cpu::ActivationMode;
use factory_models::{default_model, open_model, KvCache, KvDType, LogitsRequest, Model, SeqInput};

struct Opts {
    model: Option<String>,
    prompt: usize,
    decode: usize,
    reps: usize,
    /// Only the variants whose name contains this (e.g. `exact`, `fast`, `f32`).
    only: Option<String>,
    /// Sequences of the batched decode run (none without `--batch`).
    batch: Option<usize>,
    /// KV cache element type of the batched decode run.
    kv_dtype: KvDType,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        model: None,
        prompt: 128,
        decode: 64,
        reps: 3,
        only: None,
        batch: None,
        kv_dtype: KvDType::F32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => o.model = Some(val()?),
            "--prompt" => o.prompt = val()?.parse()?,
            "--decode" => o.decode = val()?.parse()?,
            "--reps" => o.reps = val()?.parse()?,
            "--only" => o.only = Some(val()?),
            "--batch" => o.batch = Some(val()?.parse()?),
            "--kv-cache-dtype" => o.kv_dtype = val()?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// Median of a few runs, in seconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (prefill seconds for `prompt` tokens, decode seconds per token).
fn run_once(model: &Model, prompt: usize, decode: usize) -> anyhow::Result<(f64, f64)> {
    let vocab = model.config.vocab_size as u32;
    // Deterministic, non-trivial token ids.
    let ids: Vec<u32> = (0..prompt as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let table: Vec<u32> = (0..(prompt + decode).div_ceil(16) as u32).collect();
    let mut cache = KvCache::new(&model.config, 16, table.len());
    let t0 = Instant::now();
    model.forward(
        &[SeqInput {
            tokens: &ids,
            start_pos: 0,
            block_table: &table,
            logits: LogitsRequest::Last,
        }],
        &mut cache,
    )?;
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 0..decode {
        let tok = [(i as u32 * 31 + 7) % vocab];
        model.forward(
            &[SeqInput {
                tokens: &tok,
                start_pos: prompt + i,
                block_table: &table,
                logits: LogitsRequest::Last,
            }],
            &mut cache,
        )?;
    }
    Ok((prefill, t1.elapsed().as_secs_f64() / decode.max(1) as f64))
}

/// Seconds per decode step of `n` sequences, each with `prompt` tokens of
/// context (filled by one batched prefill first), over `decode` steps.
fn run_batch(
    model: &Model,
    n: usize,
    prompt: usize,
    decode: usize,
    dtype: KvDType,
) -> anyhow::Result<f64> {
    let vocab = model.config.vocab_size as u32;
    let per_seq = (prompt + decode).div_ceil(16);
    let mut cache = KvCache::with_dtype(&model.config, 16, n * per_seq, dtype);
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    let prompts: Vec<Vec<u32>> = (0..n as u32)
        .map(|s| {
            (0..prompt as u32)
                .map(|i| (i * 7919 + s * 104_729 + 13) % vocab)
                .collect()
        })
        .collect();
    // Prefill in chunks of a few sequences, as the engine's token budget would.
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let batch: Vec<SeqInput<'_>> = chunk
            .iter()
            .map(|&s| SeqInput {
                tokens: &prompts[s],
                start_pos: 0,
                block_table: &tables[s],
                logits: LogitsRequest::Last,
            })
            .collect();
        model.forward(&batch, &mut cache)?;
    }
    let t = Instant::now();
    for i in 0..decode {
        let toks: Vec<[u32; 1]> = (0..n as u32)
            .map(|s| [(i as u32 * 31 + s * 17 + 7) % vocab])
            .collect();
        let batch: Vec<SeqInput<'_>> = (0..n)
            .map(|s| SeqInput {
                tokens: &toks[s],
                start_pos: prompt + i,
                block_table: &tables[s],
                logits: LogitsRequest::Last,
            })
            .collect();
        model.forward(&batch, &mut cache)?;
    }
    Ok(t.elapsed().as_secs_f64() / decode.max(1) as f64)
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let bw = factory_benches::dram_read_bandwidth();
    println!(
        "machine: {} threads; DRAM read bandwidth {:.1} GB/s (2 GiB buffer, all threads)",
        rayon::current_num_threads(),
        bw / 1e9
    );
    let path = match &o.model {
        Some(p) => p.into(),
        None => default_model::ensure()?,
    };
    let exact = open_model(&path, ActivationMode::Exact)?.model;
    let mut variants: Vec<(String, Model)> = Vec::new();
    let quantized = exact.weights.layers[0].wq.dtype.is_quantized();
    let dtype = format!("{:?}", exact.weights.layers[0].wq.dtype);
    if quantized {
        let mut fast = exact.clone();
        fast.activation_mode = ActivationMode::Fast;
        let mut f32m = exact.clone();
        f32m.weights = exact.weights.dequantized();
        variants.push((format!("{dtype} exact"), exact));
        variants.push((format!("{dtype} fast"), fast));
        variants.push(("f32 form".into(), f32m));
    } else {
        variants.push((dtype, exact));
    }
    if let Some(only) = &o.only {
        variants.retain(|(name, _)| name.contains(only.as_str()));
        anyhow::ensure!(!variants.is_empty(), "no variant matches --only {only}");
    }
    println!(
        "model: {} (prompt {} tokens, decode {} tokens after it, median of {})",
        path.display(),
        o.prompt,
        o.decode,
        o.reps
    );
    println!("| variant | weights read/token | floor ms/token | decode ms/token | decode tok/s | % of floor | prefill tok/s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, model) in &variants {
        run_once(model, 16, 4)?; // warm-up: page in weights, fill caches
        let mut pre = Vec::new();
        let mut dec = Vec::new();
        for _ in 0..o.reps {
            let (p, d) = run_once(model, o.prompt, o.decode)?;
            pre.push(p);
            dec.push(d);
        }
        let (p, d) = (median(pre), median(dec));
        let bytes = model.weights.bytes_per_token() as f64;
        let floor = bytes / bw;
        println!(
            "| {name} | {:.1} MB | {:.2} | {:.2} | {:.1} | {:.0}% | {:.1} |",
            bytes / 1e6,
            floor * 1e3,
            d * 1e3,
            1.0 / d,
            floor / d * 100.0,
            o.prompt as f64 / p
        );
    }
    if let Some(n) = o.batch {
        println!();
        println!(
            "batched decode: {n} sequences, {} tokens of context each, {} steps, median of {}, KV cache {}",
            o.prompt, o.decode, o.reps, o.kv_dtype
        );
        println!("| variant | ms/step | ms/token | tok/s |");
        println!("|---|---|---|---|");
        for (name, model) in &variants {
            let steps: Vec<f64> = (0..o.reps)
                .map(|_| run_batch(model, n, o.prompt, o.decode, o.kv_dtype))
                .collect::<anyhow::Result<_>>()?;
            let d = median(steps);
            println!(
                "| {name} | {:.2} | {:.3} | {:.1} |",
                d * 1e3,
                d * 1e3 / n as f64,
                n as f64 / d
            );
        }
    }
    Ok(())
}
