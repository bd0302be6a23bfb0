//! The async face of the engine: a handle to submit requests and a stream
//! of events per request, with the engine loop on its own thread.
//!
//! The loop never waits on I/O: events go out through unbounded channels,
//! commands come in through a channel it drains between steps, and it
//! sleeps only when it has nothing to do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::core::{EngineCore, EventSink, RequestLimits, SubmitError};
use crate::request::{GenerateRequest, TokenEvent};
use crate::scheduler::{SchedulerStats, SeqId};

enum Command {
    Add {
        id: SeqId,
        req: GenerateRequest,
        sink: EventSink,
        /// When `submit` was called: queue time counts from here.
        arrived: Instant,
    },
    Abort(SeqId),
    Stop(SeqId),
}

/// A snapshot of the engine's state for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    pub waiting: usize,
    pub running: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_free: usize,
    pub scheduler: SchedulerStats,
    /// Requests aborted by their callers (stream dropped) since start.
    pub aborted_requests: u64,
    /// Tokens computed and steps run since start.
    pub tokens_computed: u64,
    /// Time spent inside the executor and in whole steps, in seconds.
    pub execute_seconds: f64,
    pub step_seconds: f64,
}

impl EngineStats {
    /// Fraction of KV blocks in use (evictable cached blocks count as free).
    pub fn kv_usage(&self) -> f64 {
        if self.kv_blocks_total == 0 {
            return 0.0;
        }
        1.0 - self.kv_blocks_free as f64 / self.kv_blocks_total as f64
    }
}

struct Shared {
    limits: RequestLimits,
    max_running: usize,
    next_id: AtomicU64,
    /// Streams submitted and not yet dropped.
    in_flight: Arc<AtomicUsize>,
    stats: Mutex<EngineStats>,
}

/// A cloneable handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Starts the engine loop on its own thread.
    pub fn spawn(core: EngineCore) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        // The KV cache's size is known before the first step: callers see it at once.
        let blocks = core.scheduler().blocks();
        let initial = EngineStats {
            kv_blocks_total: blocks.num_blocks(),
            kv_blocks_free: blocks.num_free(),
            ..EngineStats::default()
        };
        let shared = Arc::new(Shared {
            limits: core.limits(),
            max_running: core.scheduler().config().max_num_seqs,
            next_id: AtomicU64::new(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
            stats: Mutex::new(initial),
        });
        let loop_shared = shared.clone();
        // Detached: the loop ends once every handle and stream is dropped.
        std::thread::Builder::new()
            .name("factory-engine".into())
            .spawn(move || run_loop(core, rx, &loop_shared))?;
        Ok(Self { tx, shared })
    }

    /// What requests may ask of this engine.
    pub fn limits(&self) -> &RequestLimits {
        &self.shared.limits
    }

    /// Submits a request. Bad requests are refused here; the stream then
    /// yields the request's tokens and ends with `Finished` or `Error`.
    /// Dropping the stream aborts the request.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError> {
        self.submit_within(req, usize::MAX)
    }

    /// [`EngineHandle::submit`], refused with [`SubmitError::Busy`] when
    /// `max_in_flight` streams are already in flight. The place is reserved
    /// atomically, so concurrent callers never overshoot the limit.
    pub fn submit_within(
        &self,
        req: GenerateRequest,
        max_in_flight: usize,
    ) -> Result<RequestStream, SubmitError> {
        self.shared.limits.check(&req)?;
        self.shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_in_flight).then_some(n + 1)
            })
            .map_err(|_| SubmitError::Busy {
                limit: max_in_flight,
            })?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sink, rx) = unbounded_channel();
        let arrived = Instant::now();
        let add = Command::Add {
            id,
            req,
            sink,
            arrived,
        };
        if self.tx.send(add).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Closed);
        }
        Ok(RequestStream {
            id,
            rx,
            tx: self.tx.clone(),
            done: false,
            in_flight: self.shared.in_flight.clone(),
        })
    }

    /// Request streams submitted and not yet dropped (waiting, running, or
    /// finished but still held by their callers): what servers limit.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Most sequences the engine runs at once (its scheduler's `max_num_seqs`);
    /// more requests wait in its queue.
    pub fn max_running(&self) -> usize {
        self.shared.max_running
    }

    /// The latest stats snapshot (updated after every step).
    pub fn stats(&self) -> EngineStats {
        self.shared.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

/// One request's events.
#[derive(Debug)]
pub struct RequestStream {
    id: SeqId,
    rx: UnboundedReceiver<TokenEvent>,
    tx: Sender<Command>,
    done: bool,
    in_flight: Arc<AtomicUsize>,
}

impl RequestStream {
    /// The engine's id of this request.
    pub fn id(&self) -> SeqId {
        self.id
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<TokenEvent> {
        let ev = self.rx.recv().await;
        self.note(&ev);
        ev
    }

    /// [`RequestStream::next`] for synchronous callers (not inside an
    /// async runtime).
    pub fn blocking_next(&mut self) -> Option<TokenEvent> {
        let ev = self.rx.blocking_recv();
        self.note(&ev);
        ev
    }

    /// Ends the request now because the caller has what it needs (a forced
    /// tool call closed): its blocks are freed as on an abort, but it is not
    /// counted as aborted. Events already sent can still be read.
    pub fn stop(&mut self) {
        if !self.done {
            self.done = true;
            // Sent before the receiver drops, so the engine sees the stop
            // before it could notice the closed channel and count an abort.
            let _ = self.tx.send(Command::Stop(self.id));
        }
    }

    fn note(&mut self, ev: &Option<TokenEvent>) {
        if matches!(
            ev,
            None | Some(TokenEvent::Finished { .. } | TokenEvent::Error { .. })
        ) {
            self.done = true;
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.done {
            // The engine may already be gone; then there is nothing to free.
            let _ = self.tx.send(Command::Abort(self.id));
        }
    }
}

fn apply(core: &mut EngineCore, cmd: Command) {
    match cmd {
        Command::Add {
            id,
            req,
            sink,
            arrived,
        } => {
            if let Err(e) = core.add_request_at(id, req, sink.clone(), arrived) {
                let _ = sink.send(TokenEvent::Error {
                    message: e.to_string(),
                });
            }
        }
        Command::Abort(id) => core.abort(id),
        Command::Stop(id) => core.stop(id),
    }
}

fn run_loop(mut core: EngineCore, rx: Receiver<Command>, shared: &Shared) {
    let mut totals = EngineStats::default();
    loop {
        if !core.has_work() {
            // Idle: sleep until a command arrives or every handle is gone.
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(cmd) => apply(&mut core, cmd),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            apply(&mut core, cmd);
        }
        if core.has_work() {
            let report = core.step();
            totals.tokens_computed += report.tokens as u64;
            totals.execute_seconds += report.execute.as_secs_f64();
            totals.step_seconds += report.total.as_secs_f64();
        }
        let sched = core.scheduler();
        let snapshot = EngineStats {
            waiting: sched.num_waiting(),
            running: sched.num_running(),
            kv_blocks_total: sched.blocks().num_blocks(),
            kv_blocks_free: sched.blocks().num_free(),
            scheduler: sched.stats(),
            aborted_requests: core.aborted(),
            ..totals
        };
        if let Ok(mut s) = shared.stats.lock() {
            *s = snapshot;
        }
    }
    tracing::debug!("engine loop stopped");
}
