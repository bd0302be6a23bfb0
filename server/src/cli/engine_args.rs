//! Engine settings shared by the commands that generate: KV cache size and
//! element type, block size, batch limits, prefix caching.

use std::sync::Arc;

use anyhow::{bail, Context};
use factory_engine::executor::{CudaExecutorOptions, Executor};
use factory_engine::{CpuExecutor, EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_models::bundle::ModelBundle;
use factory_models::tokenizer::Tokenizer;
use factory_models::{KvDType, Model, ModelConfig};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The CPU (always available).
    Cpu,
    /// One NVIDIA GPU (builds with `--features cuda`).
    Cuda,
}

/// Said when `--backend cuda` meets a binary built without the feature.
#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str =
    "--backend cuda: this factory was built without CUDA support (rebuild with `--features cuda`)";

/// `--gpu-memory-utilization`: a fraction in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("must be in (0, 1], got {s}"))
    }
}

/// How much memory the KV cache takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    Bytes(u64),
    /// A fraction of the memory available at start-up.
    FractionOfAvailable(f64),
}

impl std::str::FromStr for KvBudget {
    type Err = String;

    /// `25%`, `4GiB`, `512MiB`, `2GB`, `1000000` (bytes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("bad percentage {s:?}"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!("percentage must be in (0, 100], got {s:?}"));
            }
            return Ok(KvBudget::FractionOfAvailable(v / 100.0));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        let bytes = v * mult;
        if !(bytes >= 1.0 && bytes.is_finite()) {
            return Err(format!("size must be positive, got {s:?}"));
        }
        Ok(KvBudget::Bytes(bytes as u64))
    }
}

impl KvBudget {
    /// The budget in bytes on this machine now.
    pub fn bytes(self) -> u64 {
        match self {
            KvBudget::Bytes(b) => b,
            KvBudget::FractionOfAvailable(f) => (available_memory() as f64 * f) as u64,
        }
    }
}

/// `MemAvailable` from /proc/meminfo, or 4 GiB where it cannot be read.
fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024)
}

/// Engine flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// KV cache memory: bytes (`4GiB`, `512MiB`) or a share of available memory (`10%`).
    #[arg(long, default_value = "10%")]
    pub kv_cache_memory: KvBudget,
    /// CPU: KV cache element type, `f32` (default) or `f16` (half the memory
    /// and bandwidth). The CUDA backend stores bf16 and refuses this flag.
    #[arg(long)]
    pub kv_cache_dtype: Option<KvDType>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Sequences running at once.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Tokens computed per step (prefill chunks are cut to fit).
    #[arg(long, default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Turn off sharing of identical prompt prefixes.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// CUDA: share of the GPU memory free after weights and activations that
    /// the KV cache takes, in (0, 1].
    #[arg(long, default_value_t = 0.9, value_parser = parse_fraction)]
    pub gpu_memory_utilization: f64,
    /// CUDA: device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// CUDA: random weights of the model's shape, made on the GPU (benchmarks
    /// without downloads). `--model` names a config.json or a directory with
    /// one; the tokenizer is that directory's tokenizer.json if present, else
    /// the default model's (with a warning). `factory serve` only.
    #[arg(long)]
    pub random_weights: bool,
}

impl EngineArgs {
    /// The CUDA executor's options from these flags.
    pub fn cuda_options(&self) -> CudaExecutorOptions {
        CudaExecutorOptions {
            device: self.device,
            gpu_memory_utilization: self.gpu_memory_utilization,
            block_size: self.block_size,
            max_batch_seqs: self.max_num_seqs,
            max_batch_tokens: self.max_num_batched_tokens,
            max_model_len: None,
            cuda_graphs: false,
        }
    }
}

/// A CUDA executor for `model` (its weights uploaded).
#[cfg(feature = "cuda")]
fn cuda_executor(model: &Model, args: &EngineArgs) -> anyhow::Result<Box<dyn Executor>> {
    let ex = factory_engine::executor::CudaExecutor::from_model(model, &args.cuda_options())
        .context("starting the CUDA executor")?;
    Ok(Box::new(ex))
}

#[cfg(not(feature = "cuda"))]
fn cuda_executor(_model: &Model, _args: &EngineArgs) -> anyhow::Result<Box<dyn Executor>> {
    bail!(NO_CUDA)
}

/// A CUDA executor with random weights of `config`'s shape.
#[cfg(feature = "cuda")]
pub fn random_cuda_executor(
    config: ModelConfig,
    args: &EngineArgs,
) -> anyhow::Result<Box<dyn Executor>> {
    if args.backend != Backend::Cuda {
        bail!("--random-weights needs --backend cuda");
    }
    let ex = factory_engine::executor::CudaExecutor::random(config, 0, &args.cuda_options())
        .context("starting the CUDA executor with random weights")?;
    Ok(Box::new(ex))
}

