//! factory's server library: the Bedrock Runtime protocol building blocks.
#![warn(missing_docs)]

pub mod bedrock;
