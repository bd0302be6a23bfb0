//! Observability: Prometheus metrics at `GET /metrics` and a live status
//! page at `GET /` and `GET /status` (polling `GET /status.json`).
//!
//! Names follow vLLM where vLLM has one (`vllm:*`, with its labels and
//! buckets) so inference gateways and vLLM dashboards work; ours are
//! `factory_*`. Each [`crate::Service`] owns its registry (no global
//! recorder), so several services in one process keep separate numbers.
//!
//! Where numbers come from, keeping the engine loop free of metric work:
//! - engine state (running, waiting, KV blocks, prefix-cache tokens,
//!   preemptions) is the snapshot the engine loop already publishes,
//!   read when `/metrics` or `/status.json` is requested;
//! - per-request latencies are measured here from monotonic `Instant`s as
//!   each event reaches the HTTP layer ([`MeteredStream`]); queue time is
//!   the engine's (submission to first scheduling, in `Usage`);
//! - HTTP statuses and Bedrock error types are counted as responses leave
//!   the service, and exception frames as streams send them.
//!
//! These routes are unauthenticated, like `/ping`: scrapers and browsers do
//! not sign requests, and they show only aggregate numbers and model ids,
//! never prompts or outputs. Keep the port private if that is too much.

pub mod names;
pub mod recent;
mod registry;
mod request_metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use factory_engine::EngineStats;
use http::{Response, StatusCode};
use metrics::{Counter, Gauge};
use serde_json::{json, Value};

pub use registry::Registry;
pub use request_metrics::{MeteredStream, RequestMetrics};

use crate::http::response::{bytes_response, json_response, ERROR_TYPE};
use crate::http::route::route;
use crate::http::{Operation, Page, ResponseBody, Route};
use crate::model_slot::{ModelSlot, ModelState};
use recent::RecentWindow;

/// The status page: one self-contained file, no external fetches.
const STATUS_PAGE: &str = include_str!("status.html");
/// Prometheus text format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Histogram samples are moved into buckets at least this often while
/// requests arrive (scrapes do it too).
const UPKEEP_EVERY_MS: u64 = 5_000;
/// The token-count histograms' buckets (1, 2, 5, 10, ...) reach this far:
/// models load after the registry is made, so their context is not known yet.
const TOKEN_BUCKETS_UP_TO: usize = 1 << 20;

/// The Bedrock name of an operation, as metrics label it.
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Converse => "Converse",
        Operation::ConverseStream => "ConverseStream",
        Operation::Invoke => "InvokeModel",
        Operation::InvokeStream => "InvokeModelWithResponseStream",
        Operation::CountTokens => "CountTokens",
    }
}

/// The `operation` label of a request to `method` `raw_path`.
pub fn route_name(method: &str, raw_path: &str) -> &'static str {
    match route(method, raw_path) {
        Ok(Route::Model { operation, .. }) => operation_name(operation),
        Ok(Route::ListFoundationModels) => "ListFoundationModels",
        Ok(Route::GetFoundationModel(_)) => "GetFoundationModel",
        Ok(Route::Ping) => "Ping",
        Ok(Route::Observe(Page::Metrics)) => "Metrics",
        Ok(Route::Observe(Page::Status)) => "Status",
        Ok(Route::Observe(Page::StatusJson)) => "StatusJson",
        Err(_) => "Unknown",
    }
}

/// Engine numbers, sampled from its stats snapshot on each scrape.
struct EngineMetrics {
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    gpu_kv_usage: Gauge,
    blocks_total: Gauge,
    blocks_free: Gauge,
    in_flight: Gauge,
    prefix_queries: Counter,
    prefix_hits: Counter,
    preemptions: Counter,
    aborted: Counter,
    steps: Counter,
}

impl EngineMetrics {
    fn new(registry: &Registry, model_name: &str) -> Self {
        let labels = [("model_name", model_name), ("engine", "0")];
        let g = |name| registry.gauge(name, &labels);
        let c = |name| registry.counter(name, &labels);
        let blocks = |state| {
            registry.gauge(
                names::KV_CACHE_BLOCKS,
                &[
                    ("model_name", model_name),
                    ("engine", "0"),
                    ("state", state),
                ],
            )
        };
        Self {
            running: g(names::NUM_REQUESTS_RUNNING),
            waiting: g(names::NUM_REQUESTS_WAITING),
            kv_usage: g(names::KV_CACHE_USAGE_PERC),
            gpu_kv_usage: g(names::GPU_CACHE_USAGE_PERC),
            blocks_total: blocks("total"),
            blocks_free: blocks("free"),
            in_flight: g(names::REQUESTS_IN_FLIGHT),
            prefix_queries: c(names::PREFIX_CACHE_QUERIES),
            prefix_hits: c(names::PREFIX_CACHE_HITS),
            preemptions: c(names::NUM_PREEMPTIONS),
            aborted: c(names::REQUESTS_ABORTED),
            steps: c(names::ENGINE_STEPS),
        }
    }

