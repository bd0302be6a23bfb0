//! CPU kernels: scalar references plus SIMD paths chosen at run time.

pub mod activation;
pub mod attention;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod rope;
pub mod simd;
pub mod weight;

pub use activation::{silu_mul_inplace, softmax_inplace};
pub use attention::{
    paged_attention, write_kv, AttentionShape, KvDType, KvData, KvElement, KvLayerView,
    SeqAttention, UnknownKvDType,
};
pub use matmul::{matmul, matmul_many, ActivationMode};
pub use norm::rms_norm;
pub use rope::{apply_rope, RopeAngles, RopeStyle, RopeTable};
pub use simd::{Isa, Kernels};
pub use weight::{WeightDType, WeightError, WeightMatrix};
