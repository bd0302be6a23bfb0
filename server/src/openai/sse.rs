//! Streaming as OpenAI does: server-sent events `data: {chunk}\n\n`, a last
//! chunk with `finish_reason`, then (with `stream_options.include_usage`) a
//! chunk with `usage` and no choices, then `data: [DONE]`. A failure after the
//! stream started is one `data: {"error": {...}}` event, and the stream ends.

use std::sync::Arc;

use bytes::Bytes;
use factory_engine::TokenEvent;

use crate::observability::MeteredStream;
use factory_models::tokenizer::Tokenizer;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::OpenAiError;
use super::generate::{engine_stopped, finish_reason, model_failed, token_entry, usage_json};
use super::logprobs::TokenInfo;
use crate::http::response::set_header;
use crate::http::{ChannelBody, ResponseBody};

/// Events that may wait unsent before generation waits for the client.
pub const STREAM_BUFFER: usize = 64;

/// The last event of a successful stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The members every chunk of one stream repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkHead {
    /// `id`, the same on every chunk.
    pub id: String,
    /// `object`, e.g. `chat.completion.chunk`.
    pub object: &'static str,
    /// `created`.
    pub created: u64,
    /// `model`, as the client named it.
    pub model: String,
    /// Whether chunks carry `usage` (null until the last).
    pub include_usage: bool,
}

impl ChunkHead {
    /// A chunk holding `choices`.
    pub fn chunk(&self, choices: Vec<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }
}

/// One endpoint's choice objects for the events of a generation.
pub trait ChoiceEncoder: Send + 'static {
    /// The choice sent before any token, if the endpoint sends one.
    fn start(&mut self) -> Option<Value>;
    /// A choice for newly generated `text` and the tokens that made it.
    fn text(&mut self, text: &str, tokens: &[TokenInfo]) -> Value;
    /// The closing choice; `tokens` are those whose text was never sent
    /// (held back, then cut by a stop sequence).
    fn finish(&mut self, finish_reason: &str, tokens: &[TokenInfo]) -> Value;
}

/// `value` as one server-sent event.
pub fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// A 200 `text/event-stream` response fed by `body`.
pub fn sse_response(body: ChannelBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body.boxed());
    set_header(&mut resp, CONTENT_TYPE, "text/event-stream; charset=utf-8");
    set_header(&mut resp, CACHE_CONTROL, "no-cache");
    resp
}

/// Streams `stream` as chunks into `tx` on a new task. The task ends, dropping
/// `stream` and so aborting the request, when the client goes away.
pub fn spawn_pump(
    stream: MeteredStream,
    tokenizer: Arc<Tokenizer>,
    head: ChunkHead,
    encoder: impl ChoiceEncoder,
    tx: mpsc::Sender<Bytes>,
) {
    tokio::spawn(pump(stream, tokenizer, head, encoder, tx));
}

async fn pump(
    mut stream: MeteredStream,
    tokenizer: Arc<Tokenizer>,
    head: ChunkHead,
    mut encoder: impl ChoiceEncoder,
    tx: mpsc::Sender<Bytes>,
) {
    if let Some(choice) = encoder.start() {
        if tx.send(event(&head.chunk(vec![choice]))).await.is_err() {
            return;
        }
    }
    // Logprob entries of tokens whose text has not been sent yet.
    let mut pending: Vec<TokenInfo> = Vec::new();
    loop {
        let ev = tokio::select! {
            () = tx.closed() => return,
            ev = stream.next() => ev,
        };
        match ev {
            Some(TokenEvent::Token { id, text, logprobs }) => {
                pending.extend(token_entry(&tokenizer, id, logprobs.as_ref()));
                if text.is_empty() {
                    continue;
                }
                let chunk = head.chunk(vec![encoder.text(&text, &pending)]);
                pending.clear();
                if tx.send(event(&chunk)).await.is_err() {
                    return;
                }
            }
            Some(TokenEvent::Finished { reason, usage }) => {
                let mut events =
                    vec![event(&head.chunk(vec![
                        encoder.finish(finish_reason(&reason), &pending),
                    ]))];
                if head.include_usage {
                    let mut last = head.chunk(Vec::new());
                    last["usage"] = usage_json(&usage);
                    events.push(event(&last));
                }
                events.push(Bytes::from_static(DONE));
                for e in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Some(TokenEvent::Error { message }) => {
                send_error(&tx, &model_failed(&message)).await;
                return;
            }
            None => {
                send_error(&tx, &engine_stopped()).await;
                return;
            }
        }
    }
}

async fn send_error(tx: &mpsc::Sender<Bytes>, err: &OpenAiError) {
    tracing::warn!("stream failed: {err}");
    let _ = tx.send(event(&err.body())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_data_lines_with_a_blank_line() {
        assert_eq!(&event(&json!({"a": 1}))[..], b"data: {\"a\":1}\n\n");
    }

    #[test]
    fn usage_is_null_on_chunks_only_when_asked() {
        let mut head = ChunkHead {
            id: "x".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
            include_usage: false,
        };
        assert!(head.chunk(Vec::new()).get("usage").is_none());
        head.include_usage = true;
        assert_eq!(head.chunk(Vec::new())["usage"], Value::Null);
    }
}
