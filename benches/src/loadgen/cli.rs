//! `factory-bench` command-line flags, and turning them (with the
//! environment's credentials) into a checked [`Plan`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use factory_server::Family;

use super::client::{Api, Auth, Target};
use super::prompt_text::{PromptTextError, TextSource};
use super::report::{BoundsReport, RunConfig, WorkloadReport};
use super::schedule::{Bounds, Load};
use super::sigv4::SigV4Credentials;
use super::stats::Slo;
use super::workload::{read_prompts_file, LengthSpec, Prompts, PromptsFileError, Workload};

/// Requests per point when neither `--requests` nor `--duration` is given.
pub const DEFAULT_REQUESTS: usize = 100;

/// Native InvokeModel body families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeFormat {
    /// Anthropic Messages.
    Anthropic,
    /// Meta Llama.
    Meta,
    /// Mistral text completion.
    Mistral,
    /// Amazon Titan Text.
    Titan,
    /// Amazon Nova.
    Nova,
}

impl From<NativeFormat> for Family {
    fn from(f: NativeFormat) -> Self {
        match f {
            NativeFormat::Anthropic => Family::Anthropic,
            NativeFormat::Meta => Family::Meta,
            NativeFormat::Mistral => Family::Mistral,
            NativeFormat::Titan => Family::Titan,
            NativeFormat::Nova => Family::Nova,
        }
    }
}

/// Load generator for a running factory (or any Bedrock Runtime / OpenAI-compatible) server.
///
/// Sweeps a closed loop over concurrency levels (`--concurrency 1,2,4`) or an
/// open loop over Poisson arrival rates (`--rate 0.5,1,2`), measures TTFT,
/// TPOT, inter-token gaps and end-to-end latency per request, and writes
/// bench.json, summary.csv, requests.csv and latency_vs_throughput.svg.
///
/// Credentials come from the environment when not given as flags:
/// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (SigV4),
/// AWS_BEARER_TOKEN_BEDROCK (Bedrock API key), OPENAI_API_KEY (--api openai),
/// AWS_REGION.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "factory-bench", version)]
pub struct Args {
    /// Server base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Model id to request.
    #[arg(long, default_value = factory_models::default_model::MODEL_ID)]
    pub model: String,
    /// API: Bedrock Converse, Bedrock InvokeModel (native body), or OpenAI chat completions.
    #[arg(long, value_enum, default_value_t = Api::Converse)]
    pub api: Api,
    /// Use the non-streaming calls (Converse, InvokeModel, `stream: false`): no TTFT/TPOT/ITL.
    #[arg(long)]
    pub no_stream: bool,
    /// InvokeModel body family [default: from the model id's provider prefix, else anthropic].
    #[arg(long, value_enum)]
    pub native_format: Option<NativeFormat>,

