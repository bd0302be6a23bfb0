//! Micro-benchmark of the CPU matmul at SmolLM2-135M's shapes, next to the
//! machine's DRAM read bandwidth.
//!
//! `cargo run --release -p factory-benches --bin kernels_bench [-- --quick]`
//! (`--attention`: paged attention alone over f32 and f16 KV caches, decode
//! batches and prefill chunks)
//!
//! m=1 (decode) rotates through enough copies of each weight matrix to spill
//! every cache level ("cold", as in a real forward pass where the whole model
//! streams from DRAM once per token), and also reruns one copy ("hot").
//! m=64 (prefill) is compute bound and reuses one copy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use factory_kernels::cpu::quant::{
    quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0, BlockQ8, QK,
};
use factory_kernels::cpu::{matmul, ActivationMode, Kernels, WeightDType, WeightMatrix};

/// SmolLM2-135M: hidden 576, intermediate 1536, kv dim 192 (3 heads × 64), vocab 49152.
const SHAPES: [(&str, usize, usize); 5] = [
    ("q/o 576x576", 576, 576),
    ("k/v 192x576", 192, 576),
    ("gate/up 1536x576", 1536, 576),
    ("down 576x1536", 576, 1536),
    ("lm_head 49152x576", 49152, 576),
];

/// Bytes the cold runs rotate through: well past any last-level cache.
const COLD_BYTES: usize = 1 << 30;

struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        // xorshift64*, mapped to [-1, 1).
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        v as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

fn encode(dtype: WeightDType, w: &[f32], k: usize) -> Vec<u8> {
    let rows = w.chunks_exact(k);
    match dtype {
        WeightDType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        WeightDType::F16 => w
            .iter()
            .flat_map(|v| f32_to_f16_bits(*v).to_le_bytes())
            .collect(),
        WeightDType::BF16 => w
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        WeightDType::Q8_0 => rows.flat_map(quantize_row_q8_0).collect(),
        WeightDType::Q4_0 => rows.flat_map(quantize_row_q4_0).collect(),
        WeightDType::Q4_1 => rows.flat_map(quantize_row_q4_1).collect(),
    }
}

/// Good enough f16 for values in [-1, 1) (timing data only).
fn f32_to_f16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

/// Runs `f` until at least `min` has passed (after a warm-up), `reps` times;
/// returns the best mean time per call.
fn time_it(reps: usize, min: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let mut n = 0u32;
        while n == 0 || t.elapsed() < min {
            f();
            n += 1;
        }
        best = best.min(t.elapsed() / n);
    }
    best
}

/// This thread's CPU time: immune to time-slicing by other processes.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Like `time_it`, on this thread's CPU clock (single-threaded work only).
fn cpu_time_it(reps: usize, min: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = thread_cpu_time();
        let mut n = 0u32;
        while n == 0 || thread_cpu_time() - t < min {
            f();
            n += 1;
        }
        best = best.min((thread_cpu_time() - t) / n);
    }
    best
}

