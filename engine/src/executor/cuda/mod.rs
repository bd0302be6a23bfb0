//! The CUDA backend: the model forward of models/src/forward.rs on one GPU,
//! with the KV cache in device memory. Options, KV sizing and batch planning
//! are plain host code (built and tested without the `cuda` feature); the
//! executor itself needs it.

mod options;
mod plan;

pub use options::{kv_bytes_per_block, plan_kv_blocks, CudaExecutorOptions, CudaStartup};
pub use plan::{plan_step, StepLimits, StepPlan};

#[cfg(feature = "cuda")]
mod executor;
#[cfg(feature = "cuda")]
mod weights;

#[cfg(feature = "cuda")]
pub use executor::{check_supported, CudaExecutor};
