//! One server per test binary: the default model behind `factory_server::Service`
//! on a loopback port, and a SigV4-signing HTTP/1.1 client.

#![allow(dead_code)] // Each test binary uses part of the harness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use factory_engine::{CpuExecutor, EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_kernels::cpu::ActivationMode;
use factory_models::bundle::ModelBundle;
use factory_server::bedrock::bearer::ApiKeys;
use factory_server::bedrock::eventstream::{decode_frame, Message};
use factory_server::bedrock::sigv4::SigV4Verifier;
use factory_server::bedrock::Authenticator;
use factory_server::{Auth, ServedModel, Service, ServiceConfig};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

pub const AKID: &str = "AKIDSERVETEST";
pub const SECRET: &str = "serve/test/secret/key/0123456789abcdefgh";
pub const API_KEY: &str = "test-api-key-123";
pub const MODEL_ID: &str = "smollm2-135m-instruct";
pub const LLAMA_ID: &str = "meta.llama3-1-8b-instruct-v1:0";
pub const CLAUDE_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
pub const MISTRAL_ID: &str = "mistral.mistral-7b-instruct-v0:2";
pub const TITAN_ID: &str = "amazon.titan-text-express-v1";
pub const NOVA_ID: &str = "amazon.nova-lite-v1:0";
/// Small, so oversized bodies are cheap to test.
pub const MAX_BODY: usize = 64 * 1024;

/// `max_in_flight_requests` of the server, if a test binary sets it (non-zero)
/// before its first request.
pub static MAX_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The running server.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: EngineHandle,
}

/// Starts the server once, on its own thread and runtime, shared by all tests.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The default model, loaded (exact mode).
pub fn default_bundle() -> ModelBundle {
    let path = factory_models::default_model::cached_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}; run `cargo run -p factory-server --bin factory -- fetch-default-model` (scripts/test.sh does)",
        path.display()
    );
    ModelBundle::load(&path, ActivationMode::Exact).expect("default model loads")
}

/// The harness's credentials: SigV4 key pair and bearer key.
pub fn test_auth() -> Auth {
    let mut api_keys = ApiKeys::new();
    api_keys.insert("tests", API_KEY);
    let verifier = SigV4Verifier::new(HashMap::from([(AKID.to_string(), SECRET.to_string())]));
    Auth::Required(Authenticator::new(Some(verifier), api_keys))
}

/// Serves `service` on a loopback port, on its own thread and runtime.
pub fn spawn_service(service: Service) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            service
                .serve(listener, std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("server address")
}

fn start() -> Server {
    let mut bundle = default_bundle();
    let core = EngineCore::new(
        Box::new(CpuExecutor::new(Arc::new(bundle.model.clone()), 16, 1024)),
        Arc::new(bundle.tokenizer.clone()),
        bundle.eos_token_ids.clone(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens: 512,
                max_num_seqs: 16,
                ..SchedulerConfig::default()
            },
            prefix_caching: true,
        },
    );
    let engine = EngineHandle::spawn(core).expect("engine starts");
    let mut model = ServedModel::new(
        MODEL_ID,
        engine.clone(),
        Arc::new(bundle.tokenizer.clone()),
        bundle.chat_template.take().map(Arc::new),
    );
    model.aliases = [LLAMA_ID, CLAUDE_ID, MISTRAL_ID, TITAN_ID, NOVA_ID]
        .map(String::from)
        .to_vec();
    let auth = test_auth();
    let mut config = ServiceConfig {
        max_body_bytes: MAX_BODY,
        default_max_tokens: 8,
        ..ServiceConfig::default()
    };
    match MAX_IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {}
        n => config.max_in_flight_requests = n,
    }
    let service = Service::new(config, auth, model);
    let addr = spawn_service(service);
    Server { addr, engine }
}

/// A response, body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }

    /// The botocore error code: `x-amzn-ErrorType` before the first `:`.
    pub fn error_code(&self) -> &str {
        self.header("x-amzn-errortype")
            .split(':')
            .next()
            .unwrap_or_default()
    }

    /// The body decoded as event-stream frames, all of them.
    pub fn frames(&self) -> Vec<Message> {
        let mut rest = &self.body[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (msg, used) = decode_frame(rest)
                .expect("valid frame")
                .expect("complete frame");
            out.push(msg);
            rest = &rest[used..];
        }
        out
    }
}

/// botocore's URI-label encoding.
pub fn encode_label(label: &str) -> String {
    label
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    SigV4 { akid: &'a str, secret: &'a str },
    Bearer(&'a str),
    None,
}

pub const GOOD: Credentials<'static> = Credentials::SigV4 {
    akid: AKID,
    secret: SECRET,
};

/// Headers a signed request carries.
pub fn sign(
    creds: Credentials<'_>,
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let mut out = headers.to_vec();
    match creds {
        Credentials::None => {}
        Credentials::Bearer(token) => out.push(("authorization".into(), format!("Bearer {token}"))),
        Credentials::SigV4 { akid, secret } => {
            let identity =
                aws_credential_types::Credentials::new(akid, secret, None, None, "test").into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("bedrock")
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .expect("signing params")
                .into();
            let uri = format!("http://{host}{path_and_query}");
            let signable = SignableRequest::new(
                method,
                uri,
                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                SignableBody::Bytes(body),
            )
            .expect("signable");
            let (instructions, _) = sign(signable, &params).expect("signed").into_parts();
            for (name, value) in instructions.headers() {
                out.push((name.to_string(), value.to_string()));
            }
        }
    }
    out
}

/// Opens a connection and sends one request; returns the response head and body stream.
pub async fn open(
    creds: Credentials<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> http::Response<hyper::body::Incoming> {
    open_at(server().addr, creds, method, path, body).await
}

/// [`open`] against the server at `addr`.
pub async fn open_at(
    addr: SocketAddr,
    creds: Credentials<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> http::Response<hyper::body::Incoming> {
    let host = addr.to_string();
    let mut headers = vec![("host".to_string(), host.clone())];
    if !body.is_empty() || method == "POST" {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let headers = sign(creds, method, &host, path, &headers, body);
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path);
    for (n, v) in &headers {
        req = req.header(n, v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    sender.send_request(req).await.expect("response")
}

/// Sends one request and reads the whole reply.
pub async fn send(creds: Credentials<'_>, method: &str, path: &str, body: &[u8]) -> Reply {
    send_at(server().addr, creds, method, path, body).await
}

/// [`send`] to the server at `addr`.
pub async fn send_at(
    addr: SocketAddr,
    creds: Credentials<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Reply {
    let resp = open_at(addr, creds, method, path, body).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// POSTs JSON to `/model/{id}/{op}` with good credentials.
pub async fn post(model_id: &str, op: &str, body: &serde_json::Value) -> Reply {
    post_at(server().addr, model_id, op, body).await
}

/// [`post`] to the server at `addr`.
pub async fn post_at(
    addr: SocketAddr,
    model_id: &str,
    op: &str,
    body: &serde_json::Value,
) -> Reply {
    let path = format!("/model/{}/{op}", encode_label(model_id));
    send_at(addr, GOOD, "POST", &path, body.to_string().as_bytes()).await
}
