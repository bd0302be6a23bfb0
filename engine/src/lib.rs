//! The engine: requests in, tokens out.
//!
//! [`EngineHandle`] runs an [`EngineCore`] on its own thread: every step the
//! [`Scheduler`] plans a batch over the paged KV cache ([`BlockManager`], with
//! prefix caching), an [`Executor`] backend runs it, and the core samples,
//! detokenizes, applies stop rules and sends [`TokenEvent`]s.

pub mod block_manager;
pub mod core;
pub mod detokenizer;
pub mod executor;
pub mod handle;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod stop;
pub mod testing;

pub use block_manager::{BlockManager, PrefixCacheStats, SeqBlocks};
pub use core::{EngineConfig, EngineCore, RequestLimits, StepReport, SubmitError};
pub use detokenizer::Utf8Stream;
pub use executor::{
    Batch, BatchSeq, Capabilities, CpuExecutor, Executor, ExecutorError, StepOutput,
};
pub use handle::{EngineHandle, EngineStats, RequestStream};
pub use request::{GenerateRequest, StopReason, TokenEvent, Usage};
pub use sampling::{
    argmax, logprobs, Sampler, SamplingError, SamplingParams, TokenLogprobs, MAX_TOP_LOGPROBS,
};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerOutput, SeqId};
pub use stop::{StopError, StopMatcher, StopStep};
