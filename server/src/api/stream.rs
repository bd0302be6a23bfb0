//! Streaming a generation as event-stream frames: an API-specific encoder turns
//! engine events into events, this pump frames and sends them, stops generation
//! when the client goes away, and ends with an exception frame on failure.

use std::time::{Duration, Instant};

use bytes::Bytes;
use factory_engine::{StopReason, TokenEvent, Usage};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::generation::{deadline, millis_since, model_error, timeout_error};
use crate::bedrock::eventstream::{chunk_event, error_frame, json_event};
use crate::bedrock::{BedrockError, ErrorKind};
use crate::observability::MeteredStream;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// An InvokeModelWithResponseStream `chunk` carrying native model JSON.
    Chunk(Value),
    /// A ConverseStream event: `:event-type` and payload members.
    Converse(&'static str, Value),
}

/// Latencies reported at the end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Milliseconds from submission to the end.
    pub latency_ms: u64,
    /// Milliseconds from submission to the first generated token.
    pub first_token_ms: u64,
}

/// Turns a generation into an API's events.
pub trait StreamEncoder: Send + 'static {
    /// Events sent before any token (so clients see bytes early).
    fn start(&mut self) -> Vec<StreamEvent>;
    /// Events for newly generated, non-empty `text`; `output_tokens` so far.
    fn text(&mut self, text: &str, output_tokens: usize) -> Vec<StreamEvent>;
    /// The closing events.
    fn finish(&mut self, reason: &StopReason, usage: &Usage, timing: Timing) -> Vec<StreamEvent>;
    /// After `text`: the usage to report when the encoder needs no more text
    /// (a forced tool call closed) and generation should stop now; the pump
    /// then calls `finish` with [`StopReason::EndTurn`].
    fn stop_now(&self, _output_tokens: usize) -> Option<Usage> {
        None
    }
}

/// The `amazon-bedrock-invocationMetrics` object of a last chunk.
pub fn invocation_metrics(usage: &Usage, timing: Timing) -> Value {
    json!({
        "inputTokenCount": usage.prompt_tokens,
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": timing.latency_ms,
        "firstByteLatency": timing.first_token_ms,
    })
}

/// When a stream must end, and the exception frame it then ends with.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: tokio::time::Instant,
    error: BedrockError,
}

impl Deadline {
    /// InvokeModelWithResponseStream: its `ResponseStream` models
    /// `modelTimeoutException`.
    pub fn invoke_stream(started: Instant, timeout: Duration) -> Self {
        Self {
            at: deadline(started, timeout),
            error: timeout_error(timeout),
        }
    }

    /// ConverseStream: its union has no timeout member, so the timeout is a
    /// `modelStreamErrorException` whose original status is 408.
    pub fn converse_stream(started: Instant, timeout: Duration) -> Self {
        let timeout_err = timeout_error(timeout);
        Self {
            at: deadline(started, timeout),
            error: BedrockError::new(
                ErrorKind::ModelStreamError {
                    original_status_code: Some(408),
                    original_message: Some(timeout_err.message.clone()),
                },
                timeout_err.message,
            ),
        }
    }
}

/// Sends `stream`'s events through `encoder` into `tx` on a new task, ending
/// with `deadline`'s exception frame (and aborting the request) if it passes.
pub fn spawn_pump(
    stream: MeteredStream,
    encoder: impl StreamEncoder,
    tx: mpsc::Sender<Bytes>,
    started: Instant,
    deadline: Deadline,
) {
    tokio::spawn(async move {
        let at = deadline.at;
        tokio::select! {
            () = pump(stream, encoder, tx.clone(), started) => {}
            // Dropping `pump` drops the request's stream, which aborts it.
            () = tokio::time::sleep_until(at) => {
                tracing::info!("stream aborted at the request timeout");
                send_error(&tx, &deadline.error).await;
            }
        }
    });
}