/// Reads a 1 GiB buffer on two threads with the library's best SIMD dot
/// (against a small vector of ones that stays in L1): the DRAM read ceiling.
fn dram_read_gbs() -> f64 {
    let floats = COLD_BYTES / 4;
    let buf: Vec<f32> = (0..floats).map(|i| (i & 0xff) as f32).collect();
    let ones = vec![1f32; 4096];
    let dot = Kernels::get().dot_plain;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(2);
    let run = || {
        let chunk = buf.len().div_ceil(threads);
        std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| {
                    let ones = &ones;
                    s.spawn(move || c.chunks(ones.len()).map(|p| dot(p, ones)).sum::<f32>())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum::<f32>()
        })
    };
    let t = time_it(5, Duration::from_millis(1), || {
        black_box(run());
    });
    COLD_BYTES as f64 / t.as_secs_f64() / 1e9
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 2 } else { 5 };
    let min = Duration::from_millis(if quick { 30 } else { 100 });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let isa = factory_kernels_isa();
    println!("kernels_bench: {threads} threads, kernels: {isa}");

    if std::env::args().any(|a| a == "--kernels") {
        kernel_table(reps, min);
        return;
    }
    if std::env::args().any(|a| a == "--overhead") {
        overhead(reps, min);
        return;
    }
    if std::env::args().any(|a| a == "--sweep") {
        m_sweep(reps, min);
        return;
    }
    if std::env::args().any(|a| a == "--attention") {
        attention(reps, min);
        return;
    }
    #[cfg(feature = "compare-gemm")]
    if std::env::args().any(|a| a == "--gemm") {
        compare_gemm(reps, min);
        return;
    }
    let dram = dram_read_gbs();
    println!("DRAM read (1 GiB, 2 threads, SIMD): {dram:.1} GB/s\n");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut arena = vec![0u8; COLD_BYTES];
    let dtypes = [
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::BF16,
        WeightDType::Q8_0,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
    ];
    println!(
        "{:<18} {:<5} {:<5} | {:>9} {:>7} {:>6} | {:>9} {:>7} | {:>9} {:>8}",
        "shape", "dtype", "mode", "m=1 cold", "GB/s", "%DRAM", "m=1 hot", "GB/s", "m=64", "GFLOP/s"
    );
    println!("{}", "-".repeat(104));
    // `--shape SUBSTRING` limits the table to matching shapes.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--shape")
        .and_then(|i| args.get(i + 1))
        .cloned();
    for &(name, n, k) in &SHAPES {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let w = rng.vec(n * k);
        let x1 = rng.vec(k);
        let x64 = rng.vec(64 * k);
        for dtype in dtypes {
            let bytes = encode(dtype, &w, k);
            let size = bytes.len();
            let copies = (COLD_BYTES / size).max(1);
            for c in arena.chunks_exact_mut(size).take(copies) {
                c.copy_from_slice(&bytes);
            }
            let modes: &[ActivationMode] = if dtype.is_quantized() {
                &[ActivationMode::Exact, ActivationMode::Fast]
            } else {
                &[ActivationMode::Exact]
            };
            for &mode in modes {
                let mat = |i: usize| WeightMatrix::new(dtype, n, k, &arena[i * size..][..size]);
                let Ok(hot) = mat(0) else {
                    eprintln!("bad matrix {name} {dtype:?}");
                    continue;
                };
                let mut out1 = vec![0f32; n];
                let mut i = 0;
                let cold = time_it(reps, min, || {
                    i = (i + 1) % copies;
                    if let Ok(m) = mat(i) {
                        matmul(&x1, 1, &m, &mut out1, mode);
                    }
                    black_box(&out1);
                });
                let hot1 = time_it(reps, min, || {
                    matmul(&x1, 1, &hot, &mut out1, mode);
                    black_box(&out1);
                });
                let mut out64 = vec![0f32; 64 * n];
                let t64 = time_it(reps, min, || {
                    matmul(&x64, 64, &hot, &mut out64, mode);
                    black_box(&out64);
                });
                let gbs = |t: Duration| size as f64 / t.as_secs_f64() / 1e9;
                let gflops = 2.0 * 64.0 * n as f64 * k as f64 / t64.as_secs_f64() / 1e9;
                println!(
                    "{:<18} {:<5} {:<5} | {:>7.1}us {:>7.1} {:>5.0}% | {:>7.1}us {:>7.1} | {:>7.1}us {:>8.1}",
                    name,
                    format!("{dtype:?}"),
                    format!("{mode:?}"),
                    us(cold),
                    gbs(cold),
                    gbs(cold) / dram * 100.0,
                    us(hot1),
                    gbs(hot1),
                    us(t64),
                    gflops
                );
            }
        }
    }
}

/// Which kernel set the library picked.
fn factory_kernels_isa() -> String {
    factory_kernels::cpu::Kernels::get().isa.to_string()
}