    /// Closed loop at each of these concurrencies [default: 1,2,4,8].
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["concurrency_up_to", "rate"])]
    pub concurrency: Vec<usize>,
    /// Closed loop at 1, 2, 4, ... up to and including N.
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    pub concurrency_up_to: Option<usize>,
    /// Open loop: Poisson arrivals at each of these rates (requests/s; `inf`: all at once).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<String>,
    /// Requests per point [default: 100 unless --duration is given].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Seconds of sending per point (requests in flight then finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds before a request is abandoned and counted as a timeout.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Open loop: most requests in flight at once (arrivals beyond it wait).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Unmeasured requests before the sweep.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,

    /// Prompt tokens per request: N, MIN..MAX (uniform), or normal:MEAN,STD.
    #[arg(long, default_value = "128")]
    pub input_tokens: LengthSpec,
    /// Output limit per request (max_tokens), same forms. The model may stop earlier.
    #[arg(long, default_value = "128")]
    pub output_tokens: LengthSpec,
    /// A shared system prompt of this many tokens on every request (0: none).
    #[arg(long, default_value_t = 0)]
    pub shared_prefix_tokens: usize,
    /// Number of distinct shared system prompts (request i uses i mod G).
    #[arg(long, default_value_t = 1)]
    pub prefix_groups: usize,
    /// JSONL prompts (a string per line, or {"prompt", "system"?, "max_tokens"?}), used in order.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Token counting for synthetic prompts: auto, default (the default model's
    /// tokenizer), words (approximate), or a .gguf / tokenizer.json path.
    #[arg(long, default_value = "auto")]
    pub tokenizer: String,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// OpenAI only: send `ignore_eos: true` (vLLM extension) so outputs reach max_tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Seed for prompts and arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Goodput SLO: time to first token at most this (ms).
    #[arg(long)]
    pub slo_ttft_ms: Option<f64>,
    /// Goodput SLO: time per output token at most this (ms).
    #[arg(long)]
    pub slo_tpot_ms: Option<f64>,
    /// Goodput SLO: end-to-end latency at most this (ms).
    #[arg(long)]
    pub slo_e2e_ms: Option<f64>,

    /// SigV4 region [default: AWS_REGION, else us-east-1].
    #[arg(long)]
    pub region: Option<String>,
    /// SigV4 access key id [default: AWS_ACCESS_KEY_ID].
    #[arg(long)]
    pub access_key_id: Option<String>,
    /// SigV4 secret [default: AWS_SECRET_ACCESS_KEY]; prefer the environment.
    #[arg(long)]
    pub secret_access_key: Option<String>,
    /// Bearer API key [default: AWS_BEARER_TOKEN_BEDROCK, or OPENAI_API_KEY for --api openai].
    #[arg(long)]
    pub api_key: Option<String>,
    /// Send no credentials even if the environment has some.
    #[arg(long)]
    pub no_auth: bool,
    /// Path of the OpenAI chat endpoint.
    #[arg(long, default_value = super::client::openai::CHAT_PATH)]
    pub openai_path: String,

    /// Directory for bench.json, summary.csv, requests.csv and the chart.
    #[arg(long, default_value = "factory-bench-results")]
    pub out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Flags that do not make a runnable plan.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The prompt text source failed.
    #[error(transparent)]
    Prompt(#[from] PromptTextError),
    /// The prompts file failed.
    #[error(transparent)]
    PromptsFile(#[from] PromptsFileError),
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where and how to send.
    pub target: Target,
    /// The sweep.
    pub loads: Vec<Load>,
    /// Per-point limits.
    pub bounds: Bounds,
    /// Unmeasured requests first.
    pub warmup: usize,
    /// Prompts.
    pub workload: Workload,
    /// Goodput objective.
    pub slo: Slo,
    /// Seed.
    pub seed: u64,
    /// Output directory.
    pub out: PathBuf,
    /// Show progress bars.
    pub progress: bool,
    /// The configuration as reported.
    pub config: RunConfig,
}

fn invalid(s: impl Into<String>) -> CliError {
    CliError::Invalid(s.into())
}

fn parse_rate(s: &str) -> Result<f64, CliError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("inf") {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(invalid(format!(
            "bad --rate {s:?}: a positive number of requests/s, or inf"
        ))),
    }
}

impl Args {
    /// The sweep the flags ask for.
    pub fn loads(&self) -> Result<Vec<Load>, CliError> {
        if !self.rate.is_empty() {
            return self
                .rate
                .iter()
                .map(|r| parse_rate(r).map(Load::Rate))
                .collect();
        }
        let cs = match self.concurrency_up_to {
            Some(0) => return Err(invalid("--concurrency-up-to must be at least 1")),
            Some(n) => {
                let mut v: Vec<usize> = std::iter::successors(Some(1usize), |c| c.checked_mul(2))
                    .take_while(|&c| c < n)
                    .collect();
                v.push(n);
                v
            }
            None if self.concurrency.is_empty() => vec![1, 2, 4, 8],
            None => self.concurrency.clone(),
        };
        if cs.contains(&0) {
            return Err(invalid("--concurrency values must be at least 1"));
        }
        Ok(cs.into_iter().map(Load::Concurrency).collect())
    }

