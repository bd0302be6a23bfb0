//! factory's server library: the Bedrock Runtime API (and an OpenAI-compatible
//! API under `/v1`) over HTTP.
//!
//! [`Service`] answers the Bedrock routes for one or more [`ServedModel`]s (an
//! engine plus its tokenizer and chat template), each in a [`ModelSlot`] that
//! may still be loading; `factory serve` runs it, and gateways can mount it in
//! their own hyper servers.
#![warn(missing_docs)]

pub mod api;
pub mod bedrock;
pub mod config;
pub mod credentials;
pub mod health;
pub mod http;
pub mod in_flight;
pub mod model_id;
pub mod model_limits;
pub mod model_slot;
pub mod observability;
pub mod openai;
pub mod prompt;
pub mod served_model;
pub mod service;
pub mod tools;

pub use model_id::Family;
pub use model_limits::ModelLimits;
pub use model_slot::{ModelSlot, ModelState};
pub use served_model::ServedModel;
pub use service::{Auth, Service, ServiceConfig};
