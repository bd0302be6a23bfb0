//! Model families, loading, tokenization and the forward pass.

pub mod bundle;
pub mod chat_template;
pub mod config;
pub mod default_model;
pub mod forward;
pub mod gguf;
pub mod gguf_writer;
pub mod kv_cache;
pub mod loader;
pub mod tensor;
pub mod tensor_store;
pub mod tokenizer;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use factory_kernels::cpu::KvDType;
pub use forward::{ForwardError, ForwardOutput, LogitsRequest, Model, SeqInput};
pub use kv_cache::KvCache;
pub use loader::{open_model, LoadError, ModelFormat, OpenedModel};
