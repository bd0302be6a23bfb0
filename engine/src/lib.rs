//! The engine: requests in, tokens out. Today: sampling with penalties,
//! incremental detokenization and stop strings; the scheduler, paged block
//! manager and executors follow.

pub mod detokenizer;
pub mod sampling;
pub mod stop;

pub use detokenizer::Utf8Stream;
pub use sampling::{argmax, Sampler, SamplingError, SamplingParams};
pub use stop::{StopError, StopMatcher, StopStep};