    fn sample(&self, s: &EngineStats, in_flight: usize) {
        self.running.set(s.running as f64);
        self.waiting.set(s.waiting as f64);
        self.kv_usage.set(s.kv_usage());
        self.gpu_kv_usage.set(s.kv_usage());
        self.blocks_total.set(s.kv_blocks_total as f64);
        self.blocks_free.set(s.kv_blocks_free as f64);
        self.in_flight.set(in_flight as f64);
        self.prefix_queries
            .absolute(s.scheduler.prefix.queried_tokens);
        self.prefix_hits.absolute(s.scheduler.prefix.hit_tokens);
        self.preemptions.absolute(s.scheduler.preemptions);
        self.aborted.absolute(s.aborted_requests);
        self.steps.absolute(s.scheduler.steps);
    }
}

/// One configured model's metrics; its engine numbers are sampled once it is ready.
struct ModelObs {
    slot: Arc<ModelSlot>,
    requests: RequestMetrics,
    engine_metrics: EngineMetrics,
}

struct Inner {
    registry: Arc<Registry>,
    models: Vec<ModelObs>,
    /// The last minute of requests across all models, for the status page.
    window: Arc<Mutex<RecentWindow>>,
    started: Instant,
    /// Milliseconds after `started` of the last upkeep.
    last_upkeep_ms: AtomicU64,
}

/// Metrics and status of one Service; cheap to clone.
#[derive(Clone)]
pub struct Observability {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.inner.models.iter().map(|m| m.slot.id()).collect();
        f.debug_struct("Observability")
            .field("models", &ids)
            .finish_non_exhaustive()
    }
}

