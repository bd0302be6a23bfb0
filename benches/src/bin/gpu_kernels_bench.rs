//! Times every kernel of kernels/cuda (launchers in `factory_kernels::cuda::ops`)
//! at Llama-3.1-8B's shapes (hidden 4096, 32 heads, 8 KV heads, head_dim 128,
//! ffn 14336, vocab 128256; bf16 KV cache, block size 16) and prints time,
//! bytes moved, achieved GB/s and its share of the device-to-device copy
//! bandwidth measured in the same run, beside kernels/cuda/NOTES.md's
//! prediction. Decode attention is the benchmark 3: batch 1/8/64/256 x
//! context 512..32768 (bounded by `--max-kv-gib`), random block tables;
//! its bandwidth is KV bytes read / time.
//!
//! `cargo run --release -p factory-benches --features cuda --bin gpu_kernels_bench [-- --json out.json]`
//!
//! Each figure is the median of `--reps` repetitions timed with CUDA events
//! after a warm-up; a repetition repeats a short call until it lasts ~200 us.
//! Small cases fit in the 50 MB L2 and may beat the HBM copy figure, and calls
//! shorter than a launch (~3-5 us) measure the launch rate.

use std::process::ExitCode;

#[cfg(not(feature = "cuda"))]
fn main() -> ExitCode {
    eprintln!(
        "gpu_kernels_bench needs the CUDA backend: \
         cargo run --release -p factory-benches --features cuda --bin gpu_kernels_bench"
    );
    ExitCode::from(2)
}

#[cfg(feature = "cuda")]
fn main() -> ExitCode {
    match bench::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_kernels_bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "cuda")]
mod bench {
    use std::path::PathBuf;
    use std::sync::Arc;

