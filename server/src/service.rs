//! `factory_server::Service`: the Bedrock routes as a hyper service that the
//! `factory serve` binary runs and gateways can mount in their own servers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::api::{self, foundation_models, Call};
use crate::bedrock::{Authenticator, BedrockError, ErrorKind, RequestParts};
use crate::health;
use crate::http::body::read_limited;
use crate::http::percent::percent_decode;
use crate::http::response::{
    error_response, json_response, new_request_id, set_header, REQUEST_ID,
};
use crate::http::route::route;
use crate::http::{Operation, ResponseBody, Route};
use crate::in_flight::InFlight;
use crate::model_slot::ModelSlot;
use crate::observability::{route_name, Observability};
use crate::served_model::ServedModel;

/// Limits and defaults of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Largest request body accepted, in bytes (Bedrock's own limit is 25 MB).
    pub max_body_bytes: usize,
    /// Tokens generated when a request sets no limit.
    pub default_max_tokens: usize,
    /// The region written into the ARNs of `/foundation-models`.
    pub region: String,
    /// Generation requests in flight (running or queued) across all models
    /// beyond which new ones get ThrottlingException (429). Each model also
    /// caps its own: `max_num_seqs` running plus `max_queued_requests` waiting.
    pub max_in_flight_requests: usize,
    /// How long a request may take: beyond it a non-streaming request gets
    /// ModelTimeoutException (408) and a stream ends with an exception frame;
    /// either way its generation is aborted. Models may set their own.
    pub request_timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 25_000_000,
            default_max_tokens: 512,
            region: "us-east-1".into(),
            max_in_flight_requests: 256,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request is accepted, and a warning logged for each.
    Disabled,
    /// SigV4 and/or bearer API keys are required.
    Required(Authenticator<HashMap<String, String>>),
}

struct Shared {
    config: ServiceConfig,
    auth: Auth,
    models: Vec<Arc<ModelSlot>>,
    /// Set on shutdown: new requests get ServiceUnavailableException.
    draining: AtomicBool,
    obs: Observability,
    /// Generation requests admitted and not yet finished, all models together.
    in_flight: InFlight,
}

