//! Loading a model for a command: resolving `default`, a progress bar while
//! the weights are paged in, and the load time.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use factory_models::bundle::ModelBundle;
use factory_models::default_model;
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;

/// Opens the model named on the command line.
pub fn load_bundle(args: &ModelArgs) -> anyhow::Result<ModelBundle> {
    let path = if args.model == "default" {
        default_model::ensure().context("fetching the default model")?
    } else {
        PathBuf::from(&args.model)
    };
    let t0 = Instant::now();
    let bundle = ModelBundle::load(&path, args.quant_mode.into())
        .with_context(|| format!("loading {}", path.display()))?;
    let bar = ProgressBar::new(bundle.store.total_bytes().max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "loading weights {bar:40} {binary_bytes}/{binary_total_bytes} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bundle.store.prefault(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let c = &bundle.model.config;
    tracing::info!(
        "loaded {} in {:.2}s: {:?}, {} layers, hidden {}, {} heads / {} kv heads, vocab {}, {:.1} MB of weights read per token",
        path.display(),
        t0.elapsed().as_secs_f64(),
        c.family,
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.vocab_size,
        bundle.model.weights.bytes_per_token() as f64 / 1e6
    );
    Ok(bundle)
}
