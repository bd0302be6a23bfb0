//! What can go wrong on the CUDA path, as one error type.

use std::path::PathBuf;

use crate::cuda_sources::CudaArch;

/// A CUDA failure: missing libraries or devices, compilation, the driver, bad shapes.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "CUDA driver library not found (libcuda.so): install the NVIDIA driver, \
         or run without the CUDA backend"
    )]
    DriverLibraryNotFound,
    #[error(
        "NVRTC library not found (libnvrtc.so.*): install the CUDA toolkit or the \
         `nvidia-cuda-nvrtc` wheel and put its lib folder on LD_LIBRARY_PATH, or set \
         FACTORY_NVRTC_LIB to the library file"
    )]
    NvrtcLibraryNotFound,
    #[error(
        "cuBLASLt library not found (libcublasLt.so.*): install the CUDA toolkit or the \
         `nvidia-cublas` wheel and put its lib folder on LD_LIBRARY_PATH, or set \
         FACTORY_CUBLASLT_LIB to the library file"
    )]
    CublasLtLibraryNotFound,
    #[error("cannot load {path}: {reason}")]
    LoadLibrary { path: PathBuf, reason: String },
    #[error("no CUDA device with ordinal {ordinal} ({count} present)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("compute capability {major}.{minor} is below the supported floor 8.0 (Ampere)")]
    Unsupported { major: u32, minor: u32 },
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("NVRTC: {0}")]
    Nvrtc(#[from] cudarc::nvrtc::result::NvrtcError),
    #[error("{file} does not compile for {arch}:\n{log}")]
    Compile {
        file: &'static str,
        arch: CudaArch,
        log: String,
    },
    #[error("kernel cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad kernel launch: {0}")]
    Launch(String),
    #[error("cuBLASLt: {0}")]
    Gemm(String),
}
