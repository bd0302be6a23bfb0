//! CPU twins of the CUDA kernels in kernels/cuda/*.cu (and of the cuBLASLt
//! products in `cuda::gemm`).
//!
//! Each twin has its kernel's contract (shapes, strides, layouts, bf16 in and
//! out with f32 arithmetic, rounding at the same points), written plainly. The
//! twins are tested here against the CPU backend's kernels and dense
//! references; with the `cuda` feature, tests/cuda_kernels.rs compares every GPU
//! kernel with its twin on random inputs.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod kv_cache;
pub mod linear;
pub mod norm;
pub mod rope;
pub mod sampling;
pub mod util;

pub use half::bf16;

/// Rounds f32 values to bf16 (round to nearest even, as the kernels do).
pub fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// Widens bf16 values to f32 (exact).
pub fn to_f32(x: &[bf16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}
