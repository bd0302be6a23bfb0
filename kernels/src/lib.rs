//! Compute kernels for factory. Kernels know buffers, shapes and dtypes; nothing
//! about models, requests or HTTP.

pub mod cpu;