impl Observability {
    /// A fresh registry for `models`, labelled by their primary ids (known
    /// before they load, so series exist from the start).
    pub fn new(models: &[Arc<ModelSlot>]) -> Self {
        let registry = Arc::new(Registry::new(TOKEN_BUCKETS_UP_TO));
        let window = Arc::new(Mutex::new(RecentWindow::new(Instant::now())));
        let models = models
            .iter()
            .map(|slot| ModelObs {
                slot: slot.clone(),
                requests: RequestMetrics::new(registry.clone(), slot.id(), window.clone()),
                engine_metrics: EngineMetrics::new(&registry, slot.id()),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                registry,
                models,
                window,
                started: Instant::now(),
                last_upkeep_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Where requests for the model with primary id `model_id` are measured
    /// (a no-op recorder for a model this service was not built with).
    pub fn request_metrics(&self, model_id: &str) -> RequestMetrics {
        self.inner
            .models
            .iter()
            .find(|m| m.slot.id() == model_id)
            .map_or_else(RequestMetrics::disabled, |m| m.requests.clone())
    }

    /// Answers one of the observability routes.
    pub fn page(&self, page: Page) -> Response<ResponseBody> {
        match page {
            Page::Metrics => bytes_response(StatusCode::OK, PROMETHEUS_TEXT, self.render()),
            Page::Status => bytes_response(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
            Page::StatusJson => json_response(&self.status()),
        }
    }

    /// The Prometheus exposition, engine numbers of ready models sampled now.
    pub fn render(&self) -> String {
        let i = &self.inner;
        for m in &i.models {
            if let Some(model) = m.slot.model() {
                m.engine_metrics
                    .sample(&model.engine.stats(), model.engine.in_flight());
            }
        }
        i.registry.render()
    }

    /// What the status page shows: engine numbers summed over ready models,
    /// latencies over the last minute across all of them.
    pub fn status(&self) -> Value {
        let i = &self.inner;
        let (mut running, mut waiting, mut in_flight, mut preemptions) = (0, 0, 0, 0);
        let (mut blocks_total, mut blocks_free) = (0, 0);
        let (mut queried, mut hits) = (0, 0);
        let mut models = Vec::new();
        for m in &i.models {
            let (state, max_model_len) = match m.slot.state() {
                ModelState::Loading => ("loading", None),
                ModelState::Failed(_) => ("failed", None),
                ModelState::Ready(model) => {
                    let s = model.engine.stats();
                    running += s.running;
                    waiting += s.waiting;
                    in_flight += model.engine.in_flight();
                    preemptions += s.scheduler.preemptions;
                    blocks_total += s.kv_blocks_total;
                    blocks_free += s.kv_blocks_free;
                    queried += s.scheduler.prefix.queried_tokens;
                    hits += s.scheduler.prefix.hit_tokens;
                    ("ready", Some(model.engine.limits().max_model_len))
                }
            };
            models.push(json!({
                "id": m.slot.id(),
                "aliases": m.slot.aliases(),
                "state": state,
                "max_model_len": max_model_len,
            }));
        }
        let (recent, totals) = {
            let mut w = i.window.lock().unwrap_or_else(PoisonError::into_inner);
            (w.summary(Instant::now()), w.totals())
        };
        let usage = if blocks_total == 0 {
            0.0
        } else {
            1.0 - blocks_free as f64 / blocks_total as f64
        };
        let hit_rate = (queried > 0).then(|| hits as f64 / queried as f64);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": i.started.elapsed().as_secs_f64(),
            "models": models,
            "requests": {
                "running": running,
                "waiting": waiting,
                "in_flight": in_flight,
            },
            "kv_cache": {
                "usage": usage,
                "blocks_total": blocks_total,
                "blocks_free": blocks_free,
            },
            "prefix_cache": {
                "queried_tokens": queried,
                "hit_tokens": hits,
                "hit_rate": hit_rate,
            },
            "preemptions": preemptions,
            "last_minute": recent,
            "totals": totals,
        })
    }

    /// Counts a response to a request for `operation`, and its Bedrock error
    /// type if it is an error.
    pub fn count_response(&self, operation: &str, resp: &Response<ResponseBody>) {
        let status = resp.status().as_u16().to_string();
        self.inner
            .registry
            .counter(
                names::HTTP_REQUESTS,
                &[("operation", operation), ("status", &status)],
            )
            .increment(1);
        if let Some(kind) = resp.headers().get(ERROR_TYPE) {
            // `Code:namespace` -> `Code`.
            let code = kind.to_str().unwrap_or_default();
            let code = code.split(':').next().unwrap_or_default();
            self.inner
                .registry
                .counter(
                    names::ERRORS,
                    &[("operation", operation), ("error_type", code)],
                )
                .increment(1);
        }
    }

    /// Moves histogram samples into buckets if that has not happened for a
    /// while, so memory stays flat without a scraper or a timer task.
    pub fn upkeep_if_due(&self) {
        let i = &self.inner;
        let now = u64::try_from(i.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = i.last_upkeep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < UPKEEP_EVERY_MS {
            return;
        }
        // One caller wins; the others carry on.
        if i.last_upkeep_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            i.registry.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_numbers_render_under_vllm_names() {
        let registry = Registry::new(2048);
        let m = EngineMetrics::new(&registry, "m");
        let mut stats = EngineStats {
            waiting: 3,
            running: 2,
            kv_blocks_total: 100,
            kv_blocks_free: 25,
            aborted_requests: 4,
            ..EngineStats::default()
        };
        stats.scheduler.steps = 9;
        stats.scheduler.preemptions = 5;
        stats.scheduler.prefix.queried_tokens = 640;
        stats.scheduler.prefix.hit_tokens = 320;
        m.sample(&stats, 6);
        let text = registry.render();
        let labels = r#"{model_name="m",engine="0"}"#;
        for line in [
            format!("vllm:num_requests_waiting{labels} 3"),
            format!("vllm:num_requests_running{labels} 2"),
            format!("vllm:kv_cache_usage_perc{labels} 0.75"),
            format!("vllm:gpu_cache_usage_perc{labels} 0.75"),
            format!("vllm:prefix_cache_queries_total{labels} 640"),
            format!("vllm:prefix_cache_hits_total{labels} 320"),
            format!("vllm:num_preemptions_total{labels} 5"),
            format!("factory_requests_aborted_total{labels} 4"),
            format!("factory_requests_in_flight{labels} 6"),
            format!("factory_engine_steps_total{labels} 9"),
            r#"factory_kv_cache_blocks{model_name="m",engine="0",state="free"} 25"#.into(),
            "# TYPE vllm:prefix_cache_hits_total counter".into(),
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        // Counters follow the engine's totals, also when sampled again.
        stats.scheduler.preemptions = 7;
        m.sample(&stats, 0);
        assert!(registry
            .render()
            .contains(&format!("vllm:num_preemptions_total{labels} 7")));
    }

    #[test]
    fn registries_of_two_services_are_separate() {
        let a = Registry::new(100);
        let b = Registry::new(100);
        a.counter(
            names::HTTP_REQUESTS,
            &[("operation", "Ping"), ("status", "200")],
        )
        .increment(2);
        let line = r#"factory_http_requests_total{operation="Ping",status="200"} 2"#;
        assert!(a.render().contains(line));
        assert!(!b.render().contains("factory_http_requests_total{"));
    }

    #[test]
    fn histograms_use_vllm_buckets() {
        let r = Registry::new(100);
        let h = r.histogram(names::TIME_TO_FIRST_TOKEN, &[("model_name", "m")]);
        h.record(0.03);
        h.record(3.0);
        let text = r.render();
        for line in [
            r#"vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.02"} 0"#,
            r#"vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.04"} 1"#,
            r#"vllm:time_to_first_token_seconds_bucket{model_name="m",le="5"} 2"#,
            r#"vllm:time_to_first_token_seconds_bucket{model_name="m",le="+Inf"} 2"#,
            r#"vllm:time_to_first_token_seconds_count{model_name="m"} 2"#,
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn operations_are_named_as_bedrock_names_them() {
        assert_eq!(
            route_name("POST", "/model/x/converse-stream"),
            "ConverseStream"
        );
        assert_eq!(
            route_name("POST", "/model/x/invoke-with-response-stream"),
            "InvokeModelWithResponseStream"
        );
        assert_eq!(route_name("GET", "/metrics"), "Metrics");
        assert_eq!(route_name("GET", "/nope"), "Unknown");
    }
}