    use anyhow::Result;
    use clap::Parser;
    use factory_benches::gpu::{
        copy_bandwidth, device_fill, load_kernels, open_device, random_bf16, time_calls,
        write_json, Timing,
    };
    use factory_kernels::cuda::ops::{DecodeAttention, DecodeScratch, PrefillAttention, RopeShape};
    use factory_kernels::cuda::{CudaKernels, CudaSlice, CudaStream, DevicePtrDyn};
    use factory_kernels::cuda_twin::sampling::SampleParams;
    use half::bf16;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Value};

    #[derive(Parser, Debug)]
    #[command(about = "Times the CUDA kernels at Llama-3.1-8B shapes")]
    struct Args {
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Timed repetitions per case (the median is reported).
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Largest KV cache (K + V, one layer) to allocate for decode attention, GiB.
        #[arg(long, default_value_t = 33.0)]
        max_kv_gib: f64,
        /// Size of the copy-bandwidth buffers, GiB.
        #[arg(long, default_value_t = 1.0)]
        copy_gib: f64,
    }

    const HIDDEN: usize = 4096;
    const HEADS: usize = 32;
    const KV_HEADS: usize = 8;
    const HD: usize = 128;
    const KV_DIM: usize = KV_HEADS * HD;
    const FF: usize = 14336;
    const VOCAB: usize = 128256;
    const BLOCK: usize = 16;
    const TOKENS: [usize; 5] = [1, 8, 64, 256, 4096];

    /// Results as they are printed, kept for the JSON.
    struct Report {
        copy_gbps: f64,
        rows: Vec<Value>,
    }

    impl Report {
        fn row(&mut self, kernel: &str, shape: String, t: Timing, bytes: f64, pred: &str) {
            let gbps = bytes / t.secs() / 1e9;
            let pct = 100.0 * gbps / self.copy_gbps;
            println!(
                "{:<16} {:<30} {:>10.1} {:>10.2} {:>9.1} {:>6.0}%  {}",
                kernel,
                shape,
                t.median_us,
                bytes / 1e6,
                gbps,
                pct,
                pred
            );
            self.rows.push(json!({
                "kernel": kernel, "shape": shape, "timing": t, "bytes": bytes,
                "gbps": gbps, "pct_of_copy": pct, "prediction": pred,
            }));
        }
    }

    fn i32s(v: &[usize]) -> Vec<i32> {
        v.iter().map(|&x| x as i32).collect()
    }

    pub fn run() -> Result<()> {
        let args = Args::parse();
        let dev = open_device()?;
        let k = load_kernels(&dev)?;
        let s = dev.stream.clone();
        let copy_bytes = (args.copy_gib.max(1.0 / 1024.0) * (1u64 << 30) as f64) as usize;
        let (ct, copy_gbps) = copy_bandwidth(&dev, copy_bytes, args.reps)?;
        println!(
            "copy bandwidth (read+write, {:.2} GiB): {copy_gbps:.1} GB/s (median {:.1} us)\n",
            args.copy_gib, ct.median_us
        );
        println!(
            "{:<16} {:<30} {:>10} {:>10} {:>9} {:>7}  NOTES.md prediction",
            "kernel", "shape", "median us", "MB moved", "GB/s", "% copy"
        );
        let mut rep = Report {
            copy_gbps,
            rows: Vec::new(),
        };
        let n = args.reps;
        elementwise(&k, &s, n, &mut rep)?;
        decode(&k, &s, n, dev.sm_count, args.max_kv_gib, &mut rep)?;
        prefill(&k, &s, n, &mut rep)?;
        sampling(&k, &s, n, &mut rep)?;

        if let Some(path) = &args.json {
            write_json(
                path,
                &json!({
                    "device": dev.name,
                    "capability": [dev.capability.0, dev.capability.1],
                    "copy": { "bytes": copy_bytes, "gbps_read_plus_write": copy_gbps, "timing": ct },
                    "kernels": rep.rows,
                }),
            )?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }

    fn elementwise(k: &CudaKernels, s: &Arc<CudaStream>, n: usize, rep: &mut Report) -> Result<()> {
        let mut r = rand::rngs::StdRng::seed_from_u64(1);
        let table = random_bf16(s, VOCAB * HIDDEN, 1.0)?;
        let norm_w = random_bf16(s, HIDDEN, 1.0)?;
        let inv_freq: Vec<f32> = (0..HD / 2)
            .map(|i| 500000f32.powf(-((2 * i) as f32) / HD as f32))
            .collect();
        let inv_freq = s.clone_htod(&inv_freq)?;
        let max_t = TOKENS[TOKENS.len() - 1];
        // A KV cache with room for the largest batch, slots at random.
        let cache_slots = 4 * max_t;
        let mut kc = s.alloc_zeros::<bf16>(cache_slots * KV_DIM)?;
        let mut vc = s.alloc_zeros::<bf16>(cache_slots * KV_DIM)?;
        for t in TOKENS {
            let tokens: Vec<u32> = (0..t).map(|_| r.random_range(0..VOCAB as u32)).collect();
            let tokens = s.clone_htod(&tokens)?;
            let mut emb = s.alloc_zeros::<f32>(t * HIDDEN)?;
            let tm = time_calls(s, 3, n, |_| {
                Ok(k.embedding_gather(&table, VOCAB, HIDDEN, &tokens, &mut emb)?)
            })?;
            let pred = if t == 256 { "launch-bound, 3-5 us" } else { "" };
            rep.row(
                "embedding",
                format!("{t} tokens"),
                tm,
                (t * HIDDEN * 6) as f64,
                pred,
            );

            let mut res = device_fill(s, t * HIDDEN, |r| r.random_range(-2.0f32..2.0))?;
            let delta = random_bf16(s, t * HIDDEN, 1.0)?;
            let mut out = s.alloc_zeros::<bf16>(t * HIDDEN)?;
            let tm = time_calls(s, 3, n, |_| {
                let d: Option<&dyn DevicePtrDyn<bf16>> = Some(&delta);
                Ok(k.add_rms_norm(&mut res, d, &norm_w, 1e-5, &mut out)?)
            })?;
            let pred = match t {
                t if t >= 256 => "60-75% of copy",
                t if t < 64 => "launch-bound",
                _ => "",
            };
            rep.row(
                "add_rms_norm",
                format!("{t} x {HIDDEN}"),
                tm,
                (t * HIDDEN * 12) as f64,
                pred,
            );

            let stride = (HEADS + 2 * KV_HEADS) * HD;
            let mut qkv = random_bf16(s, t * stride, 1.0)?;
            let pos: Vec<i32> = (0..t).map(|_| r.random_range(0..8192)).collect();
            let pos = s.clone_htod(&pos)?;
            let shape = RopeShape {
                tokens: t,
                heads: HEADS,
                kv_heads: KV_HEADS,
                head_dim: HD,
                q_offset: 0,
                q_stride: stride,
                k_offset: HEADS * HD,
                k_stride: stride,
                rot_half: HD / 2,
                interleaved: false,
                attention_factor: 1.0,
                eps: 1e-6,
            };
            let tm = time_calls(s, 3, n, |_| {
                Ok(k.rope_qk(&mut qkv, &pos, &inv_freq, None, None, &shape)?)
            })?;
            let pred = if t >= 4096 {
                "40-60% of copy"
            } else {
                "launch-bound"
            };
            let bytes = (t * (HEADS + KV_HEADS) * HD * 4) as f64;
            rep.row(
                "rope_qk",
                format!("{t} tokens, 32q+8k heads"),
                tm,
                bytes,
                pred,
            );

            let gate_up = random_bf16(s, t * 2 * FF, 2.0)?;
            let mut act = s.alloc_zeros::<bf16>(t * FF)?;
            let up = gate_up.slice(FF..);
            let tm = time_calls(s, 3, n, |_| {
                Ok(k.silu_mul(&gate_up, &up, t, FF, 2 * FF, &mut act)?)
            })?;
            let pred = if t >= 256 { "75-85% of copy" } else { "" };
            rep.row(
                "silu_mul",
                format!("{t} x {FF}"),
                tm,
                (t * FF * 6) as f64,
                pred,
            );

            let mut slots: Vec<i32> = (0..cache_slots as i32).collect();
            slots.shuffle(&mut r);
            let slots = s.clone_htod(&slots[..t])?;
            let kv = random_bf16(s, t * 2 * KV_DIM, 1.0)?;
            let vv = kv.slice(KV_DIM..);
            let tm = time_calls(s, 3, n, |_| {
                Ok(k.write_kv(
                    &kv,
                    &vv,
                    2 * KV_DIM,
                    2 * KV_DIM,
                    KV_DIM,
                    &slots,
                    &mut kc,
                    &mut vc,
                )?)
            })?;
            let pred = if t <= 256 { "launch-bound" } else { "" };
            rep.row(
                "write_kv",
                format!("{t} tokens x {KV_DIM}"),
                tm,
                (t * KV_DIM * 8) as f64,
                pred,
            );
        }
        Ok(())
    }

    /// Shuffled block ids `0..num_blocks`: block tables that scatter over the cache.
    fn shuffled_blocks(num_blocks: usize, seed: u64) -> Vec<i32> {
        let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
        ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        ids
    }

    fn decode(
        k: &CudaKernels,
        s: &Arc<CudaStream>,
        n: usize,
        sm_count: u32,
        max_kv_gib: f64,
        rep: &mut Report,
    ) -> Result<()> {
        let block_bytes = BLOCK * KV_DIM * 2 * 2; // K + V
        let limit = (max_kv_gib * (1u64 << 30) as f64) as usize;
        let mut cases = Vec::new();
        for b in [1usize, 8, 64, 256] {
            for ctx in [512usize, 2048, 8192, 32768] {
                if b * ctx / BLOCK * block_bytes <= limit {
                    cases.push((b, ctx));
                } else {
                    println!(
                        "decode_attention b={b} ctx={ctx}: skipped, KV {:.1} GiB > --max-kv-gib {max_kv_gib}",
                        (b * ctx / BLOCK * block_bytes) as f64 / (1u64 << 30) as f64
                    );
                }
            }
        }
        let Some(num_blocks) = cases.iter().map(|&(b, c)| b * c / BLOCK).max() else {
            return Ok(());
        };
        let cache_len = num_blocks * BLOCK * KV_DIM;
        let kc = random_bf16(s, cache_len, 1.0)?;
        let vc = random_bf16(s, cache_len, 1.0)?;
        for (b, ctx) in cases {
            let max_blocks = ctx / BLOCK;
            let ids = shuffled_blocks(num_blocks, (b * ctx) as u64);
            let tables = s.clone_htod(&ids[..b * max_blocks])?;
            let lens = s.clone_htod(&i32s(&vec![ctx; b]))?;
            let q = random_bf16(s, b * HEADS * HD, 1.0)?;
            let mut out = s.alloc_zeros::<bf16>(b * HEADS * HD)?;
            let a = DecodeAttention {
                heads: HEADS,
                kv_heads: KV_HEADS,
                head_dim: HD,
                block_size: BLOCK,
                max_blocks,
                scale: 1.0 / (HD as f32).sqrt(),
                partition_size: DecodeAttention::choose_partition_size(
                    HEADS, KV_HEADS, b, ctx, sm_count,
                ),
            };
            let len = a.scratch_len(b, ctx);
            let mut scratch: DecodeScratch<CudaSlice<f32>, CudaSlice<f32>> = DecodeScratch {
                part_out: s.alloc_zeros::<f32>(len)?,
                part_max: s.alloc_zeros::<f32>(len / HD)?,
                part_sum: s.alloc_zeros::<f32>(len / HD)?,
            };
            let tm = time_calls(s, 3, n, |_| {
                Ok(k.paged_attention_decode(
                    &q,
                    HEADS * HD,
                    &kc,
                    &vc,
                    &tables,
                    &lens,
                    ctx,
                    &a,
                    Some(&mut scratch),
                    &mut out,
                )?)
            })?;
            let kv_bytes = (b * ctx * KV_DIM * 2 * 2) as f64;
            let pred = if b * ctx >= 64 * 1024 {
                "50-65% of copy"
            } else {
                ""
            };
            let shape = format!("b={b} ctx={ctx} part={}", a.partition_size);
            rep.row("decode_attn", shape, tm, kv_bytes, pred);
        }
        Ok(())
    }

    fn prefill(k: &CudaKernels, s: &Arc<CudaStream>, n: usize, rep: &mut Report) -> Result<()> {
        // (sequences, new tokens each, cached prefix each)
        let cases = [
            (1usize, 512usize, 0usize),
            (1, 2048, 0),
            (8, 512, 0),
            (4, 256, 1792),
        ];
        for (seqs, q_len, prefix) in cases {
            let ctx = prefix + q_len;
            let max_blocks = ctx.div_ceil(BLOCK);
            let num_blocks = seqs * max_blocks;
            let kc = random_bf16(s, num_blocks * BLOCK * KV_DIM, 1.0)?;
            let vc = random_bf16(s, num_blocks * BLOCK * KV_DIM, 1.0)?;
            let tables = s.clone_htod(&shuffled_blocks(num_blocks, ctx as u64))?;
            let total = seqs * q_len;
            let starts: Vec<usize> = (0..seqs).map(|i| i * q_len).collect();
            let (qs, ql, cl) = (
                s.clone_htod(&i32s(&starts))?,
                s.clone_htod(&i32s(&vec![q_len; seqs]))?,
                s.clone_htod(&i32s(&vec![ctx; seqs]))?,
            );
            let q = random_bf16(s, total * HEADS * HD, 1.0)?;
            let mut out = s.alloc_zeros::<bf16>(total * HEADS * HD)?;
            let a = PrefillAttention {
                heads: HEADS,
                kv_heads: KV_HEADS,
                head_dim: HD,
                block_size: BLOCK,
                max_blocks,
                scale: 1.0 / (HD as f32).sqrt(),
            };
            let tm = time_calls(s, 2, n, |_| {
                Ok(k.paged_attention_prefill(
                    &q,
                    HEADS * HD,
                    &kc,
                    &vc,
                    &tables,
                    &qs,
                    &ql,
                    &cl,
                    q_len,
                    total,
                    &a,
                    &mut out,
                )?)
            })?;
            // Causal: query i of a chunk sees prefix + i + 1 keys.
            let keys: usize = (0..q_len).map(|i| prefix + i + 1).sum::<usize>() * seqs;
            let tflops = 4.0 * (HEADS * HD * keys) as f64 / tm.secs() / 1e12;
            let bytes = (total * HEADS * HD * 4 + seqs * ctx * KV_DIM * 4) as f64;
            let pred = if (seqs, q_len, prefix) == (1, 512, 0) {
                "~94 us (3 ms / 32 layers)".to_owned()
            } else {
                String::new()
            };
            let shape = format!("{seqs}x{q_len} +{prefix} cached");
            rep.row(
                "prefill_attn",
                shape,
                tm,
                bytes,
                &format!("{tflops:.1} TFLOP/s; {pred}"),
            );
        }
        Ok(())
    }

    fn sampling(k: &CudaKernels, s: &Arc<CudaStream>, n: usize, rep: &mut Report) -> Result<()> {
        for rows in [1usize, 64, 256] {
            let logits = device_fill(s, rows * VOCAB, |r| r.random_range(-8.0f32..8.0))?;
            let mut tokens = s.alloc_zeros::<u32>(rows)?;
            for greedy in [true, false] {
                let params: Vec<SampleParams> = (0..rows)
                    .map(|i| SampleParams {
                        temperature: if greedy { 0.0 } else { 0.8 },
                        top_p: if greedy { 1.0 } else { 0.9 },
                        min_p: if greedy { 0.0 } else { 0.05 },
                        top_k: if greedy { 0 } else { 50 },
                        seed: 42 + i as u64,
                        counter: 0,
                    })
                    .collect();
                let p = s.clone_htod(&params)?;
                let tm = time_calls(s, 3, n, |_| {
                    Ok(k.sample(&logits, VOCAB, &p, &mut tokens)?)
                })?;
                let pred = match (rows, greedy) {
                    (256, false) => "300-600 us",
                    (256, true) => "~50 us",
                    (1, _) => "30-60 us",
                    _ => "",
                };
                let mode = if greedy {
                    "greedy"
                } else {
                    "t0.8 k50 p0.9 minp"
                };
                // One pass over the logits; full sampling makes several (L2 helps).
                rep.row(
                    "sample",
                    format!("{rows} x {VOCAB} {mode}"),
                    tm,
                    (rows * VOCAB * 4) as f64,
                    pred,
                );
            }
        }
        Ok(())
    }
}
