//! The two ceilings every CUDA kernel is judged against, measured on this GPU:
//! HBM bandwidth (device-to-device copy, counting read + write; and a
//! read-only streaming kernel) and the bf16 GEMM rate through
//! `factory_kernels::cuda::Gemm::linear_bf16` (cuBLASLt) at 8192³ and at
//! Llama-3.1-8B's decode/prefill shapes, with the weight bandwidth small-m
//! products reach.
//!
//! `cargo run --release -p factory-benches --features cuda --bin gpu_ceilings [-- --json out.json]`
//!
//! Without `--features cuda` it says so and exits 2; with it but no GPU (or no
//! libcuda / libcublasLt) it prints why and exits 1.

use std::process::ExitCode;

#[cfg(not(feature = "cuda"))]
fn main() -> ExitCode {
    eprintln!(
        "gpu_ceilings needs the CUDA backend: \
         cargo run --release -p factory-benches --features cuda --bin gpu_ceilings"
    );
    ExitCode::from(2)
}

#[cfg(feature = "cuda")]
fn main() -> ExitCode {
    match ceilings::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_ceilings: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "cuda")]
mod ceilings {
    use std::path::PathBuf;

    use anyhow::{Context, Result};
    use clap::Parser;
    use factory_benches::gpu::{
        copy_bandwidth, open_device, random_bf16, read_bandwidth, time_calls, write_json, Timing,
    };
    use factory_kernels::cuda::Gemm;
    use serde_json::json;

    #[derive(Parser, Debug)]
    #[command(about = "HBM bandwidth and bf16 GEMM ceilings of the first GPU")]
    struct Args {
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Size of the copy / read buffers in GiB.
        #[arg(long, default_value_t = 2.0)]
        copy_gib: f64,
        /// Timed repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Only the square GEMM and m = 1, 256 (a quick check).
        #[arg(long)]
        quick: bool,
    }

    /// Llama-3.1-8B's projections as (name, n = out, k = in).
    const LLAMA_8B: [(&str, usize, usize); 5] = [
        ("q/o 4096x4096", 4096, 4096),
        ("qkv 6144x4096", 6144, 4096),
        ("gate+up 28672x4096", 28672, 4096),
        ("down 4096x14336", 4096, 14336),
        ("lm_head 128256x4096", 128256, 4096),
    ];
    const MS: [usize; 5] = [1, 8, 64, 256, 4096];
    /// Small-m products rotate through copies of the weight adding up to this,
    /// so weights come from HBM (H100's L2 is 50 MB), as in a real forward pass.
    const ROTATE_BYTES: usize = 512 << 20;

    pub fn run() -> Result<()> {
        let args = Args::parse();
        let dev = open_device()?;
        let s = dev.stream.clone();
        let bytes = (args.copy_gib.max(1.0 / 1024.0) * (1u64 << 30) as f64) as usize;

        let (ct, copy_gbps) = copy_bandwidth(&dev, bytes, args.reps).context("copy ceiling")?;
        println!(
            "HBM copy  {:>6.2} GiB x2 (read+write): {:>8.1} GB/s  (median {:.1} us, best {:.1} us)",
            args.copy_gib, copy_gbps, ct.median_us, ct.min_us
        );
        let read = match read_bandwidth(&dev, bytes, args.reps) {
            Ok((rt, gbps)) => {
                println!(
                    "HBM read  {:>6.2} GiB (read only):     {:>8.1} GB/s  (median {:.1} us)",
                    args.copy_gib, gbps, rt.median_us
                );
                json!({ "gbps": gbps, "timing": rt })
            }
            Err(e) => {
                println!("HBM read: skipped ({e:#})");
                json!({ "skipped": format!("{e:#}") })
            }
        };

        let gemm = Gemm::new(s.clone()).context("cuBLASLt")?;
        let mut shapes: Vec<(String, usize, usize, usize, bool)> =
            vec![("square 8192^3".into(), 8192, 8192, 8192, false)];
        for (name, n, k) in LLAMA_8B {
            for m in MS {
                if args.quick && m != 1 && m != 256 {
                    continue;
                }
                shapes.push((name.into(), m, n, k, false));
            }
        }
        // The logits head writes f32.
        for m in [1usize, 64, 256] {
            shapes.push(("lm_head f32 out".into(), m, 128256, 4096, true));
        }

        println!();
        println!(
            "{:<22} {:>5} {:>7} {:>6} {:>10} {:>9} {:>10} {:>7}",
            "bf16 GEMM y=x·wᵀ", "m", "n", "k", "median us", "TFLOP/s", "weight GB/s", "% copy"
        );
        let mut rows = Vec::new();
        let mut cur: Option<((usize, usize), Vec<_>)> = None;
        for (name, m, n, k, f32_out) in shapes {
            // One set of weight copies per (n, k), reused across m.
            let w_bytes = n * k * 2;
            if cur.as_ref().map(|c| c.0) != Some((n, k)) {
                drop(cur.take()); // free the previous weights first
                let copies = ROTATE_BYTES.div_ceil(w_bytes).clamp(1, 16);
                let ws = (0..copies)
                    .map(|_| random_bf16(&s, n * k, 1.0 / (k as f32).sqrt()))
                    .collect::<Result<Vec<_>>>()?;
                cur = Some(((n, k), ws));
            }
            let ws = &cur.as_ref().context("weights")?.1;
            let x = random_bf16(&s, m * k, 1.0)?;
            let t: Timing = if f32_out {
                let mut y = s.alloc_zeros::<f32>(m * n)?;
                time_calls(&s, 3, args.reps, |i| {
                    Ok(gemm.linear_bf16_f32(&x, &ws[i % ws.len()], &mut y, m, n, k)?)
                })?
            } else {
                let mut y = s.alloc_zeros::<half::bf16>(m * n)?;
                time_calls(&s, 3, args.reps, |i| {
                    Ok(gemm.linear_bf16(&x, &ws[i % ws.len()], &mut y, m, n, k)?)
                })?
            };
            let tflops = 2.0 * (m * n * k) as f64 / t.secs() / 1e12;
            let wgbps = w_bytes as f64 / t.secs() / 1e9;
            // Both figures are bytes moved per second (the copy counts its reads
            // and its writes), so a weight-streaming product can approach 100%.
            let pct = 100.0 * wgbps / copy_gbps;
            println!(
                "{:<22} {:>5} {:>7} {:>6} {:>10.1} {:>9.1} {:>10.1} {:>6.0}%",
                name, m, n, k, t.median_us, tflops, wgbps, pct
            );
            rows.push(json!({
                "name": name, "m": m, "n": n, "k": k, "out": if f32_out { "f32" } else { "bf16" },
                "timing": t, "tflops": tflops, "weight_gbps": wgbps, "pct_of_copy": pct,
                "weight_copies": ws.len(),
            }));
        }
        println!("\ncuBLASLt plans cached: {}", gemm.cached_plans());

        if let Some(path) = &args.json {
            let out = json!({
                "device": dev.name,
                "capability": [dev.capability.0, dev.capability.1],
                "sm_count": dev.sm_count,
                "copy": { "bytes": bytes, "gbps_read_plus_write": copy_gbps, "timing": ct },
                "read": read,
                "gemm_bf16": rows,
            });
            write_json(path, &out)?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}
