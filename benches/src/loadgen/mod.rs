//! `factory-bench`: a load generator for a running server over the Bedrock
//! Runtime API (SigV4 or bearer) or the OpenAI chat API.
//!
//! - [`cli`]: flags -> a checked [`cli::Plan`]
//! - [`workload`], [`prompt_text`]: what each request asks
//! - [`schedule`]: closed and open (Poisson) loops, bounded
//! - [`client`]: HTTP, request bodies, response decoding ([`sse`], event stream), [`sigv4`]
//! - [`record`], [`stats`]: per-request measures, percentiles, goodput
//! - [`report`], [`chart`]: table, JSON, CSV, SVG
//! - [`run`]: the sweep

pub mod chart;
pub mod cli;
pub mod client;
pub mod prompt_text;
pub mod record;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sigv4;
pub mod sse;
pub mod stats;
pub mod workload;
