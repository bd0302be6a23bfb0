//! Shared helpers of the GPU benchmarks (`gpu_ceilings`, `gpu_kernels_bench`):
//! opening the device, CUDA-event timing, filling device buffers, and the
//! memory ceilings (device-to-device copy, read-only streaming).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use factory_kernels::cuda::{default_cache_dir, CudaDevice, CudaKernels, ModuleCache, Nvrtc};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The first GPU, set up for single-stream benchmarking: everything here runs
/// on the device's one stream, so cudarc's per-buffer event tracking (an event
/// record per argument per launch) is switched off.
pub fn open_device() -> Result<CudaDevice> {
    let dev = CudaDevice::open(0).context("no usable CUDA device (GPU benchmarks need one)")?;
    // SAFETY: every buffer and launch of the benchmarks uses `dev.stream` only.
    unsafe { dev.ctx.disable_event_tracking() };
    eprintln!(
        "GPU: {} (sm_{}{}), {} SMs, {:.1} GiB",
        dev.name,
        dev.capability.0,
        dev.capability.1,
        dev.sm_count,
        dev.total_memory as f64 / (1u64 << 30) as f64
    );
    Ok(dev)
}

/// NVRTC and every kernel of kernels/cuda for `dev` (compiled or from the disk cache).
pub fn load_kernels(dev: &CudaDevice) -> Result<CudaKernels> {
    let nvrtc = Nvrtc::load().context("NVRTC (set FACTORY_NVRTC_LIB to libnvrtc.so.13)")?;
    let cache = ModuleCache::new(default_cache_dir());
    CudaKernels::load(dev, &nvrtc, &cache).context("loading the CUDA kernels")
}

/// Time per call: the median and best over the timed repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub median_us: f64,
    pub min_us: f64,
    /// Timed repetitions.
    pub reps: usize,
    /// Calls inside each timed repetition (more than one when a call is short).
    pub calls_per_rep: usize,
}

impl Timing {
    /// Median seconds per call.
    pub fn secs(&self) -> f64 {
        self.median_us * 1e-6
    }
}

/// Each timed repetition lasts at least this long, so event resolution and
/// launch gaps do not dominate; shorter calls are repeated inside it.
const MIN_REP_US: f64 = 200.0;

/// Times `f` with CUDA events on `stream`: warm-up, then `reps` repetitions of
/// `k` calls each (`k` chosen so a repetition takes ~200 us), median per call.
/// `f` gets a running call index (to rotate through buffers). Calls shorter
/// than a kernel launch (~3-5 us) measure the launch rate: that is what they
/// cost without CUDA graphs.
pub fn time_calls(
    stream: &Arc<CudaStream>,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Timing> {
    let mut i = 0usize;
    let mut call = |n: usize, i: &mut usize| -> Result<()> {
        for _ in 0..n {
            f(*i)?;
            *i += 1;
        }
        Ok(())
    };
    call(warmup.max(1), &mut i)?;
    let once = time_rep(stream, || call(1, &mut i))?;
    let k = ((MIN_REP_US / once.max(0.5)).ceil() as usize).clamp(1, 1000);
    let mut per_call = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        per_call.push(time_rep(stream, || call(k, &mut i))? / k as f64);
    }
    per_call.sort_by(f64::total_cmp);
    Ok(Timing {
        median_us: per_call[per_call.len() / 2],
        min_us: per_call[0],
        reps: per_call.len(),
        calls_per_rep: k,
    })
}

/// Microseconds between events recorded around `f`'s work on `stream`.
fn time_rep(stream: &Arc<CudaStream>, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(flags)?;
    f()?;
    let end = stream.record_event(flags)?;
    Ok(f64::from(start.elapsed_ms(&end)?) * 1e3)
}

/// A device buffer of `n` values drawn by `gen` (a host pattern of up to 4M
/// values, tiled on the device: fast for GiB-sized buffers).
pub fn device_fill<T: DeviceRepr + ValidAsZeroBits + Copy>(
    stream: &Arc<CudaStream>,
    n: usize,
    mut gen: impl FnMut(&mut rand::rngs::StdRng) -> T,
) -> Result<CudaSlice<T>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ n as u64);
    let pat_len = n.clamp(1, 1 << 22);
    let pattern: Vec<T> = (0..pat_len).map(|_| gen(&mut rng)).collect();
    let pat = stream.clone_htod(&pattern)?;
    let mut out = stream.alloc_zeros::<T>(n)?;
    let mut at = 0;
    while at < n {
        let len = pat_len.min(n - at);
        stream.memcpy_dtod(&pat.slice(..len), &mut out.slice_mut(at..at + len))?;
        at += len;
    }
    Ok(out)
}

/// Random bf16 values in [-scale, scale).
pub fn random_bf16(
    stream: &Arc<CudaStream>,
    n: usize,
    scale: f32,
) -> Result<CudaSlice<half::bf16>> {
    device_fill(stream, n, |r| {
        half::bf16::from_f32(r.random_range(-1.0f32..1.0) * scale)
    })
}

/// The copy ceiling: device-to-device copies of `bytes`, GB/s counting read + write.
pub fn copy_bandwidth(dev: &CudaDevice, bytes: usize, reps: usize) -> Result<(Timing, f64)> {
    let s = &dev.stream;
    let src = device_fill(s, bytes, |r| r.random::<u8>())?;
    let mut dst = s.alloc_zeros::<u8>(bytes)?;
    let t = time_calls(s, 2, reps, |_| Ok(s.memcpy_dtod(&src, &mut dst)?))?;
    Ok((t, 2.0 * bytes as f64 / t.secs() / 1e9))
}

/// Streams `n` 16-byte words and folds them into one word per thread; writes
/// only when the fold hits a magic value, so the loads cannot be dropped.
const READ_KERNEL: &str = r#"
extern "C" __global__ void read_fold(const uint4* __restrict__ p, unsigned long long n,
                                     unsigned int* out) {
    unsigned int acc = 0;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    #pragma unroll 4
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        uint4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) out[0] = acc;
}
"#;

fn read_kernel(dev: &CudaDevice) -> Result<CudaFunction> {
    // Loading goes through factory's NVRTC loader (never cudarc's panic).
    Nvrtc::load().context("NVRTC for the read kernel")?;
    // PTX for the floor architecture, JIT-compiled by the driver for this GPU.
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(READ_KERNEL, opts)
        .context("compiling the read kernel")?;
    Ok(dev.ctx.load_module(ptx)?.load_function("read_fold")?)
}

/// The read ceiling: a streaming read of `bytes`, GB/s.
pub fn read_bandwidth(dev: &CudaDevice, bytes: usize, reps: usize) -> Result<(Timing, f64)> {
    let f = read_kernel(dev)?;
    let s = &dev.stream;
    let words = bytes / 16;
    if words == 0 {
        bail!("read benchmark needs at least 16 bytes");
    }
    let buf = device_fill(s, words * 4, |r| r.random::<u32>())?;
    let mut out = s.alloc_zeros::<u32>(1)?;
    let n = words as u64;
    let cfg = LaunchConfig {
        grid_dim: (dev.sm_count * 8, 1, 1),
        block_dim: (512, 1, 1),
        shared_mem_bytes: 0,
    };
    let t = time_calls(s, 2, reps, |_| {
        let mut b = s.launch_builder(&f);
        b.arg(&buf).arg(&n).arg(&mut out);
        // SAFETY: the buffer holds `n` 16-byte words; `out` holds one u32.
        unsafe { b.launch(cfg) }?;
        Ok(())
    })?;
    Ok((t, (words * 16) as f64 / t.secs() / 1e9))
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