/// Single-thread, in-cache throughput of each row kernel for every
/// instruction set this CPU runs: the compute ceiling per core.
fn kernel_table(reps: usize, min: Duration) {
    let (rows, k) = (128, 1024);
    let mut rng = Rng(7);
    let w = rng.vec(rows * k);
    let x = rng.vec(k);
    let mut xq = vec![BlockQ8::default(); k / QK];
    if let Some(s) = Kernels::for_isa(factory_kernels::cpu::Isa::Scalar) {
        (s.quantize_q8)(&x, &mut xq);
    }
    let tables: Vec<&Kernels> = Kernels::available().collect();
    print!("{:<12}", "kernel");
    for t in &tables {
        print!(" {:>16}", format!("{} GB/s", t.isa));
    }
    println!("   (one thread, CPU time, weights in L2: {rows} rows x {k})");
    let dtypes = [
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::BF16,
        WeightDType::Q8_0,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
    ];
    for dtype in dtypes {
        let bytes = encode(dtype, &w, k);
        let rb = bytes.len() / rows;
        for fast in [false, true] {
            if fast && !dtype.is_quantized() {
                continue;
            }
            print!(
                "{:<12}",
                format!("{dtype:?}{}", if fast { " fast" } else { "" })
            );
            for t in &tables {
                let el = cpu_time_it(reps, min, || {
                    let mut s = 0f32;
                    for r in bytes.chunks_exact(rb) {
                        s += match (fast, t.q8_dot(dtype)) {
                            (true, Some(d)) => d(r, &xq),
                            _ => (t.f32_dot(dtype))(r, &x),
                        };
                    }
                    black_box(s);
                });
                print!(" {:>16.1}", bytes.len() as f64 / el.as_secs_f64() / 1e9);
            }
            println!();
        }
    }
    // Exact Q4 dots on prepared activations (where a table has them).
    for dtype in [WeightDType::Q4_0, WeightDType::Q4_1] {
        let bytes = encode(dtype, &w, k);
        let rb = bytes.len() / rows;
        print!("{:<12}", format!("{dtype:?} prep"));
        for t in &tables {
            let dot = match dtype {
                WeightDType::Q4_0 => t.dot_q4_0p,
                _ => t.dot_q4_1p,
            };
            let (Some(prep), Some(dot)) = (t.prepare_q4, dot) else {
                print!(" {:>16}", "-");
                continue;
            };
            let mut xp = vec![0f32; k / QK * factory_kernels::cpu::simd::PREPARED_Q4_BLOCK];
            prep(&x, &mut xp);
            let el = cpu_time_it(reps, min, || {
                let s: f32 = bytes.chunks_exact(rb).map(|r| dot(r, &xp)).sum();
                black_box(s);
            });
            print!(" {:>16.1}", bytes.len() as f64 / el.as_secs_f64() / 1e9);
        }
        println!();
    }
    // Activation quantization and dequantization, in GB/s of f32 touched.
    let xs = rng.vec(rows * k);
    let mut q = vec![BlockQ8::default(); rows * k / QK];
    print!("{:<12}", "quantize_q8");
    for t in &tables {
        let el = cpu_time_it(reps, min, || {
            (t.quantize_q8)(&xs, &mut q);
            black_box(&q);
        });
        print!(" {:>16.1}", (rows * k * 4) as f64 / el.as_secs_f64() / 1e9);
    }
    println!();
    let mut out = vec![0f32; rows * k];
    for dtype in [WeightDType::BF16, WeightDType::Q8_0, WeightDType::Q4_1] {
        let bytes = encode(dtype, &w, k);
        print!("{:<12}", format!("deq {dtype:?}"));
        for t in &tables {
            let Some(dq) = t.dequant(dtype) else { continue };
            let rb = bytes.len() / rows;
            let el = cpu_time_it(reps, min, || {
                for (r, o) in bytes.chunks_exact(rb).zip(out.chunks_exact_mut(k)) {
                    dq(r, o);
                }
                black_box(&out);
            });
            print!(" {:>16.1}", (rows * k * 4) as f64 / el.as_secs_f64() / 1e9);
        }
        println!();
    }
    // The prefill block product, 64 input rows x 64 f32 weight rows.
    let (m, c) = (64, 64);
    let xm = rng.vec(m * k);
    let wb: Vec<u8> = rng
        .vec(c * k)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let wr: Vec<&[u8]> = wb.chunks_exact(4 * k).collect();
    let mut o = vec![0f32; m * c];
    print!("{:<12}", "gemm GFLOP/s");
    for t in &tables {
        let el = cpu_time_it(reps, min, || {
            (t.gemm_rows)(&xm, k, &wr, &mut o);
            black_box(&o);
        });
        print!(
            " {:>16.1}",
            2.0 * (m * c * k) as f64 / el.as_secs_f64() / 1e9
        );
    }
    println!();
}

/// Time per call against the number of input rows, around the switch from
/// row dots to the block product.
fn m_sweep(reps: usize, min: Duration) {
    let mut rng = Rng(11);
    let ms = [1usize, 2, 3, 4, 6, 8, 16, 32, 64, 512];
    print!("{:<18} {:<5} {:<5}", "shape", "dtype", "mode");
    for m in ms {
        print!(" {:>9}", format!("m={m}"));
    }
    println!("   (us per call; per input row in brackets is t/m)");
    for &(name, n, k) in &SHAPES[..4] {
        let w = rng.vec(n * k);
        let x = rng.vec(512 * k);
        for dtype in [
            WeightDType::F32,
            WeightDType::BF16,
            WeightDType::Q8_0,
            WeightDType::Q4_1,
        ] {
            let bytes = encode(dtype, &w, k);
            let Ok(mat) = WeightMatrix::new(dtype, n, k, &bytes) else {
                continue;
            };
            let modes: &[ActivationMode] = if dtype.is_quantized() {
                &[ActivationMode::Exact, ActivationMode::Fast]
            } else {
                &[ActivationMode::Exact]
            };
            for &mode in modes {
                print!(
                    "{:<18} {:<5} {:<5}",
                    name,
                    format!("{dtype:?}"),
                    format!("{mode:?}")
                );
                for m in ms {
                    let mut out = vec![0f32; m * n];
                    let t = time_it(reps, min, || {
                        matmul(&x[..m * k], m, &mat, &mut out, mode);
                        black_box(&out);
                    });
                    print!(" {:>9.1}", us(t));
                }
                println!();
            }
        }
    }
}

