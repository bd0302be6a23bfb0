//! Engine settings shared by the commands that generate: KV cache size,
//! block size, batch limits, prefix caching.

use std::sync::Arc;

use anyhow::{bail, Context};
use factory_engine::{CpuExecutor, EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_models::bundle::ModelBundle;

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
    if args.block_size == 0 || args.max_num_seqs == 0 || args.max_num_batched_tokens == 0 {
        bail!("--block-size, --max-num-seqs and --max-num-batched-tokens must be at least 1");
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
    let model = Arc::new(model);
    let max_len = model.config.max_position_embeddings;
    let bytes = usize::try_from(args.kv_cache_memory.bytes()).unwrap_or(usize::MAX);
    let executor = CpuExecutor::with_memory_budget(
        model,
        args.block_size,
        bytes,
        args.max_num_seqs.saturating_mul(max_len),
    )
    .context("sizing the KV cache")?;
    let core = EngineCore::new(
        Box::new(executor),
        Arc::new(bundle.tokenizer.clone()),
        bundle.eos_token_ids.clone(),
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
}