/// A CUDA executor with random weights of `config`'s shape.
#[cfg(not(feature = "cuda"))]
pub fn random_cuda_executor(
    _config: ModelConfig,
    args: &EngineArgs,
) -> anyhow::Result<Box<dyn Executor>> {
    if args.backend != Backend::Cuda {
        bail!("--random-weights needs --backend cuda");
    }
    args.cuda_options().validate()?;
    bail!(NO_CUDA)
}

/// Said when a KV cache type meets the CUDA backend, which has its own.
const KV_DTYPE_CPU_ONLY: &str = "--kv-cache-dtype (engine.kv_cache_dtype) applies to the CPU backend only: the CUDA backend stores its KV cache as bf16";

/// Checks the flags that contradict each other or are out of range.
pub fn check_flags(args: &EngineArgs) -> anyhow::Result<()> {
    if args.block_size == 0 || args.max_num_seqs == 0 || args.max_num_batched_tokens == 0 {
        bail!("--block-size, --max-num-seqs and --max-num-batched-tokens must be at least 1");
    }
    if args.backend == Backend::Cuda && args.kv_cache_dtype.is_some() {
        bail!(KV_DTYPE_CPU_ONLY);
    }
    Ok(())
}

/// Starts the engine thread over `executor`.
pub fn start_engine_over(
    executor: Box<dyn Executor>,
    tokenizer: &Tokenizer,
    eos_token_ids: Vec<u32>,
    args: &EngineArgs,
) -> anyhow::Result<EngineHandle> {
    let core = EngineCore::new(
        executor,
        Arc::new(tokenizer.clone()),
        eos_token_ids,
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: args.max_num_batched_tokens,
                max_num_seqs: args.max_num_seqs,
                ..SchedulerConfig::default()
            },
            prefix_caching: !args.no_prefix_caching,
        },
    );
    EngineHandle::spawn(core).context("starting the engine thread")
}

/// Starts the engine thread over the CPU backend.
pub fn start_engine(bundle: &ModelBundle, args: &EngineArgs) -> anyhow::Result<EngineHandle> {
    start_engine_with_context(bundle, args, None)
}

/// [`start_engine`] with sequences capped at `context_length` tokens (at
/// most the model's own context).
pub fn start_engine_with_context(
    bundle: &ModelBundle,
    args: &EngineArgs,
    context_length: Option<usize>,
) -> anyhow::Result<EngineHandle> {
    check_flags(args)?;
    if args.random_weights {
        bail!("--random-weights is supported by `factory serve` only");
    }
    // Weights are shared (memory maps behind Arcs): the clone is cheap.
    let mut model = bundle.model.clone();
    if let Some(c) = context_length {
        let own = model.config.max_position_embeddings;
        if c < 2 {
            bail!("context_length must be at least 2");
        }
        if c > own {
            tracing::warn!("context_length {c} is above the model's own {own}; using {own}");
        }
        // Lowering the limit only: the forward pass checks positions against it.
        model.config.max_position_embeddings = c.min(own);
    }
    let executor: Box<dyn Executor> = match args.backend {
        Backend::Cpu => {
            let model = Arc::new(model);
            let max_len = model.config.max_position_embeddings;
            let bytes = usize::try_from(args.kv_cache_memory.bytes()).unwrap_or(usize::MAX);
            Box::new(
                CpuExecutor::with_memory_budget(
                    model,
                    args.block_size,
                    bytes,
                    args.max_num_seqs.saturating_mul(max_len),
                    args.kv_cache_dtype.unwrap_or_default(),
                )
                .context("sizing the KV cache")?,
            )
        }
        Backend::Cuda => {
            args.cuda_options().validate()?;
            cuda_executor(&model, args)?
        }
    };
    start_engine_over(
        executor,
        &bundle.tokenizer,
        bundle.eos_token_ids.clone(),
        args,
    )
}

