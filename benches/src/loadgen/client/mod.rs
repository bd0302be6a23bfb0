//! The HTTP client side: one [`Client`] per run (a pooled hyper client) sends
//! a [`PromptRequest`] to the target API and times every content event of the
//! response as it arrives.

pub mod bedrock;
pub mod openai;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use factory_server::Family;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::record::{RequestError, Timeline, Usage};
use super::sigv4::{signature_headers, SigV4Credentials};
use super::workload::PromptRequest;
use bedrock::{EventStreamDecoder, StreamKind};
use openai::ChatStreamDecoder;

/// Largest non-streaming or error body read.
const MAX_BODY: usize = 64 << 20;

/// Turns a streamed body into content events and, at the end, usage.
pub trait ResponseDecoder {
    /// Bytes as they arrive -> the non-empty texts they complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RequestError>;
    /// The body ended cleanly: the usage the server reported, if any.
    fn finish(&mut self) -> Result<Option<Usage>, RequestError>;
}

/// The start of a body as text, for error messages.
pub fn error_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Which API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Bedrock Converse / ConverseStream.
    Converse,
    /// Bedrock InvokeModel / InvokeModelWithResponseStream with a native body.
    Invoke,
    /// OpenAI-compatible chat completions.
    Openai,
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// AWS SigV4 (Bedrock).
    SigV4(SigV4Credentials),
    /// `Authorization: Bearer <key>` (Bedrock API keys, OpenAI keys).
    Bearer(String),
}

impl Auth {
    /// A name for reports (no secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SigV4(_) => "sigv4",
            Self::Bearer(_) => "bearer",
        }
    }
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port[/prefix]`.
    pub url: http::Uri,
    /// The API.
    pub api: Api,
    /// Native body family for [`Api::Invoke`].
    pub family: Family,
    /// Streaming calls (ConverseStream, InvokeModelWithResponseStream, `stream: true`).
    pub stream: bool,
    /// The model id.
    pub model: String,
    /// Credentials.
    pub auth: Auth,
    /// Sampling temperature sent with every request.
    pub temperature: f64,
    /// Send OpenAI `ignore_eos` (a vLLM extension).
    pub ignore_eos: bool,
    /// Path of the OpenAI chat endpoint.
    pub openai_path: String,
}

/// A target the client cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not `http://host[:port]`.
    #[error("unsupported URL {0}: expected http://HOST[:PORT][/PREFIX] (https is not supported)")]
    Url(String),
}

/// Sends requests to one target over pooled HTTP/1.1 connections.
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    target: Arc<Target>,
    authority: String,
    prefix: String,
}

/// A request ready to send.
struct Prepared {
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Client {
    /// A client for `target`.
    pub fn new(target: Target) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(target.url.to_string());
        if target.url.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = target.url.authority().ok_or_else(bad)?.to_string();
        let prefix = target.url.path().trim_end_matches('/').to_string();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            http,
            target: Arc::new(target),
            authority,
            prefix,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn prepare(&self, p: &PromptRequest) -> Result<Prepared, RequestError> {
        let t = &*self.target;
        let (path, body) = match t.api {
            Api::Converse => (
                bedrock::path(
                    &t.model,
                    if t.stream {
                        "converse-stream"
                    } else {
                        "converse"
                    },
                ),
                bedrock::converse_body(p, t.temperature),
            ),
            Api::Invoke => (
                bedrock::path(
                    &t.model,
                    if t.stream {
                        "invoke-with-response-stream"
                    } else {
                        "invoke"
                    },
                ),
                bedrock::invoke_body(t.family, p, t.temperature),
            ),
            Api::Openai => (
                t.openai_path.clone(),
                openai::chat_body(&t.model, p, t.temperature, t.stream, t.ignore_eos),
            ),
        };
        let path = format!("{}{path}", self.prefix);
        let body =
            serde_json::to_vec(&body).map_err(|e| RequestError::new("encode", e.to_string()))?;
        let mut headers = vec![
            ("host".to_string(), self.authority.clone()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        let accept = match (t.api, t.stream) {
            (Api::Invoke, true) => Some(("x-amzn-bedrock-accept", "application/json")),
            (Api::Openai, true) => Some(("accept", "text/event-stream")),
            (_, false) => Some(("accept", "application/json")),
            (Api::Converse, true) => None,
        };
        if let Some((n, v)) = accept {
            headers.push((n.to_string(), v.to_string()));
        }
        let uri = format!("http://{}{path}", self.authority);
        match &t.auth {
            Auth::None => {}
            Auth::Bearer(key) => headers.push(("authorization".into(), format!("Bearer {key}"))),
            Auth::SigV4(creds) => {
                let signed =
                    signature_headers(creds, "POST", &uri, &headers, &body, SystemTime::now())
                        .map_err(|e| RequestError::new("sign", e.to_string()))?;
                headers.extend(signed);
            }
        }
        Ok(Prepared { uri, headers, body })
    }

    /// Sends one request and reads its whole response, timing content events.
    pub async fn send(&self, p: &PromptRequest) -> Result<Timeline, RequestError> {
        let prepared = self.prepare(p)?;
        let mut req = http::Request::post(&prepared.uri);
        for (n, v) in &prepared.headers {
            req = req.header(n, v);
        }
        let req = req
            .body(Full::new(Bytes::from(prepared.body)))
            .map_err(|e| RequestError::new("encode", e.to_string()))?;
        let t = &*self.target;
        let mut timeline = Timeline::start(t.stream);
        let resp = self.http.request(req).await.map_err(transport_error)?;
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        if status != 200 {
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(match t.api {
                Api::Openai => openai::error_from(Some(status), &bytes),
                _ => bedrock::http_error(status, &parts.headers, &bytes),
            });
        }
        if t.stream {
            let mut decoder: Box<dyn ResponseDecoder + Send> = match t.api {
                Api::Converse => Box::new(EventStreamDecoder::new(StreamKind::Converse)),
                Api::Invoke => Box::new(EventStreamDecoder::new(StreamKind::Invoke)),
                Api::Openai => Box::new(ChatStreamDecoder::new()),
            };
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| RequestError::new("io", chain(&e)))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = Instant::now();
                let texts = decoder.feed(&data)?;
                timeline.content.extend(texts.iter().map(|_| now));
            }
            timeline.end = Some(Instant::now());
            timeline.usage = decoder.finish()?;
        } else {
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| RequestError::new("io", e.to_string()))?
                .to_bytes();
            timeline.end = Some(Instant::now());
            timeline.usage = match t.api {
                Api::Invoke => bedrock::invoke_usage(&parts.headers),
                Api::Converse | Api::Openai => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                        RequestError::new(
                            "decode",
                            format!("response is not JSON ({e}): {}", error_text(&bytes)),
                        )
                    })?;
                    if t.api == Api::Converse {
                        bedrock::converse_usage(&v)
                    } else {
                        openai::completion_usage(&v)
                    }
                }
            };
        }
        Ok(timeline)
    }
}

/// An error and its sources, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn transport_error(e: hyper_util::client::legacy::Error) -> RequestError {
    let kind = if e.is_connect() { "connect" } else { "io" };
    RequestError::new(kind, chain(&e))
}