    /// Credentials from flags, then `env`.
    pub fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Auth, CliError> {
        if self.no_auth {
            return Ok(Auth::None);
        }
        let key_var = match self.api {
            Api::Openai => "OPENAI_API_KEY",
            _ => "AWS_BEARER_TOKEN_BEDROCK",
        };
        if let Some(key) = self.api_key.clone().or_else(|| env(key_var)) {
            return Ok(Auth::Bearer(key));
        }
        if self.api == Api::Openai {
            return Ok(Auth::None);
        }
        let id = self
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = self
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Auth::SigV4(SigV4Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN"),
                region: self
                    .region
                    .clone()
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into()),
            })),
            (None, None) => Ok(Auth::None),
            _ => Err(invalid(
                "SigV4 needs both an access key id and a secret access key",
            )),
        }
    }

    /// Checks the flags and builds the plan; `env` reads environment variables.
    pub fn plan(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, CliError> {
        let url: http::Uri = self
            .url
            .parse()
            .map_err(|e| invalid(format!("bad --url {:?}: {e}", self.url)))?;
        if url.scheme_str() != Some("http") || url.authority().is_none() {
            return Err(invalid(format!(
                "bad --url {:?}: expected http://HOST[:PORT] (https is not supported)",
                self.url
            )));
        }
        let loads = self.loads()?;
        if self.requests == Some(0) {
            return Err(invalid("--requests must be at least 1"));
        }
        let duration = match self.duration {
            Some(d) if !(d > 0.0 && d.is_finite()) => {
                return Err(invalid("--duration must be a positive number of seconds"))
            }
            d => d.map(Duration::from_secs_f64),
        };
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err(invalid("--timeout must be a positive number of seconds"));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(invalid("--temperature must be >= 0"));
        }
        if self.prefix_groups == 0 {
            return Err(invalid("--prefix-groups must be at least 1"));
        }
        for (name, v) in [
            ("--slo-ttft-ms", self.slo_ttft_ms),
            ("--slo-tpot-ms", self.slo_tpot_ms),
            ("--slo-e2e-ms", self.slo_e2e_ms),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(invalid(format!("{name} must be positive")));
            }
        }
        let requests = match (self.requests, duration) {
            (None, None) => Some(DEFAULT_REQUESTS),
            (r, _) => r,
        };
        let bounds = Bounds {
            requests,
            duration,
            timeout: Duration::from_secs_f64(self.timeout),
            max_in_flight: self.max_in_flight.max(1),
        };
        let auth = self.auth(env)?;
        let family = self
            .native_format
            .map(Family::from)
            .or_else(|| Family::from_model_id(&self.model))
            .unwrap_or(Family::Anthropic);
        let target = Target {
            url,
            api: self.api,
            family,
            stream: !self.no_stream,
            model: self.model.clone(),
            auth,
            temperature: self.temperature,
            ignore_eos: self.ignore_eos,
            openai_path: self.openai_path.clone(),
        };
        // The tokenizer is needed for synthetic prompts and shared prefixes only.
        let needs_text = self.prompts_file.is_none() || self.shared_prefix_tokens > 0;
        let source = if needs_text {
            Some(Arc::new(TextSource::load(&self.tokenizer)?))
        } else {
            None
        };
        let prefixes = match &source {
            Some(s) => Workload::shared_prefixes(
                s,
                self.shared_prefix_tokens,
                self.prefix_groups,
                self.seed,
            ),
            None => Vec::new(),
        };
        let (prompts, prompts_name) = match (&self.prompts_file, &source) {
            (Some(path), _) => (
                Prompts::File(Arc::new(read_prompts_file(path)?)),
                path.display().to_string(),
            ),
            (None, Some(s)) => (
                Prompts::Synthetic {
                    source: s.clone(),
                    input: self.input_tokens,
                },
                "synthetic".to_string(),
            ),
            (None, None) => {
                unreachable!("a text source is loaded whenever there is no prompts file")
            }
        };
        let workload = Workload {
            prompts,
            output: self.output_tokens,
            prefixes,
            seed: self.seed,
        };
        let slo = Slo {
            ttft_ms: self.slo_ttft_ms,
            tpot_ms: self.slo_tpot_ms,
            e2e_ms: self.slo_e2e_ms,
        };
        let config = RunConfig {
            url: self.url.clone(),
            api: self.api,
            stream: target.stream,
            model: self.model.clone(),
            native_format: (self.api == Api::Invoke).then_some(family),
            auth: target.auth.name().into(),
            loads: loads.clone(),
            bounds: BoundsReport {
                requests: bounds.requests,
                duration_s: self.duration,
                timeout_s: self.timeout,
                max_in_flight: bounds.max_in_flight,
            },
            warmup_requests: self.warmup,
            workload: WorkloadReport {
                prompts: prompts_name,
                input_tokens: self.prompts_file.is_none().then_some(self.input_tokens),
                output_tokens: self.output_tokens,
                shared_prefix_tokens: self.shared_prefix_tokens,
                prefix_groups: self.prefix_groups,
                prompt_lengths: source
                    .as_ref()
                    .map_or_else(|| "from file".into(), |s| s.method()),
            },
            temperature: self.temperature,
            ignore_eos: self.ignore_eos,
            seed: self.seed,
            slo,
        };
        Ok(Plan {
            target,
            loads,
            bounds,
            warmup: self.warmup,
            workload,
            slo,
            seed: self.seed,
            out: self.out.clone(),
            progress: !self.quiet,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(a: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("factory-bench").chain(a.iter().copied()))
            .expect("flags parse")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sweeps() {
        assert_eq!(
            args(&[]).loads().expect("default"),
            [1, 2, 4, 8].map(Load::Concurrency)
        );
        assert_eq!(
            args(&["--concurrency-up-to", "12"]).loads().expect("up to"),
            [1, 2, 4, 8, 12].map(Load::Concurrency)
        );
        assert_eq!(
            args(&["--concurrency-up-to", "1"]).loads().expect("up to"),
            [Load::Concurrency(1)]
        );
        assert_eq!(
            args(&["--rate", "0.5,2,inf"]).loads().expect("rates"),
            [Load::Rate(0.5), Load::Rate(2.0), Load::Rate(f64::INFINITY)]
        );
        assert!(args(&["--rate", "0"]).loads().is_err());
        assert!(args(&["--concurrency", "0,1"]).loads().is_err());
        assert!(Args::try_parse_from(["b", "--concurrency", "1", "--rate", "2"]).is_err());
    }

    #[test]
    fn credentials_precedence() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SECRET".to_string()),
            "AWS_REGION" => Some("eu-central-1".to_string()),
            "OPENAI_API_KEY" => Some("sk-x".to_string()),
            _ => None,
        };
        match args(&[]).auth(&env).expect("auth") {
            Auth::SigV4(c) => {
                assert_eq!(
                    (c.access_key_id.as_str(), c.region.as_str()),
                    ("AKID", "eu-central-1")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            args(&["--api-key", "k"]).auth(&env),
            Ok(Auth::Bearer(k)) if k == "k"
        ));
        assert!(matches!(
            args(&["--api", "openai"]).auth(&env),
            Ok(Auth::Bearer(k)) if k == "sk-x"
        ));
        assert!(matches!(args(&["--no-auth"]).auth(&env), Ok(Auth::None)));
        assert!(matches!(args(&[]).auth(&no_env), Ok(Auth::None)));
        assert!(args(&["--access-key-id", "A"]).auth(&no_env).is_err());
    }

    #[test]
    fn plan_checks_and_defaults() {
        let p = args(&[
            "--tokenizer",
            "words",
            "--model",
            "meta.llama3-1-8b-instruct-v1:0",
            "--api",
            "invoke",
        ])
        .plan(&no_env)
        .expect("plan");
        assert_eq!(p.bounds.requests, Some(DEFAULT_REQUESTS));
        assert_eq!(p.target.family, Family::Meta);
        assert_eq!(p.config.native_format, Some(Family::Meta));
        assert!(p.target.stream);
        let p = args(&["--tokenizer", "words", "--duration", "2"])
            .plan(&no_env)
            .expect("plan");
        assert_eq!(p.bounds.requests, None);
        assert_eq!(p.target.family, Family::Anthropic);
        for bad in [
            &["--url", "https://example.com"][..],
            &["--url", "not a url"],
            &["--requests", "0"],
            &["--duration=-1"],
            &["--timeout", "0"],
            &["--slo-ttft-ms", "0"],
            &["--prefix-groups", "0"],
            &["--temperature=-1"],
        ] {
            let mut a = vec!["--tokenizer", "words"];
            a.extend_from_slice(bad);
            assert!(args(&a).plan(&no_env).is_err(), "{bad:?}");
        }
    }
}
