//! Benchmarks for factory: shared measurement helpers; the benchmarks are the
//! binaries in `src/bin/`. [`loadgen`] is the library behind `factory-bench`,
//! the load generator for a running server.

#[cfg(feature = "cuda")]
pub mod gpu;
pub mod loadgen;
/// Per-request progress of the offline (in-process engine) benchmarks.
pub mod offline;
/// Decode roofline arithmetic for the GPU benchmarks.
pub mod roofline;

use std::time::Instant;

use rayon::prelude::*;

/// Measured DRAM read bandwidth in bytes/s: the best of a few parallel sums
/// over a 2 GiB buffer (far beyond any cache), on all rayon threads.
pub fn dram_read_bandwidth() -> f64 {
    let n = (2usize << 30) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..4 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64());
    }
    best
}
