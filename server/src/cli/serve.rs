//! `factory serve`: the Bedrock Runtime API over HTTP for one model.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use factory_models::default_model;
use factory_server::config::{FileConfig, NamedApiKey};
use factory_server::credentials::{self, KeyPair};
use factory_server::{Auth, Family, ServedModel, Service};

use super::engine_args::{start_engine, EngineArgs};
use super::load::load_bundle;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Listen address [default: 127.0.0.1:8080, or the config file's `addr`].
    #[arg(long)]
    pub addr: Option<String>,
    /// A TOML file: model ids and aliases, limits, credentials.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The id clients address the model by [default: the config's, else
    /// smollm2-135m-instruct for the default model, else the file name].
    #[arg(long)]
    pub model_id: Option<String>,
    /// Accept unauthenticated requests (logs a warning for each).
    #[arg(long)]
    pub no_auth: bool,
    /// On SIGTERM / Ctrl-C: stop accepting, then wait at most this many
    /// seconds for requests in flight to finish before exiting.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let auth = auth(&file, args.no_auth)?;
    let addr = args
        .addr
        .clone()
        .or_else(|| file.addr.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut bundle = load_bundle(&args.model)?;
    let engine = start_engine(&bundle, &args.engine)?;
    let drain_engine = engine.clone();
    let drain_timeout = std::time::Duration::from_secs(args.drain_timeout);
    let mut model = ServedModel::new(
        model_id(&args, &file),
        engine,
        Arc::new(bundle.tokenizer.clone()),
        bundle.chat_template.take().map(Arc::new),
    );
    model.aliases = file.model.aliases.clone();
    model.default_family = file.model.native_format.unwrap_or(Family::Anthropic);
    let ids = std::iter::once(&model.id)
        .chain(&model.aliases)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let service = Service::new(file.service_config(), auth, model);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(
            "serving {ids} on http://{local} (Bedrock Runtime API; OpenAI API under /v1)"
        );
        service.serve(listener, shutdown_signal()).await?;
        // The listener is closed: drain what is in flight, then exit.
        let t0 = std::time::Instant::now();
        while drain_engine.in_flight() > 0 && t0.elapsed() < drain_timeout {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        match drain_engine.in_flight() {
            0 => {
                // Let the last responses' bytes leave their connections.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                tracing::info!("drained; exiting");
            }
            n => tracing::warn!("{n} requests still in flight after {drain_timeout:?}; exiting"),
        }
        anyhow::Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM (what service managers and Kubernetes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: no new connections; draining requests in flight");
}

fn model_id(args: &ServeArgs, file: &FileConfig) -> String {
    if let Some(id) = args.model_id.clone().or_else(|| file.model.id.clone()) {
        return id;
    }
    if args.model.model == "default" {
        return default_model::MODEL_ID.to_string();
    }
    let path = PathBuf::from(&args.model.model);
    path.file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| args.model.model.clone())
}

/// Credentials from the config file and environment (`FACTORY_API_KEY` adds a
/// bearer key); with none, a key pair and an API key generated once and kept
/// in the state directory.
fn auth(file: &FileConfig, no_auth: bool) -> anyhow::Result<Auth> {
    if no_auth {
        tracing::warn!("--no-auth: every request is accepted without credentials");
        return Ok(Auth::Disabled);
    }
    let mut section = file.auth.clone();
    if let Some(key) = std::env::var("FACTORY_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        section.api_keys.push(NamedApiKey {
            name: "env".into(),
            key,
        });
    }
    let mut extra: Vec<KeyPair> = KeyPair::from_env().into_iter().collect();
    if section.is_empty() && extra.is_empty() {
        let dir = credentials::state_dir();
        let (generated, created) = credentials::load_or_create(&dir)?;
        let pair = generated.pair;
        let path = dir.join(credentials::FILE_NAME);
        let verb = if created { "generated" } else { "using" };
        tracing::info!(
            "no credentials configured: {verb} a key pair and API key in {} (mode 0600)",
            path.display()
        );
        eprintln!(
            "Sign requests with these credentials (any region; service `bedrock`):\n  \
             export AWS_ACCESS_KEY_ID={}\n  \
             export AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_access_key = \"\\(.*\\)\"/\\1/p' {})\n  \
             then e.g. boto3.client(\"bedrock-runtime\", endpoint_url=\"http://ADDR\", region_name=\"us-east-1\")",
            pair.access_key_id,
            path.display()
        );
        eprintln!(
            "OpenAI clients (and Bedrock bearer auth) use the API key in the same file:\n  \
             export OPENAI_API_KEY=$(sed -n 's/^api_key = \"\\(.*\\)\"/\\1/p' {})\n  \
             then e.g. openai.OpenAI(base_url=\"http://ADDR/v1\")",
            path.display()
        );
        section.api_keys.push(NamedApiKey {
            name: "generated".into(),
            key: generated.api_key,
        });
        extra.push(pair);
    }
    Ok(Auth::Required(section.authenticator(&extra)))
}
