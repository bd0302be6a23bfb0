//! Amazon Bedrock Runtime wire protocol: errors, event streams, request authentication.

pub mod error;
pub mod eventstream;

pub use error::{BedrockError, ErrorKind};
