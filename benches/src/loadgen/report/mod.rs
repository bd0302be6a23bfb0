//! The results of a sweep: the JSON document, CSV files, the terminal table,
//! and writing them all (with the chart) into one directory.

pub mod csv;
pub mod table;

use std::path::{Path, PathBuf};

use factory_server::Family;
use serde::Serialize;

use super::client::Api;
use super::record::RequestRecord;
use super::schedule::Load;
use super::stats::{PointStats, Slo};
use super::workload::LengthSpec;

/// Limits as reported (seconds, not `Duration`s).
#[derive(Debug, Clone, Serialize)]
pub struct BoundsReport {
    /// Requests per point.
    pub requests: Option<usize>,
    /// Seconds of sending per point.
    pub duration_s: Option<f64>,
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Open loop: most requests in flight.
    pub max_in_flight: usize,
}

/// The workload as reported.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// `synthetic` or the prompts file's path.
    pub prompts: String,
    /// Synthetic input length.
    pub input_tokens: Option<LengthSpec>,
    /// Output limit per request (`max_tokens`).
    pub output_tokens: LengthSpec,
    /// Tokens of the shared system prompt (0: none).
    pub shared_prefix_tokens: usize,
    /// Distinct shared prompts.
    pub prefix_groups: usize,
    /// How synthetic lengths are counted.
    pub prompt_lengths: String,
}

/// What was run against what.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Target base URL.
    pub url: String,
    /// API.
    pub api: Api,
    /// Streaming calls.
    pub stream: bool,
    /// Model id.
    pub model: String,
    /// Native body family (InvokeModel only).
    pub native_format: Option<Family>,
    /// `none`, `sigv4` or `bearer`.
    pub auth: String,
    /// The sweep.
    pub loads: Vec<Load>,
    /// Per-point limits.
    pub bounds: BoundsReport,
    /// Unmeasured requests sent before the sweep.
    pub warmup_requests: usize,
    /// Prompts and lengths.
    pub workload: WorkloadReport,
    /// Sampling temperature.
    pub temperature: f64,
    /// OpenAI `ignore_eos` sent.
    pub ignore_eos: bool,
    /// Seed of prompts and arrivals.
    pub seed: u64,
    /// Goodput objective.
    pub slo: Slo,
}

/// One point of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    /// The load.
    pub load: Load,
    /// Stopped early.
    pub interrupted: bool,
    /// Open loop: arrivals that waited for an in-flight slot.
    pub delayed_arrivals: usize,
    /// The statistics.
    #[serde(flatten)]
    pub stats: PointStats,
    /// Every request.
    pub requests: Vec<RequestRecord>,
}

/// The whole run: `bench.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `factory-bench`.
    pub tool: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Some point was stopped early.
    pub interrupted: bool,
    /// The configuration.
    pub config: RunConfig,
    /// The sweep's points, in order.
    pub points: Vec<PointReport>,
}

/// Files written by [`write_all`].
#[derive(Debug, Clone)]
pub struct Written {
    /// `bench.json`.
    pub json: PathBuf,
    /// `summary.csv`.
    pub summary_csv: PathBuf,
    /// `requests.csv`.
    pub requests_csv: PathBuf,
    /// `latency_vs_throughput.svg`.
    pub chart: PathBuf,
}

/// Writes the JSON, both CSVs and the chart into `dir` (created if needed).
pub fn write_all(dir: &Path, report: &BenchReport) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let w = Written {
        json: dir.join("bench.json"),
        summary_csv: dir.join("summary.csv"),
        requests_csv: dir.join("requests.csv"),
        chart: dir.join("latency_vs_throughput.svg"),
    };
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&w.json, json)?;
    std::fs::write(&w.summary_csv, csv::summary(&report.points))?;
    std::fs::write(&w.requests_csv, csv::requests(&report.points))?;
    std::fs::write(&w.chart, super::chart::svg(report))?;
    Ok(w)
}