async fn pump(
    mut stream: MeteredStream,
    mut encoder: impl StreamEncoder,
    tx: mpsc::Sender<Bytes>,
    started: Instant,
) {
    if !send(&tx, encoder.start()).await {
        return;
    }
    let mut output_tokens = 0;
    let mut first_token_ms = None;
    loop {
        let ev = tokio::select! {
            // The client hung up: returning drops `stream`, which aborts the request.
            () = tx.closed() => return,
            ev = stream.next() => ev,
        };
        let events = match ev {
            Some(TokenEvent::Token { text, .. }) => {
                output_tokens += 1;
                first_token_ms.get_or_insert_with(|| millis_since(started));
                if text.is_empty() {
                    continue;
                }
                let mut events = encoder.text(&text, output_tokens);
                if let Some(usage) = encoder.stop_now(output_tokens) {
                    // Ends the rest of the generation; a finish, not an abort.
                    stream.stop_early(&StopReason::EndTurn, &usage);
                    events.extend(closing(
                        &mut encoder,
                        &StopReason::EndTurn,
                        &usage,
                        started,
                        first_token_ms,
                    ));
                    send(&tx, events).await;
                    return;
                }
                events
            }
            Some(TokenEvent::Finished { reason, usage }) => {
                let events = closing(&mut encoder, &reason, &usage, started, first_token_ms);
                send(&tx, events).await;
                return;
            }
            Some(TokenEvent::Error { message }) => {
                let err = stream_error(&message);
                stream.count_stream_error(&err);
                send_error(&tx, &err).await;
                return;
            }
            None => {
                let err = BedrockError::new(
                    ErrorKind::InternalServer,
                    "The engine stopped before the request finished.",
                );
                stream.count_stream_error(&err);
                send_error(&tx, &err).await;
                return;
            }
        };
        if !send(&tx, events).await {
            return;
        }
    }
}

/// The encoder's closing events, the last chunk carrying the invocation metrics.
fn closing(
    encoder: &mut impl StreamEncoder,
    reason: &StopReason,
    usage: &Usage,
    started: Instant,
    first_token_ms: Option<u64>,
) -> Vec<StreamEvent> {
    let latency_ms = millis_since(started);
    let timing = Timing {
        latency_ms,
        first_token_ms: first_token_ms.unwrap_or(latency_ms),
    };
    let mut events = encoder.finish(reason, usage, timing);
    // Bedrock puts the metrics on the final chunk of every provider.
    if let Some(StreamEvent::Chunk(Value::Object(last))) = events.last_mut() {
        last.insert(
            "amazon-bedrock-invocationMetrics".into(),
            invocation_metrics(usage, timing),
        );
    }
    events
}

fn stream_error(message: &str) -> BedrockError {
    let plain = model_error(message);
    BedrockError::new(
        ErrorKind::ModelStreamError {
            original_status_code: Some(500),
            original_message: Some(message.to_string()),
        },
        plain.message,
    )
}

/// Frames and sends `events`; false once the client is gone.
async fn send(tx: &mpsc::Sender<Bytes>, events: Vec<StreamEvent>) -> bool {
    for ev in events {
        let frame = match &ev {
            StreamEvent::Chunk(v) => chunk_event(v.to_string().as_bytes()),
            StreamEvent::Converse(kind, v) => json_event(kind, v.to_string()),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("event too large to frame: {e}");
                let err = BedrockError::new(ErrorKind::InternalServer, e.to_string());
                send_error(tx, &err).await;
                return false;
            }
        };
        if tx.send(Bytes::from(frame)).await.is_err() {
            return false;
        }
    }
    true
}

async fn send_error(tx: &mpsc::Sender<Bytes>, err: &BedrockError) {
    tracing::warn!("stream failed: {err}");
    if let Ok(frame) = error_frame(err) {
        let _ = tx.send(Bytes::from(frame)).await;
    }
}

impl StreamEncoder for Box<dyn StreamEncoder> {
    fn start(&mut self) -> Vec<StreamEvent> {
        (**self).start()
    }

    fn text(&mut self, text: &str, output_tokens: usize) -> Vec<StreamEvent> {
        (**self).text(text, output_tokens)
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, timing: Timing) -> Vec<StreamEvent> {
        (**self).finish(reason, usage, timing)
    }

    fn stop_now(&self, output_tokens: usize) -> Option<Usage> {
        (**self).stop_now(output_tokens)
    }
}