/// Our f32 prefill product against the `gemm` crate on the same shapes.
#[cfg(feature = "compare-gemm")]
fn compare_gemm(reps: usize, min: Duration) {
    let mut rng = Rng(13);
    let threads = rayon::current_num_threads();
    println!(
        "{:<18} {:>5} | {:>12} {:>12}",
        "shape (f32)", "m", "ours GFLOP/s", "gemm GFLOP/s"
    );
    for &(name, n, k) in &SHAPES {
        let w = rng.vec(n * k);
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let Ok(mat) = WeightMatrix::new(WeightDType::F32, n, k, &bytes) else {
            continue;
        };
        for m in [16usize, 64, 256] {
            let x = rng.vec(m * k);
            let mut out = vec![0f32; m * n];
            let ours = time_it(reps, min, || {
                matmul(&x, m, &mat, &mut out, ActivationMode::Exact);
                black_box(&out);
            });
            let mut out2 = vec![0f32; m * n];
            let theirs = time_it(reps, min, || {
                // SAFETY: all pointers cover their m×k, n×k and m×n extents with
                // the strides given; `out2` is exclusively borrowed.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out2.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                };
                black_box(&out2);
            });
            let err = out
                .iter()
                .zip(&out2)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let gf = |t: Duration| 2.0 * (m * n * k) as f64 / t.as_secs_f64() / 1e9;
            println!(
                "{:<18} {:>5} | {:>12.1} {:>12.1}   (max |diff| {err:.1e})",
                name,
                m,
                gf(ours),
                gf(theirs)
            );
        }
    }
}