/// Starts an engine over random weights of the config at `path` (a
/// config.json or a directory with one), capped at `context_length`.
pub fn start_random_engine(
    config: ModelConfig,
    tokenizer: &Tokenizer,
    eos_token_ids: Vec<u32>,
    args: &EngineArgs,
    context_length: Option<usize>,
) -> anyhow::Result<EngineHandle> {
    check_flags(args)?;
    let mut config = config;
    if let Some(c) = context_length {
        if c < 2 {
            bail!("context_length must be at least 2");
        }
        config.max_position_embeddings = c.min(config.max_position_embeddings);
    }
    let executor = random_cuda_executor(config, args)?;
    start_engine_over(executor, tokenizer, eos_token_ids, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse() {
        assert_eq!("25%".parse(), Ok(KvBudget::FractionOfAvailable(0.25)));
        assert_eq!("4GiB".parse(), Ok(KvBudget::Bytes(4 << 30)));
        assert_eq!("512 MiB".parse(), Ok(KvBudget::Bytes(512 << 20)));
        assert_eq!("2GB".parse(), Ok(KvBudget::Bytes(2_000_000_000)));
        assert_eq!("1000".parse(), Ok(KvBudget::Bytes(1000)));
        assert!("0%".parse::<KvBudget>().is_err());
        assert!("150%".parse::<KvBudget>().is_err());
        assert!("3 parsecs".parse::<KvBudget>().is_err());
        assert!("0".parse::<KvBudget>().is_err());
        assert!("".parse::<KvBudget>().is_err());
    }

    #[test]
    fn gpu_memory_utilization_is_a_fraction() {
        assert_eq!(parse_fraction("0.9"), Ok(0.9));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for bad in ["0", "-0.5", "1.5", "NaN", "x", ""] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
    }

    fn flags(extra: &[&str]) -> Result<EngineArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            engine: EngineArgs,
        }
        let argv = std::iter::once("factory").chain(extra.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.engine)
    }

    #[test]
    fn backend_flags_parse_and_map_to_cuda_options() {
        let a = flags(&[]).unwrap();
        assert_eq!(a.backend, Backend::Cpu);
        assert_eq!(a.gpu_memory_utilization, 0.9);
        let a = flags(&[
            "--backend",
            "cuda",
            "--gpu-memory-utilization",
            "0.5",
            "--device",
            "1",
            "--max-num-seqs",
            "8",
        ])
        .unwrap();
        assert_eq!(a.backend, Backend::Cuda);
        let o = a.cuda_options();
        assert_eq!(
            (o.device, o.gpu_memory_utilization, o.max_batch_seqs),
            (1, 0.5, 8)
        );
        assert_eq!(o.max_batch_tokens, 512);
        assert!(o.validate().is_ok());
        assert!(flags(&["--backend", "tpu"]).is_err());
        assert!(flags(&["--gpu-memory-utilization", "1.2"]).is_err());
    }

    #[test]
    fn kv_cache_dtype_is_a_cpu_flag() {
        assert_eq!(flags(&[]).unwrap().kv_cache_dtype, None);
        let a = flags(&["--kv-cache-dtype", "f16"]).unwrap();
        assert_eq!(a.kv_cache_dtype, Some(KvDType::F16));
        assert!(check_flags(&a).is_ok());
        let a = flags(&["--kv-cache-dtype", "f32"]).unwrap();
        assert_eq!(a.kv_cache_dtype, Some(KvDType::F32));
        let e = flags(&["--kv-cache-dtype", "bf16"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected f32 or f16"), "{e}");
        // The CUDA backend keeps bf16 whatever is asked, so asking is an error.
        for dtype in ["f16", "f32"] {
            let a = flags(&["--backend", "cuda", "--kv-cache-dtype", dtype]).unwrap();
            let e = check_flags(&a).unwrap_err().to_string();
            assert!(e.contains("CPU backend only") && e.contains("bf16"), "{e}");
        }
        assert!(check_flags(&flags(&["--backend", "cuda"]).unwrap()).is_ok());
    }

    /// Without the feature `--backend cuda` says so; with it but no GPU here,
    /// starting is a clear error (no panic).
    #[test]
    fn cuda_backend_without_support_or_gpu_is_a_clear_error() {
        let a = flags(&["--backend", "cuda"]).unwrap();
        let cfg = tiny_hd64_config();
        let e = match random_cuda_executor(cfg, &a) {
            Ok(_) => {
                eprintln!("a CUDA GPU is present: nothing to check");
                return;
            }
            Err(e) => format!("{e:#}"),
        };
        if cfg!(feature = "cuda") {
            assert!(
                e.contains("CUDA driver library not found") || e.contains("no CUDA device"),
                "{e}"
            );
        } else {
            assert!(e.contains("built without CUDA support"), "{e}");
        }
        let cpu = flags(&[]).unwrap();
        let e = random_cuda_executor(tiny_hd64_config(), &cpu)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("needs --backend cuda"), "{e}");
    }

    fn tiny_hd64_config() -> ModelConfig {
        ModelConfig {
            family: factory_models::Family::Llama,
            vocab_size: 64,
            hidden_size: 128,
            intermediate_size: 256,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_style: factory_kernels::cpu::RopeStyle::Half,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }
}
