//! `factory serve`'s models: the one of `--model`, or one per `[[models]]`
//! entry, each with its own engine; loaded one after another on a background
//! thread while the server already answers (`/ping` says loading).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum as _;
use factory_models::default_model;
use factory_server::config::{EngineSection, FileConfig, ModelEntry};
use factory_server::{Family, ModelLimits, ModelSlot, ServedModel};

use super::engine_args::{
    check_flags, parse_fraction, start_engine_with_context, start_random_engine, Backend,
    EngineArgs, KvBudget,
};
use super::load::load_bundle;
use super::random_weights::load_random_model;
use super::serve::ServeArgs;
use super::{ModelArgs, QuantMode};

/// Everything needed to load one model, and the slot it fills.
pub struct ModelPlan {
    /// Routed by the service from the start; filled when loading ends.
    pub slot: Arc<ModelSlot>,
    path: String,
    quant_mode: QuantMode,
    engine: EngineArgs,
    context_length: Option<usize>,
    family: Family,
    limits: ModelLimits,
}

/// The models to serve, from the command line and config file.
pub fn plans(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Vec<ModelPlan>> {
    let queued = args
        .max_queued_requests
        .or(file.max_queued_requests)
        .unwrap_or(ModelLimits::default().max_queued_requests);
    let plans = if file.models.is_empty() {
        let path = args.model.model.clone();
        let id = args
            .model_id
            .clone()
            .or_else(|| file.model.id.clone())
            .unwrap_or_else(|| default_id(&path));
        vec![ModelPlan {
            slot: Arc::new(ModelSlot::loading(id, file.model.aliases.clone())),
            path,
            quant_mode: args.model.quant_mode,
            engine: args.engine.clone(),
            context_length: None,
            family: file.model.native_format.unwrap_or(Family::Anthropic),
            limits: ModelLimits {
                max_queued_requests: queued,
                ..ModelLimits::default()
            },
        }]
    } else {
        if args.model.model != "default" || args.model_id.is_some() {
            bail!("--model and --model-id cannot be used with [[models]] in the config file: give each model's path and id there");
        }
        file.models
            .iter()
            .map(|e| entry_plan(e, args, queued))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    // Contradicting flags stop the start, rather than fail a model later.
    for p in &plans {
        check_flags(&p.engine).with_context(|| format!("model {}", p.slot.id()))?;
    }
    // One id must not reach two models.
    let mut seen = std::collections::HashSet::new();
    for p in &plans {
        for id in std::iter::once(p.slot.id()).chain(p.slot.aliases().iter().map(String::as_str)) {
            if !seen.insert(id.to_string()) {
                bail!("the model id {id} is given to more than one model");
            }
        }
    }
    Ok(plans)
}

fn entry_plan(e: &ModelEntry, args: &ServeArgs, queued: usize) -> anyhow::Result<ModelPlan> {
    let path = e.path.clone().unwrap_or_else(|| "default".into());
    let id = e.id.clone().unwrap_or_else(|| default_id(&path));
    let quant_mode = match &e.quant_mode {
        Some(q) => QuantMode::from_str(q, true).map_err(|_| {
            anyhow::anyhow!("model {id}: quant_mode must be exact or fast, not {q:?}")
        })?,
        None => args.model.quant_mode,
    };
    Ok(ModelPlan {
        slot: Arc::new(ModelSlot::loading(id.clone(), e.aliases.clone())),
        path,
        quant_mode,
        engine: engine_args(&args.engine, &e.engine).with_context(|| format!("model {id}"))?,
        context_length: e.context_length,
        family: e.native_format.unwrap_or(Family::Anthropic),
        limits: ModelLimits {
            default_max_tokens: e.default_max_tokens,
            max_max_tokens: e.max_max_tokens,
            max_prompt_tokens: e.max_prompt_tokens,
            max_queued_requests: e.max_queued_requests.unwrap_or(queued),
            request_timeout: e.request_timeout.map(Duration::from_secs),
        },
    })
}

/// The command line's engine flags with a model's own settings on top.
fn engine_args(flags: &EngineArgs, own: &EngineSection) -> anyhow::Result<EngineArgs> {
    let mut a = flags.clone();
    if let Some(m) = &own.kv_cache_memory {
        a.kv_cache_memory = m
            .parse::<KvBudget>()
            .map_err(|e| anyhow::anyhow!("engine.kv_cache_memory: {e}"))?;
    }
    a.block_size = own.block_size.unwrap_or(a.block_size);
    a.max_num_seqs = own.max_num_seqs.unwrap_or(a.max_num_seqs);
    a.max_num_batched_tokens = own
        .max_num_batched_tokens
        .unwrap_or(a.max_num_batched_tokens);
    if let Some(on) = own.prefix_caching {
        a.no_prefix_caching = !on;
    }
    if let Some(d) = &own.kv_cache_dtype {
        a.kv_cache_dtype = Some(
            d.parse()
                .map_err(|e| anyhow::anyhow!("engine.kv_cache_dtype: {e}"))?,
        );
    }
    if let Some(b) = &own.backend {
        a.backend = Backend::from_str(b, true)
            .map_err(|_| anyhow::anyhow!("engine.backend must be cpu or cuda, not {b:?}"))?;
    }
    if let Some(f) = own.gpu_memory_utilization {
        a.gpu_memory_utilization = parse_fraction(&f.to_string())
            .map_err(|e| anyhow::anyhow!("engine.gpu_memory_utilization: {e}"))?;
    }
    a.device = own.device.unwrap_or(a.device);
    Ok(a)
}

/// The id of a model named by `path` when none is configured.
pub fn default_id(path: &str) -> String {
    if path == "default" {
        return default_model::MODEL_ID.to_string();
    }
    PathBuf::from(path)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| path.to_string())
}

impl ModelPlan {
    /// Loads the weights and starts the engine.
    fn load(&self) -> anyhow::Result<ServedModel> {
        if self.engine.random_weights {
            let r = load_random_model(&self.path)?;
            let engine = start_random_engine(
                r.config,
                &r.tokenizer,
                r.eos_token_ids,
                &self.engine,
                self.context_length,
            )?;
            let mut model = ServedModel::new(
                self.slot.id(),
                engine,
                Arc::new(r.tokenizer),
                r.chat_template.map(Arc::new),
            );
            model.default_family = self.family;
            model.limits = self.limits.clone();
            return Ok(model);
        }
        let mut bundle = load_bundle(&ModelArgs {
            model: self.path.clone(),
            quant_mode: self.quant_mode,
        })?;
        let engine = start_engine_with_context(&bundle, &self.engine, self.context_length)?;
        let mut model = ServedModel::new(
            self.slot.id(),
            engine,
            Arc::new(bundle.tokenizer.clone()),
            bundle.chat_template.take().map(Arc::new),
        );
        model.default_family = self.family;
        model.limits = self.limits.clone();
        Ok(model)
    }
}

/// Loads every model, in order, on a background thread. Each failure is
/// logged and marks its model failed; if none loads, the returned receiver
/// gets the reasons (the server then exits non-zero).
pub fn spawn_loader(
    plans: Vec<ModelPlan>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("factory-load".into())
        .spawn(move || {
            let mut failures = Vec::new();
            for plan in &plans {
                let id = plan.slot.id();
                let t0 = Instant::now();
                match plan.load() {
                    Ok(model) => {
                        plan.slot.set_ready(model);
                        tracing::info!("model {id} ready after {:.2}s", t0.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        tracing::error!("model {id} failed to load: {why}");
                        plan.slot.set_failed(why.clone());
                        failures.push(format!("{id}: {why}"));
                    }
                }
            }
            if failures.len() == plans.len() {
                let _ = tx.send(failures.join("; "));
            }
        })
        .context("starting the model loading thread")?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_engine_section_picks_its_backend() {
        let flags = <EngineArgs as clap::FromArgMatches>::from_arg_matches(
            &<EngineArgs as clap::Args>::augment_args(clap::Command::new("t"))
                .get_matches_from(["t"]),
        )
        .expect("defaults");
        let own = EngineSection {
            backend: Some("CUDA".into()),
            gpu_memory_utilization: Some(0.5),
            device: Some(2),
            ..EngineSection::default()
        };
        let a = engine_args(&flags, &own).expect("valid");
        assert_eq!(
            (a.backend, a.gpu_memory_utilization, a.device),
            (Backend::Cuda, 0.5, 2)
        );
        let own = EngineSection {
            kv_cache_dtype: Some("f16".into()),
            ..EngineSection::default()
        };
        let a = engine_args(&flags, &own).expect("valid");
        assert_eq!(a.kv_cache_dtype, Some(factory_models::KvDType::F16));
        assert!(check_flags(&a).is_ok());
        // The CUDA backend has its own KV type: a model asking for both is refused.
        let own = EngineSection {
            kv_cache_dtype: Some("f16".into()),
            backend: Some("cuda".into()),
            ..EngineSection::default()
        };
        let e = check_flags(&engine_args(&flags, &own).expect("parses"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CPU backend only"), "{e}");
        for bad in [
            EngineSection {
                kv_cache_dtype: Some("int8".into()),
                ..EngineSection::default()
            },
            EngineSection {
                backend: Some("tpu".into()),
                ..EngineSection::default()
            },
            EngineSection {
                gpu_memory_utilization: Some(1.5),
                ..EngineSection::default()
            },
        ] {
            assert!(engine_args(&flags, &bad).is_err(), "{bad:?}");
        }
    }
}
