//! Amazon Bedrock Runtime wire protocol: errors, event streams, request authentication.

pub mod error;

pub use error::{BedrockError, ErrorKind};
