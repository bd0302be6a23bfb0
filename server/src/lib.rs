//! factory's server library: the Bedrock Runtime API (and an OpenAI-compatible
//! API under `/v1`) over HTTP.
//!
//! [`Service`] answers the Bedrock routes for a [`ServedModel`] (an engine plus
//! its tokenizer and chat template); `factory serve` runs it, and gateways can
//! mount it in their own hyper servers.
#![warn(missing_docs)]

pub mod api;
pub mod bedrock;
pub mod config;
pub mod credentials;
pub mod http;
pub mod model_id;
pub mod openai;
pub mod prompt;
pub mod served_model;
pub mod service;

pub use model_id::Family;
pub use served_model::ServedModel;
pub use service::{Auth, Service, ServiceConfig};
