//! `factory serve` as a process: it binds before its models load and `/ping`
//! says when they are ready; `[[models]]` serves several models; a model that
//! cannot load is reported (and the server exits non-zero when none can); after
//! SIGTERM new requests get ServiceUnavailableException while the request in
//! flight holds the server open.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A `factory serve --no-auth` process, killed on drop.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    state: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Server {
    /// Starts the server with `args` and, if given, a config file holding `config`.
    fn start(name: &str, config: Option<&str>, args: &[&str]) -> Self {
        let model = factory_models::default_model::cached_path();
        assert!(
            model.is_file(),
            "the default model is missing at {}",
            model.display()
        );
        let state =
            std::env::temp_dir().join(format!("factory-lifecycle-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&state).expect("state dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_factory"));
        cmd.args(["serve", "--no-auth", "--addr", "127.0.0.1:0"])
            .args(args);
        if let Some(text) = config {
            let path = state.join("config.toml");
            std::fs::write(&path, text).expect("config written");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd
            .env("FACTORY_STATE_DIR", &state)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("factory serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Collects the log; the line "serving ... on http://ADDR ..." names the port.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("on http://").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sink.lock().expect("log").push(line);
            }
        });
        let mut server = Self {
            child,
            addr: String::new(),
            log,
            state,
        };
        server.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server never listened; log:\n{}", server.log_text()));
        server
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Polls `/ping` until it answers 200; returns its body.
    async fn wait_ready(&self) -> Value {
        let t0 = Instant::now();
        loop {
            let (status, body) = request(&self.addr, "GET", "/ping", None).await;
            if status == 200 {
                return body;
            }
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["status"], "loading", "{body}");
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "never ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) for the process to exit.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "server did not exit; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn connect(addr: &str) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn request_on(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(Value::to_string).unwrap_or_default(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// One request on a new connection.
async fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut sender = connect(addr).await;
    request_on(&mut sender, addr, method, path, body).await
}

fn chat(max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": "Count from one to a hundred."}]}],
        "inferenceConfig": {"maxTokens": max_tokens}
    })
}

#[tokio::test]
async fn serve_binds_first_then_loads_every_configured_model() {
    let config = r#"
[[models]]
id = "alpha"
engine = { kv_cache_memory = "64MiB" }

[[models]]
path = "default"
id = "beta"
aliases = ["meta.llama3-1-8b-instruct-v1:0"]
max_max_tokens = 8
engine = { kv_cache_memory = "64MiB", max_num_seqs = 2 }
"#;
    let server = Server::start("two", Some(config), &[]);
    {
        // Listening came before any model finished loading.
        let log = server.log.lock().expect("log");
        let listen = log.iter().position(|l| l.contains("on http://"));
        let ready = log.iter().position(|l| l.contains("ready after"));
        assert!(ready.is_none() || ready > listen, "{log:?}");
    }
    let ping = server.wait_ready().await;
    assert_eq!(
        ping,
        json!({"status": "ok", "models": [{"id": "alpha", "status": "ready"}, {"id": "beta", "status": "ready"}]})
    );
    let (status, health) = request(&server.addr, "GET", "/health", None).await;
    assert_eq!((status, &health), (200, &ping));

    let (status, list) = request(&server.addr, "GET", "/foundation-models", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["modelSummaries"]
        .as_array()
        .expect("summaries")
        .iter()
        .filter_map(|m| m["modelId"].as_str())
        .collect();
    assert_eq!(ids, ["alpha", "beta", "meta.llama3-1-8b-instruct-v1:0"]);

    let (status, body) =
        request(&server.addr, "POST", "/model/beta/converse", Some(&chat(9))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("model limit of 8")),
        "{body}"
    );
    let llama = "/model/meta.llama3-1-8b-instruct-v1%3A0/invoke";
    let (status, _) = request(
        &server.addr,
        "POST",
        llama,
        Some(&json!({"prompt": "Hi", "max_gen_len": 9})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = request(
        &server.addr,
        "POST",
        "/model/alpha/converse",
        Some(&chat(9)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        request(&server.addr, "POST", "/model/beta/converse", Some(&chat(3))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_model_that_cannot_load_is_reported_while_the_others_serve() {
    let config = r#"
[[models]]
id = "alpha"
engine = { kv_cache_memory = "64MiB" }

[[models]]
path = "/nonexistent/factory-test/model.gguf"
id = "broken"
"#;
    let server = Server::start("degraded", Some(config), &[]);
    let ping = server.wait_ready().await;
    assert_eq!(ping["status"], "degraded", "{ping}");
    assert_eq!(
        ping["models"][1],
        json!({"id": "broken", "status": "failed"})
    );
    let (status, body) = request(
        &server.addr,
        "POST",
        "/model/broken/converse",
        Some(&chat(2)),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("failed to load") && msg.contains("model.gguf"),
        "{msg}"
    );
    let (status, body) = request(
        &server.addr,
        "POST",
        "/model/alpha/converse",
        Some(&chat(2)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        server.log_text().contains("model broken failed to load"),
        "{}",
        server.log_text()
    );
}

#[tokio::test]
async fn serve_exits_non_zero_when_no_model_can_load() {
    let config = "[[models]]\npath = \"/nonexistent/factory-test/model.gguf\"\nid = \"broken\"\n";
    let mut server = Server::start("none", Some(config), &[]);
    let status = server.exit_status().await;
    assert!(!status.success(), "exit status {status}");
    let log = server.log_text();
    assert!(log.contains("no model could be loaded"), "{log}");
    assert!(log.contains("model.gguf"), "{log}");
}

#[tokio::test]
async fn after_sigterm_new_requests_get_503_until_the_request_in_flight_ends() {
    // The single-model form: `--model` (default) named by a [model] section.
    let config = "[model]\naliases = [\"meta.llama3-1-8b-instruct-v1:0\"]\n";
    let mut server = Server::start("drain", Some(config), &["--kv-cache-memory", "128MiB"]);
    server.wait_ready().await;
    let addr = server.addr.clone();

    // A: a long stream in flight.
    let mut a = connect(&addr).await;
    // Counting continues as long as it may: the stream does not end on its own.
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_gen_len": 2048});
    let req =
        http::Request::post("/model/meta.llama3-1-8b-instruct-v1%3A0/invoke-with-response-stream")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(long.to_string())))
            .expect("request");
    let resp = a.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    loop {
        match stream.frame().await {
            Some(Ok(f)) if f.is_data() => break,
            Some(Ok(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    // B: a keep-alive connection opened before the signal.
    let mut b = connect(&addr).await;
    assert_eq!(request_on(&mut b, &addr, "GET", "/ping", None).await.0, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    let t0 = Instant::now();
    loop {
        let (status, body) = request_on(&mut b, &addr, "GET", "/ping", None).await;
        if status == 503 {
            assert_eq!(body["status"], "draining", "{body}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = request_on(
        &mut b,
        &addr,
        "POST",
        "/model/smollm2-135m-instruct/converse",
        Some(&chat(2)),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{body}"
    );
    // The stream in flight is still going: the server has not exited.
    assert!(server.child.try_wait().expect("wait").is_none());
    assert!(matches!(stream.frame().await, Some(Ok(_))));

    // Once it ends (the client hangs up), the server exits successfully.
    drop((stream, a));
    let status = server.exit_status().await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log_text()
    );
}