/// The Bedrock Runtime (plus model discovery and `/ping`) over HTTP; cheap to clone.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.shared.config)
            .field("models", &self.shared.models)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service answering for `model`.
    pub fn new(config: ServiceConfig, auth: Auth, model: ServedModel) -> Self {
        Self::with_models(config, auth, vec![Arc::new(ModelSlot::ready(model))])
    }

    /// A service answering for several models, each routed by its ids; models
    /// still loading are answered with ServiceUnavailableException until ready.
    pub fn with_models(config: ServiceConfig, auth: Auth, models: Vec<Arc<ModelSlot>>) -> Self {
        let obs = Observability::new(&models);
        Self {
            shared: Arc::new(Shared {
                config,
                auth,
                models,
                draining: AtomicBool::new(false),
                in_flight: InFlight::default(),
                obs,
            }),
        }
    }

    /// The configured models.
    pub fn models(&self) -> &[Arc<ModelSlot>] {
        &self.shared.models
    }

    /// From now on, new requests get ServiceUnavailableException and `/ping`
    /// reports draining; requests already in flight go on.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Whether [`Service::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Generation requests admitted and not yet finished (their streams
    /// included), all models together: what `max_in_flight_requests` caps
    /// and what a drain waits for.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.current()
    }

    /// Its metrics and status.
    pub fn observability(&self) -> &Observability {
        &self.shared.obs
    }

    /// Answers one request; every failure is a Bedrock error response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if crate::openai::is_openai_path(req.uri().path()) {
            return crate::openai::handle(self.openai_context(), req).await;
        }
        let request_id = new_request_id();
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let operation = route_name(&method, &path);
        let mut resp = match self.dispatch(req).await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::info!("{method} {path}: {err}");
                error_response(&err)
            }
        };
        tracing::debug!("{method} {path} -> {}", resp.status());
        set_header(&mut resp, HeaderName::from_static(REQUEST_ID), &request_id);
        self.shared.obs.count_response(operation, &resp);
        self.shared.obs.upkeep_if_due();
        resp
    }

    fn openai_context(&self) -> crate::openai::Context<'_> {
        let shared = &*self.shared;
        crate::openai::Context {
            models: &shared.models,
            obs: &shared.obs,
            in_flight: &shared.in_flight,
            auth: &shared.auth,
            max_body_bytes: shared.config.max_body_bytes,
            default_max_tokens: shared.config.default_max_tokens,
            max_in_flight_requests: shared.config.max_in_flight_requests,
            draining: self.is_draining(),
        }
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Response<ResponseBody>, BedrockError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = &*self.shared;
        let (parts, body) = req.into_parts();
        match route(parts.method.as_str(), parts.uri.path())? {
            // Unauthenticated and answered while draining: load balancers,
            // scrapers and browsers do not sign, and a drain is worth watching.
            Route::Ping => Ok(health::response(&shared.models, self.is_draining())),
            Route::Observe(page) => Ok(shared.obs.page(page)),
            Route::ListFoundationModels => {
                self.admit_signed(&parts, body).await?;
                let query = decode_query(parts.uri.query().unwrap_or_default());
                Ok(json_response(&foundation_models::list(
                    &shared.models,
                    &shared.config.region,
                    &query,
                )))
            }
            Route::GetFoundationModel(id) => {
                self.admit_signed(&parts, body).await?;
                Ok(json_response(&foundation_models::get(
                    &shared.models,
                    &shared.config.region,
                    &id,
                )?))
            }
            Route::Model {
                operation,
                model_id,
            } => {
                let body = self.admit_signed(&parts, body).await?;
                let model = self.ready_model(&model_id)?;
                let mut metrics = shared.obs.request_metrics(&model.id);
                if !matches!(operation, Operation::CountTokens) {
                    // Reserved atomically; held until the request's streams end.
                    let permit = shared
                        .in_flight
                        .try_acquire(shared.config.max_in_flight_requests)
                        .ok_or_else(|| {
                            BedrockError::new(
                                ErrorKind::Throttling,
                                "Too many requests, please wait before trying again.",
                            )
                        })?;
                    metrics = metrics.holding(permit);
                }
                let call = Call {
                    model,
                    requested_id: &model_id,
                    headers: &parts.headers,
                    body: &body,
                    default_max_tokens: model
                        .limits
                        .default_max_tokens
                        .unwrap_or(shared.config.default_max_tokens),
                    request_timeout: model
                        .limits
                        .request_timeout
                        .unwrap_or(shared.config.request_timeout),
                    metrics: &metrics,
                };
                api::run(operation, call).await
            }
        }
    }

    /// For the signed routes: refuses while draining, reads the body within
    /// the size limit and checks the signature (or bearer key) over it.
    async fn admit_signed<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Bytes, BedrockError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = &*self.shared;
        if self.is_draining() {
            return Err(health::draining_error());
        }
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > shared.config.max_body_bytes as u64) {
            return Err(BedrockError::validation(format!(
                "The request body exceeds the limit of {} bytes.",
                shared.config.max_body_bytes
            )));
        }
        let body = read_limited(body, shared.config.max_body_bytes).await?;
        self.authenticate(parts, &body)?;
        Ok(body)
    }

    /// The ready model `requested` names; an unknown id is a ValidationException
    /// (as Bedrock answers), a model still loading or failed a ServiceUnavailableException.
    fn ready_model(&self, requested: &str) -> Result<&ServedModel, BedrockError> {
        let slot = self
            .shared
            .models
            .iter()
            .find(|m| m.answers_to(requested))
            .ok_or_else(|| BedrockError::validation("The provided model identifier is invalid."))?;
        match slot.model() {
            Some(model) => Ok(model),
            None => Err(health::model_unavailable(slot).unwrap_or_else(|| {
                BedrockError::new(ErrorKind::ServiceUnavailable, "The model is not ready.")
            })),
        }
    }

    fn authenticate(&self, parts: &http::request::Parts, body: &[u8]) -> Result<(), BedrockError> {
        let authenticator = match &self.shared.auth {
            Auth::Disabled => {
                tracing::warn!(
                    "authentication is off (--no-auth): {} {} served without credentials",
                    parts.method,
                    parts.uri.path()
                );
                return Ok(());
            }
            Auth::Required(a) => a,
        };
        // Headers that are not text cannot be signed by SDKs; leaving them out
        // makes any that were signed fail as missing.
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let request = RequestParts {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or_default(),
            headers: &headers,
            body,
        };
        authenticator.authenticate(&request, SystemTime::now())?;
        Ok(())
    }

    /// Serves connections from `listener` (HTTP/1.1 keep-alive, or HTTP/2) until
    /// `shutdown` completes; connections already open finish on their own tasks.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the rest.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Streamed tokens are small writes: Nagle's algorithm, meeting a
            // client's delayed ACKs, would hold each back by up to ~40 ms.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY on the connection from {peer}: {e}");
            }
            let service = self.clone();
            tokio::spawn(async move {
                let conn = auto::Builder::new(TokioExecutor::new());
                if let Err(e) = conn.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
            });
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// `k=v&...` with each side percent-decoded (`+` is not a space in AWS queries).
fn decode_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}
