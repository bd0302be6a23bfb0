//! `factory serve`: the Bedrock Runtime API over HTTP for one or more models.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use factory_server::config::{FileConfig, NamedApiKey};
use factory_server::credentials::{self, KeyPair};
use factory_server::{Auth, Service};

use super::engine_args::EngineArgs;
use super::serve_models;
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
    /// A TOML file: models (`[[models]]`: path, ids, limits, engine settings),
    /// limits, credentials.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The id clients address the model by [default: the config's, else
    /// smollm2-135m-instruct for the default model, else the file name].
    #[arg(long)]
    pub model_id: Option<String>,
    /// Seconds a request may take; beyond it the generation is aborted and the
    /// client gets ModelTimeoutException [default: the config's, else 600].
    #[arg(long)]
    pub request_timeout: Option<u64>,
    /// Requests each model queues beside the `--max-num-seqs` it runs; more get
    /// ThrottlingException (429) [default: the config's, else 256].
    #[arg(long)]
    pub max_queued_requests: Option<usize>,
    /// Generation requests in flight across all models; more get
    /// ThrottlingException (429) [default: the config's, else 256].
    #[arg(long)]
    pub max_in_flight_requests: Option<usize>,
    /// Accept unauthenticated requests (logs a warning for each).
    #[arg(long)]
    pub no_auth: bool,
    /// On SIGTERM / Ctrl-C: answer new requests with ServiceUnavailableException
    /// (503) and wait at most this many seconds for requests in flight to finish,
    /// then close the listener and exit.
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
    let plans = serve_models::plans(&args, &file)?;
    let ids = plans
        .iter()
        .flat_map(|p| {
            std::iter::once(p.slot.id()).chain(p.slot.aliases().iter().map(String::as_str))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut config = file.service_config();
    if let Some(n) = args.max_in_flight_requests {
        config.max_in_flight_requests = n;
    }
    if let Some(secs) = args.request_timeout {
        if secs == 0 {
            anyhow::bail!("--request-timeout must be at least 1 second");
        }
        config.request_timeout = Duration::from_secs(secs);
    }
    let service =
        Service::with_models(config, auth, plans.iter().map(|p| p.slot.clone()).collect());
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!("serving {ids} on http://{local} (Bedrock Runtime API; OpenAI API under /v1); /ping is 200 once the models are loaded");
        // Bound first, then loaded: /ping tells orchestrators when to send work.
        let no_model = serve_models::spawn_loader(plans)?;
        let fatal = Arc::new(OnceLock::new());
        let shutdown = {
            let (service, fatal) = (service.clone(), fatal.clone());
            async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    Ok(why) = no_model => {
                        let _ = fatal.set(why);
                        return;
                    }
                }
                // Keep answering (503 for new work) until what is in flight is done.
                service.start_draining();
                let t0 = std::time::Instant::now();
                while service.in_flight() > 0 && t0.elapsed() < drain_timeout {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        service.clone().serve(listener, shutdown).await?;
        if let Some(why) = fatal.get() {
            anyhow::bail!("no model could be loaded: {why}");
        }
        match service.in_flight() {
            0 => {
                // Let the last responses' bytes leave their connections.
                tokio::time::sleep(Duration::from_millis(200)).await;
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
    tracing::info!("shutting down: new requests get 503; draining requests in flight");
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
