//! The engine: requests in, tokens out. Today: sampling and incremental
//! detokenization; the scheduler, paged block manager and executors follow.

pub mod detokenizer;
pub mod sampling;

pub use detokenizer::Utf8Stream;
pub use sampling::{argmax, Sampler, SamplingError, SamplingParams};