/// Fixed cost of one parallel matmul call, from outside the rayon pool and
/// from inside it (as a forward pass run under `ThreadPool::install` sees).
fn overhead(reps: usize, min: Duration) {
    let mut rng = Rng(17);
    for &(n, k) in &[(8usize, 64usize), (192, 576), (576, 576)] {
        let w = rng.vec(n * k);
        let bytes = encode(WeightDType::Q4_1, &w, k);
        let Ok(mat) = WeightMatrix::new(WeightDType::Q4_1, n, k, &bytes) else {
            continue;
        };
        let x = rng.vec(k);
        let mut out = vec![0f32; n];
        let outside = time_it(reps, min, || {
            matmul(&x, 1, &mat, &mut out, ActivationMode::Exact);
            black_box(&out);
        });
        let inside = rayon::scope(|_| {
            time_it(reps, min, || {
                matmul(&x, 1, &mat, &mut out, ActivationMode::Exact);
                black_box(&out);
            })
        });
        println!(
            "Q4_1 {n}x{k} m=1: {:.1} us from the main thread, {:.1} us inside the pool",
            us(outside),
            us(inside)
        );
    }
    // One SmolLM2-135M layer's seven decode matmuls (q, k, v, o, gate, up,
    // down), weights cold: what a forward pass pays per layer.
    let layer = [
        (576usize, 576usize),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    for dtype in [WeightDType::BF16, WeightDType::Q8_0] {
        let mats: Vec<Vec<u8>> = layer
            .iter()
            .map(|&(n, k)| encode(dtype, &rng.vec(n * k), k))
            .collect();
        let per_layer: usize = mats.iter().map(Vec::len).sum();
        let copies = (COLD_BYTES / per_layer).max(1);
        let arena: Vec<Vec<Vec<u8>>> = (0..copies).map(|_| mats.clone()).collect();
        let x = rng.vec(1536);
        let mut out = vec![0f32; 1536];
        let mut i = 0;
        let mut step = || {
            i = (i + 1) % copies;
            for (&(n, k), b) in layer.iter().zip(&arena[i]) {
                if let Ok(m) = WeightMatrix::new(dtype, n, k, b) {
                    matmul(&x[..k], 1, &m, &mut out[..n], ActivationMode::Exact);
                }
            }
            black_box(&out);
        };
        let outside = time_it(reps, min, &mut step);
        let inside = rayon::scope(|_| time_it(reps, min, &mut step));
        let gbs = |t: Duration| per_layer as f64 / t.as_secs_f64() / 1e9;
        println!(
            "one layer {dtype:?} (7 matmuls, {:.2} MB, cold): {:.1} us ({:.1} GB/s) from the main thread, {:.1} us ({:.1} GB/s) inside the pool",
            per_layer as f64 / 1e6,
            us(outside),
            gbs(outside),
            us(inside),
            gbs(inside)
        );
    }
}

/// Paged attention alone at SmolLM2-135M's shape (9 heads, 3 KV heads of
/// 64): decode steps of many sequences (one new token each) and prefill
/// chunks, as GFLOP/s (QK and PV) and the K/V bytes each call reads, over an
/// f32 and an f16 cache of the same values.
fn attention(reps: usize, min: Duration) {
    use factory_kernels::cpu::{
        paged_attention, write_kv, AttentionShape, KvDType, KvLayerView, SeqAttention,
    };
    let shape = AttentionShape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        scale: 0.125,
    };
    let (bs, qd, row) = (16, 9 * 64, 3 * 64);
    let mut rng = Rng(3);
    println!(
        "{:<26} | {:>9} {:>8} {:>9} | {:>9} {:>8} {:>9} | {:>7}",
        "case", "f32 time", "GFLOP/s", "K/V GB/s", "f16 time", "GFLOP/s", "K/V GB/s", "f16/f32"
    );
    // (label, sequences, new tokens each, context each)
    let cases = [
        ("decode 1 seq, ctx 192", 1, 1, 192usize),
        ("decode 32 seqs, ctx 192", 32, 1, 192),
        ("decode 64 seqs, ctx 192", 64, 1, 192),
        ("decode 8 seqs, ctx 2048", 8, 1, 2048),
        ("prefill 4 x 128 tokens", 4, 128, 128),
        ("prefill 1 x 512 tokens", 1, 512, 512),
    ];
    for (label, nseq, new, ctx) in cases {
        let blocks_per_seq = ctx.div_ceil(bs);
        let blocks = nseq * blocks_per_seq;
        let k = rng.vec(blocks * bs * row);
        let v = rng.vec(blocks * bs * row);
        let slots: Vec<usize> = (0..blocks * bs).collect();
        let mut hk = vec![half::f16::ZERO; k.len()];
        let mut hv = vec![half::f16::ZERO; v.len()];
        write_kv(&mut hk, &mut hv, &slots, &k, &v);
        let q = rng.vec(nseq * new * qd);
        // Each sequence's blocks interleaved with the others', as a busy cache.
        let tables: Vec<Vec<u32>> = (0..nseq)
            .map(|s| (0..blocks_per_seq).map(|b| (b * nseq + s) as u32).collect())
            .collect();
        let seqs: Vec<SeqAttention<'_>> = tables
            .iter()
            .enumerate()
            .map(|(s, t)| SeqAttention {
                q_start: s * new,
                q_len: new,
                context_len: ctx,
                block_table: t,
            })
            .collect();
        // Query i of a chunk sees ctx - new + i + 1 positions.
        let seen: usize = (0..new).map(|i| ctx - new + i + 1).sum::<usize>() * nseq;
        let flops = 4.0 * seen as f64 * qd as f64;
        let mut cols = Vec::new();
        let mut times = Vec::new();
        for dtype in KvDType::ALL {
            let view = match dtype {
                KvDType::F32 => KvLayerView::f32(&k, &v, bs),
                KvDType::F16 => KvLayerView::f16(&hk, &hv, bs),
            };
            let mut out = vec![0f32; q.len()];
            // Inside the pool, as the forward pass calls it (from outside,
            // every call would also pay for waking this thread).
            let t = rayon::scope(|_| {
                time_it(reps, min, || {
                    paged_attention(&q, &view, &seqs, shape, &mut out);
                    black_box(&out);
                })
            });
            let kv_bytes = 2.0 * (nseq * ctx * row * dtype.bytes()) as f64;
            cols.push(format!(
                "{:>7.1}us {:>8.1} {:>9.1}",
                us(t),
                flops / t.as_secs_f64() / 1e9,
                kv_bytes / t.as_secs_f64() / 1e9
            ));
            times.push(t.as_secs_f64());
        }
        println!(
            "{:<26} | {} | {} | {:>6.2}x",
            label,
            cols[0],
            cols[1],
            times[1] / times[0]
        );
    }
}
