//! Amazon Bedrock Runtime wire protocol: errors, event streams, request authentication.

pub mod auth;
pub mod auth_error;
pub mod bearer;
pub mod error;
pub mod eventstream;
pub mod request;
pub mod sigv4;

pub use auth::{Authenticator, Principal};
pub use auth_error::AuthError;
pub use error::{BedrockError, ErrorKind};
pub use request::RequestParts;
