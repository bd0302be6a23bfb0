//! Compute kernels for factory. Kernels know buffers, shapes and dtypes; nothing
//! about models, requests or HTTP.

pub mod cpu;
pub mod cuda_sources;
pub mod cuda_twin;

#[cfg(feature = "cuda")]
pub mod cuda;
