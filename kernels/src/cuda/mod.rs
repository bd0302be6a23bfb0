//! The CUDA backend's kernels: device discovery, NVRTC compilation with a disk
//! cache, launchers for the kernels in kernels/cuda/*.cu, and cuBLASLt GEMMs.
//!
//! Everything loads libcuda, libnvrtc and libcublasLt at run time (cudarc's dynamic loading),
//! so this builds on machines without CUDA; at run time a missing library or
//! device is a [`CudaError`], never a panic.

pub mod device;
mod error;
pub mod gemm;
pub mod module_cache;
pub mod nvrtc;
pub mod ops;
pub mod ops_util;

pub use device::{device_count, CudaDevice};
pub use error::CudaError;
pub use gemm::{Gemm, CUBLASLT_LIB_ENV};
pub use module_cache::{default_cache_dir, ModuleCache};
pub use nvrtc::{CompileOptions, Compiled, Nvrtc, NVRTC_LIB_ENV};
pub use ops::{CudaKernels, DevicePtrDyn};
pub use ops_util::UtilKernels;

/// cudarc's device-side types, re-exported for callers of the launchers.
pub use cudarc::driver::{
    CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
};

/// cudarc itself, for what the re-exports above do not cover (pinned host
/// memory, memory info).
pub use cudarc;
