//! Per-request metrics, recorded as a request's events reach the HTTP layer:
//! time to first token, inter-token latency, end-to-end latency (all from
//! monotonic `Instant`s taken here), token counters, and the queue time the
//! engine reports. None of this runs on the engine thread.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use factory_engine::{RequestStream, SeqId, StopReason, TokenEvent, Usage};
use metrics::{Counter, Histogram};

use super::names;
use super::recent::{RecentSummary, RecentWindow, Totals};
use super::registry::Registry;
use crate::bedrock::BedrockError;
use crate::http::Operation;
use crate::in_flight::InFlightPermit;

/// vLLM's `finished_reason` values.
const REASONS: [&str; 4] = ["stop", "length", "abort", "error"];

fn reason_index(reason: &StopReason) -> usize {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence(_) => 0,
        StopReason::MaxTokens | StopReason::ContextLength => 1,
    }
}
const ABORT: usize = 2;
const ERROR: usize = 3;

/// The metrics of one served model; cheap to clone. A request's own copy may
/// also hold its place under the service's in-flight cap
/// ([`RequestMetrics::holding`]), which its streams keep until they end.
#[derive(Clone)]
pub struct RequestMetrics {
    inner: Arc<Inner>,
    permit: Option<Arc<InFlightPermit>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

struct Inner {
    /// Where stream errors are counted; `None` when metrics are off.
    registry: Option<Arc<Registry>>,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    request_prompt_tokens: Histogram,
    request_generation_tokens: Histogram,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    finished: [Counter; 4],
    window: Arc<Mutex<RecentWindow>>,
}

impl RequestMetrics {
    /// Metrics that go nowhere (a model not yet mounted in a Service); the
    /// status window still works.
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: None,
                ttft: Histogram::noop(),
                itl: Histogram::noop(),
                e2e: Histogram::noop(),
                queue: Histogram::noop(),
                request_prompt_tokens: Histogram::noop(),
                request_generation_tokens: Histogram::noop(),
                prompt_tokens: Counter::noop(),
                generation_tokens: Counter::noop(),
                finished: [(); 4].map(|_| Counter::noop()),
                window: Arc::new(Mutex::new(RecentWindow::new(Instant::now()))),
            }),
            permit: None,
        }
    }

    /// The metrics of `model_name` in `registry`, labelled as vLLM labels them;
    /// its requests also go into `window`, which the service's models share.
    pub fn new(
        registry: Arc<Registry>,
        model_name: &str,
        window: Arc<Mutex<RecentWindow>>,
    ) -> Self {
        let labels = [("model_name", model_name), ("engine", "0")];
        let h = |name| registry.histogram(name, &labels);
        let c = |name| registry.counter(name, &labels);
        let finished = REASONS.map(|reason| {
            registry.counter(
                names::REQUEST_SUCCESS,
                &[
                    ("model_name", model_name),
                    ("engine", "0"),
                    ("finished_reason", reason),
                ],
            )
        });
        Self {
            inner: Arc::new(Inner {
                ttft: h(names::TIME_TO_FIRST_TOKEN),
                itl: h(names::INTER_TOKEN_LATENCY),
                e2e: h(names::E2E_REQUEST_LATENCY),
                queue: h(names::REQUEST_QUEUE_TIME),
                request_prompt_tokens: h(names::REQUEST_PROMPT_TOKENS),
                request_generation_tokens: h(names::REQUEST_GENERATION_TOKENS),
                prompt_tokens: c(names::PROMPT_TOKENS),
                generation_tokens: c(names::GENERATION_TOKENS),
                finished,
                window,
                registry: Some(registry),
            }),
            permit: None,
        }
    }

    /// This request's copy, holding `permit` until the request and every
    /// stream it submits are gone.
    pub fn holding(mut self, permit: InFlightPermit) -> Self {
        self.permit = Some(Arc::new(permit));
        self
    }

    /// Wraps a submitted request of `prompt_tokens` so its events are measured.
    pub fn track(&self, stream: RequestStream, prompt_tokens: usize) -> MeteredStream {
        MeteredStream {
            _permit: self.permit.clone(),
            inner: stream,
            metrics: Self {
                inner: self.inner.clone(),
                permit: None,
            },
            operation: "Unknown",
            submitted: Instant::now(),
            prompt_tokens,
            last_token: None,
            ended: false,
        }
    }

    /// The last minute and the totals since the start, for the status page.
    pub fn recent(&self) -> (RecentSummary, Totals) {
        let mut w = self.window();
        (w.summary(Instant::now()), w.totals())
    }

    /// Counts an error answered to the client as `operation`.
    pub fn count_error(&self, operation: &str, error_type: &str) {
        if let Some(r) = &self.inner.registry {
            r.counter(
                names::ERRORS,
                &[("operation", operation), ("error_type", error_type)],
            )
            .increment(1);
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, RecentWindow> {
        // A panic elsewhere while holding it leaves plain numbers behind.
        self.inner
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn first_token(&self, at: Instant, ttft: Duration, prompt_tokens: usize) {
        let i = &self.inner;
        i.ttft.record(ttft.as_secs_f64());
        i.prompt_tokens.increment(prompt_tokens as u64);
        i.generation_tokens.increment(1);
        self.window().first_token(at, ttft, prompt_tokens);
    }

    fn next_token(&self, at: Instant, itl: Duration) {
        let i = &self.inner;
        i.itl.record(itl.as_secs_f64());
        i.generation_tokens.increment(1);
        self.window().next_token(at, itl);
    }

    fn finished(&self, at: Instant, e2e: Duration, reason: &StopReason, usage: &Usage) {
        let i = &self.inner;
        i.e2e.record(e2e.as_secs_f64());
        i.queue.record(usage.queue_time.as_secs_f64());
        i.request_prompt_tokens.record(usage.prompt_tokens as f64);
        i.request_generation_tokens
            .record(usage.output_tokens as f64);
        i.finished[reason_index(reason)].increment(1);
        self.window().finished(at, e2e);
    }

    fn ended_early(&self, why: usize) {
        self.inner.finished[why].increment(1);
    }
}

/// A request's stream of events, measured as they are read: the same
/// `next()` as the engine's [`RequestStream`]. Dropping it before the end
/// aborts the request (counted as `finished_reason="abort"`).
#[derive(Debug)]
pub struct MeteredStream {
    /// Declared first, so dropped first: the place under the service's cap
    /// is free by the time the engine sees the stream go.
    _permit: Option<Arc<InFlightPermit>>,
    inner: RequestStream,
    metrics: RequestMetrics,
    operation: &'static str,
    submitted: Instant,
    prompt_tokens: usize,
    last_token: Option<Instant>,
    ended: bool,
}

impl MeteredStream {
    /// The engine's id of this request.
    pub fn id(&self) -> SeqId {
        self.inner.id()
    }

    /// Names the operation streaming this request, for error counts.
    pub fn for_operation(mut self, operation: Operation) -> Self {
        self.operation = super::operation_name(operation);
        self
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<TokenEvent> {
        let ev = self.inner.next().await;
        self.observe(ev.as_ref());
        ev
    }

    /// Ends the request here on the server's own decision (a forced tool
    /// call closed): counted as finished with `reason`, not as an abort;
    /// dropping the stream then stops the generation.
    pub fn stop_early(mut self, reason: &StopReason, usage: &Usage) {
        if !self.ended {
            self.ended = true;
            let now = Instant::now();
            let e2e = now.saturating_duration_since(self.submitted);
            self.metrics.finished(now, e2e, reason, usage);
        }
        self.inner.stop();
    }

    /// Counts `err`, sent to the client as an exception frame.
    pub fn count_stream_error(&self, err: &BedrockError) {
        self.metrics.count_error(self.operation, err.kind.code());
    }

    fn observe(&mut self, ev: Option<&TokenEvent>) {
        if self.ended {
            return;
        }
        let now = Instant::now();
        match ev {
            Some(TokenEvent::Token { .. }) => match self.last_token.replace(now) {
                None => self.metrics.first_token(
                    now,
                    now.saturating_duration_since(self.submitted),
                    self.prompt_tokens,
                ),
                Some(prev) => self
                    .metrics
                    .next_token(now, now.saturating_duration_since(prev)),
            },
            Some(TokenEvent::Finished { reason, usage }) => {
                self.ended = true;
                let e2e = now.saturating_duration_since(self.submitted);
                self.metrics.finished(now, e2e, reason, usage);
            }
            Some(TokenEvent::Error { .. }) | None => {
                self.ended = true;
                self.metrics.ended_early(ERROR);
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics.ended_early(ABORT);
        }
    }
}
