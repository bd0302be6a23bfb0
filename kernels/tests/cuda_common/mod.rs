//! Finding NVRTC and a GPU for the CUDA tests, with loud skips.
#![allow(dead_code)] // each test file uses a part

use std::io::Write;
use std::path::{Path, PathBuf};

use factory_kernels::cuda::gemm::cublaslt_present_from;
use factory_kernels::cuda::{
    CudaDevice, CudaKernels, Gemm, ModuleCache, Nvrtc, CUBLASLT_LIB_ENV, NVRTC_LIB_ENV,
};

/// `libnvrtc.so.N` under `dir`, searched a few levels deep (the wheel puts it in
/// nvidia/cuNN/lib/).
fn find_nvrtc(dir: &Path, depth: usize) -> Option<PathBuf> {
    find_lib(dir, "libnvrtc.so.", depth)
}

/// The first `PREFIX*` file under `dir`, searched `depth` levels deep.
fn find_lib(dir: &Path, prefix: &str, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in &entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file() && name.starts_with(prefix) {
            return Some(p.clone());
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_lib(p, prefix, depth - 1))
}

pub fn nvrtc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(NVRTC_LIB_ENV) {
        return Some(PathBuf::from(p));
    }
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cuda-wheels");
    find_nvrtc(&wheels, 4)
}

/// NVRTC, or None after a loud skip message (a failure when NVRTC is required).
/// Looks in `FACTORY_NVRTC_LIB`, target/cuda-wheels, then where `Nvrtc::load` looks.
pub fn nvrtc_or_skip(test: &str) -> Option<Nvrtc> {
    let path = nvrtc_path();
    let loaded = match &path {
        Some(p) => Nvrtc::load_from(Some(p)),
        None => Nvrtc::load(),
    };
    match loaded {
        Ok(n) => Some(n),
        Err(e) => {
            if std::env::var("FACTORY_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("NVRTC is required (FACTORY_REQUIRE_NVRTC=1) but did not load from {path:?}: {e}");
            }
            loud(&format!(
                "SKIPPED {test}: NVRTC not available ({e}); \
                 install it with scripts/test.sh or set {NVRTC_LIB_ENV}"
            ));
            None
        }
    }
}

/// The first GPU with every kernel loaded, or None after a loud skip message.
pub fn gpu_or_skip(test: &str) -> Option<(CudaDevice, CudaKernels)> {
    let device = match CudaDevice::open(0) {
        Ok(d) => d,
        Err(e) => {
            loud(&format!("SKIPPED {test}: no CUDA device ({e})"));
            return None;
        }
    };
    // A GPU without a compiler is a broken setup, not a reason to skip.
    let path = nvrtc_path();
    let nvrtc = match &path {
        Some(p) => Nvrtc::load_from(Some(p)),
        None => Nvrtc::load(),
    }
    .unwrap_or_else(|e| panic!("{test}: a GPU is present but NVRTC did not load ({e})"));
    let cache = ModuleCache::new(
        std::env::temp_dir().join(format!("factory-cuda-test-kernels-{}", std::process::id())),
    );
    let kernels = CudaKernels::load(&device, &nvrtc, &cache)
        .unwrap_or_else(|e| panic!("loading kernels: {e}"));
    eprintln!(
        "GPU: {} (sm_{}{}), {} SMs, NVRTC {:?}",
        device.name,
        device.capability.0,
        device.capability.1,
        device.sm_count,
        nvrtc.version()
    );
    Some((device, kernels))
}

/// Writes straight to stderr, past the test harness's output capture, so a
/// skip is visible in a normal `cargo test` run.
pub fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n********** {msg} **********");
}

/// A cuBLASLt product runner on the first GPU, or None after a loud skip
/// message. libcublasLt comes from `FACTORY_CUBLASLT_LIB`, target/cuda-wheels
/// (the `nvidia-cublas` wheel) or the system; a GPU without it is a failure.
pub fn gemm_or_skip(test: &str) -> Option<(CudaDevice, Gemm)> {
    let device = match CudaDevice::open(0) {
        Ok(d) => d,
        Err(e) => {
            loud(&format!("SKIPPED {test}: no CUDA device ({e})"));
            return None;
        }
    };
    let path = std::env::var_os(CUBLASLT_LIB_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cuda-wheels");
            find_lib(&wheels, "libcublasLt.so.", 4)
        });
    cublaslt_present_from(path.as_deref())
        .unwrap_or_else(|e| panic!("{test}: a GPU is present but cuBLASLt did not load ({e})"));
    let gemm =
        Gemm::new(device.stream.clone()).unwrap_or_else(|e| panic!("{test}: cuBLASLt handle: {e}"));
    eprintln!(
        "GPU: {} (sm_{}{}), cuBLASLt loaded",
        device.name, device.capability.0, device.capability.1
    );
    Some((device, gemm))
}
