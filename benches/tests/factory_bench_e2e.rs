//! `factory-bench` end to end: the real binary against factory's Bedrock
//! service (default model, in process, on a loopback port, SigV4 and bearer
//! credentials) and against a small OpenAI-style SSE server written here;
//! each run's bench.json, CSVs and SVG are checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use factory_engine::{CpuExecutor, EngineConfig, EngineCore, EngineHandle, SchedulerConfig};
use factory_kernels::cpu::ActivationMode;
use factory_models::bundle::ModelBundle;
use factory_server::bedrock::bearer::ApiKeys;
use factory_server::bedrock::sigv4::SigV4Verifier;
use factory_server::bedrock::Authenticator;
use factory_server::{Auth, ServedModel, Service, ServiceConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AKID: &str = "AKIDBENCHTEST";
const SECRET: &str = "bench/test/secret/0123456789";
const API_KEY: &str = "bench-test-key";
const MODEL_ID: &str = "smollm2-135m-instruct";
const LLAMA_ID: &str = "meta.llama3-1-8b-instruct-v1:0";

/// factory's Bedrock service on the default model, once per test binary, on
/// its own thread (the process exit ends it).
fn factory_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let path = factory_models::default_model::cached_path();
        assert!(
            path.is_file(),
            "the default model is missing at {}; run `cargo run -p factory-server --bin factory -- fetch-default-model`",
            path.display()
        );
        let mut bundle = ModelBundle::load(&path, ActivationMode::Exact).expect("default model loads");
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
            engine,
            Arc::new(bundle.tokenizer.clone()),
            bundle.chat_template.take().map(Arc::new),
        );
        model.aliases = vec![LLAMA_ID.to_string()];
        let mut keys = ApiKeys::new();
        keys.insert("bench", API_KEY);
        let verifier = SigV4Verifier::new(HashMap::from([(AKID.to_string(), SECRET.to_string())]));
        let auth = Auth::Required(Authenticator::new(Some(verifier), keys));
        let service = Service::new(ServiceConfig::default(), auth, model);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send addr");
                service.serve(listener, std::future::pending()).await.expect("serve");
            });
        });
        rx.recv().expect("server address")
    })
}

/// A fresh output directory, removed when dropped (kept when
/// `FACTORY_BENCH_KEEP` is set, to look at the files).
struct OutDir(PathBuf);

impl OutDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("factory-bench-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if std::env::var_os("FACTORY_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the bench binary with a clean credential environment plus `env`.
fn bench(url: &str, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_factory-bench"));
    cmd.args(["--url", url, "--quiet", "--timeout", "120", "--out"])
        .arg(out)
        .args(args);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "OPENAI_API_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("factory-bench runs");
    eprintln!(
        "--- factory-bench {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("bench.json")).expect("bench.json written");
    serde_json::from_str(&text).expect("bench.json is JSON")
}

fn num(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {ptr} in {v}"))
}

/// The checks every successful streaming point passes.
fn check_streaming_point(p: &Value, requests: u64, max_out: f64) {
    assert_eq!(p["sent"], requests, "{p}");
    assert_eq!(p["completed"], requests, "errors: {}", p["errors"]);
    assert_eq!(p["failed"], 0);
    for m in ["ttft_ms", "tpot_ms", "e2e_ms"] {
        let (p50, p90, p99) = (
            num(p, &format!("/{m}/p50")),
            num(p, &format!("/{m}/p90")),
            num(p, &format!("/{m}/p99")),
        );
        assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99, "{m}: {}", p[m]);
        assert!(num(p, &format!("/{m}/min")) <= p50 && p99 <= num(p, &format!("/{m}/max")));
    }
    assert!(num(p, "/ttft_ms/p50") < num(p, "/e2e_ms/p50"));
    assert!(num(p, "/itl_ms/count") >= 1.0);
    assert!(num(p, "/throughput/requests_per_s") > 0.0);
    assert!(num(p, "/throughput/output_tokens_per_s") > 0.0);
    let out = num(p, "/output_tokens/max");
    assert!(out >= 1.0 && out <= max_out, "output tokens {out}");
    assert!(num(p, "/input_tokens/min") >= 10.0);
    let reqs = p["requests"].as_array().expect("requests");
    assert_eq!(reqs.len() as u64, requests);
    for r in reqs {
        assert_eq!(r["usage_reported"], true, "{r}");
        assert!(r["error"].is_null());
    }
}

fn check_files(out: &Path, points: usize) {
    let summary = std::fs::read_to_string(out.join("summary.csv")).expect("summary.csv");
    assert_eq!(summary.lines().count(), points + 1, "{summary}");
    let requests = std::fs::read_to_string(out.join("requests.csv")).expect("requests.csv");
    assert!(requests.starts_with("load_kind,load_value,index,"));
    let svg = std::fs::read_to_string(out.join("latency_vs_throughput.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline"), "the chart has lines");
}

#[test]
fn converse_stream_closed_loop_sweep_signed_with_sigv4() {
    let addr = factory_server();
    let out = OutDir::new("converse");
    let o = bench(
        &format!("http://{addr}"),
        &out.0,
        &[
            "--api",
            "converse",
            "--concurrency",
            "1,2",
            "--requests",
            "4",
            "--input-tokens",
            "24",
            "--output-tokens",
            "8",
            "--tokenizer",
            "default",
            "--slo-ttft-ms",
            "60000",
            "--slo-tpot-ms",
            "60000",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", AKID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-west-2"),
        ],
    );
    assert!(o.status.success(), "exit {:?}", o.status);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("TTFT ms p50/90/99") && stdout.contains("c=2"),
        "{stdout}"
    );
    let j = read_json(&out.0);
    assert_eq!(j["tool"], "factory-bench");
    assert_eq!(j["config"]["api"], "converse");
    assert_eq!(j["config"]["auth"], "sigv4");
    assert!(j["config"]["workload"]["prompt_lengths"]
        .as_str()
        .is_some_and(|s| s.starts_with("exact")));
    let points = j["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for (p, c) in points.iter().zip([1, 2]) {
        assert_eq!(
            p["load"],
            serde_json::json!({"kind": "concurrency", "value": c})
        );
        check_streaming_point(p, 4, 8.0);
        // Generous SLO: every request meets it.
        assert_eq!(num(p, "/goodput/requests"), 4.0);
        assert_eq!(num(p, "/goodput/attainment"), 1.0);
    }
    check_files(&out.0, 2);
}

#[test]
fn invoke_stream_open_loop_with_bearer_key_and_shared_prefix() {
    let addr = factory_server();
    let out = OutDir::new("invoke");
    let o = bench(
        &format!("http://{addr}"),
        &out.0,
        &[
            "--api",
            "invoke",
            "--model",
            LLAMA_ID,
            "--rate",
            "8,inf",
            "--requests",
            "3",
            "--input-tokens",
            "8..24",
            "--output-tokens",
            "6",
            "--shared-prefix-tokens",
            "48",
            "--tokenizer",
            "words",
        ],
        &[("AWS_BEARER_TOKEN_BEDROCK", API_KEY)],
    );
    assert!(o.status.success(), "exit {:?}", o.status);
    let j = read_json(&out.0);
    assert_eq!(j["config"]["native_format"], "meta");
    assert_eq!(j["config"]["auth"], "bearer");
    let points = j["points"].as_array().expect("points");
    assert_eq!(
        points[0]["load"],
        serde_json::json!({"kind": "rate", "value": 8.0})
    );
    assert_eq!(
        points[1]["load"],
        serde_json::json!({"kind": "rate", "value": "inf"})
    );
    for p in points {
        check_streaming_point(p, 3, 6.0);
        // The 48-token shared system prompt is in every prompt.
        assert!(num(p, "/input_tokens/min") >= 48.0, "{}", p["input_tokens"]);
        assert!(p["goodput"].is_null());
    }
    check_files(&out.0, 2);
}

#[test]
fn non_streaming_converse_has_latency_but_no_token_times() {
    let addr = factory_server();
    let out = OutDir::new("converse-sync");
    let o = bench(
        &format!("http://{addr}"),
        &out.0,
        &[
            "--api",
            "converse",
            "--no-stream",
            "--concurrency",
            "2",
            "--requests",
            "2",
            "--input-tokens",
            "16",
            "--output-tokens",
            "4",
            "--api-key",
            API_KEY,
            "--tokenizer",
            "words",
        ],
        &[],
    );
    assert!(o.status.success());
    let j = read_json(&out.0);
    let p = &j["points"][0];
    assert_eq!(p["completed"], 2, "{}", p["errors"]);
    assert!(p["ttft_ms"].is_null() && p["tpot_ms"].is_null() && p["itl_ms"].is_null());
    assert!(num(p, "/e2e_ms/p50") > 0.0);
    assert!(num(p, "/output_tokens/mean") >= 1.0);
}

#[test]
fn wrong_credentials_fail_every_request_and_exit_2() {
    let addr = factory_server();
    let out = OutDir::new("badcreds");
    let o = bench(
        &format!("http://{addr}"),
        &out.0,
        &[
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--output-tokens",
            "2",
            "--tokenizer",
            "words",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", AKID),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let j = read_json(&out.0);
    let p = &j["points"][0];
    assert_eq!(
        (p["sent"].as_u64(), p["failed"].as_u64()),
        (Some(2), Some(2))
    );
    let errors = p["errors"].as_object().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (kind, n) = errors.iter().next().expect("one kind");
    assert!(
        kind.contains("Signature") || kind.contains("Unrecognized"),
        "{kind}"
    );
    assert_eq!(n, 2);
}

/// An OpenAI-style chat completions server: checks the request and streams
/// three content chunks 40 ms apart, then usage and `[DONE]`.
fn openai_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_chat(conn));
            }
        });
    });
    rx.recv().expect("address")
}

async fn serve_chat(mut conn: tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    let problem = if !head.starts_with("post /v1/chat/completions ") {
        Some(("not_found_error", "404 Not Found", "no such route"))
    } else if !head.contains("authorization: bearer sk-test") {
        Some(("authentication_error", "401 Unauthorized", "bad key"))
    } else if body["model"] != "m"
        || body["messages"][0]["role"] != "user"
        || body["max_tokens"] != 5
    {
        Some((
            "invalid_request_error",
            "400 Bad Request",
            "unexpected body",
        ))
    } else if body["stream"] == true && body["stream_options"]["include_usage"] != true {
        Some((
            "invalid_request_error",
            "400 Bad Request",
            "no include_usage",
        ))
    } else {
        None
    };
    if let Some((kind, status, msg)) = problem {
        let err =
            serde_json::json!({"error": {"message": msg, "type": kind, "code": null}}).to_string();
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{err}",
            err.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        return;
    }
    let usage =
        serde_json::json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14});
    if body["stream"] != true {
        let out = serde_json::json!({
            "id": "c", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "length"}],
            "usage": usage,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{out}",
            out.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        return;
    }
    let chunk = |delta: Value, finish: Value| {
        let c = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = vec![(
        0,
        chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            Value::Null,
        ),
    )];
    for t in ["Hel", "lo", " world"] {
        events.push((40, chunk(serde_json::json!({"content": t}), Value::Null)));
    }
    events.push((0, chunk(serde_json::json!({}), "length".into())));
    let last = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage});
    events.push((0, format!("data: {last}\n\ndata: [DONE]\n\n")));
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for (delay, data) in events {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if conn.write_all(data.as_bytes()).await.is_err() || conn.flush().await.is_err() {
            return;
        }
    }
}

#[test]
fn openai_chat_stream_against_factory_v1() {
    // The real OpenAI-compatible API of the same service, with the same bearer key.
    let addr = factory_server();
    let out = OutDir::new("openai-factory");
    let o = bench(
        &format!("http://{addr}"),
        &out.0,
        &[
            "--api",
            "openai",
            "--model",
            MODEL_ID,
            "--concurrency",
            "2",
            "--requests",
            "2",
            "--input-tokens",
            "16",
            "--output-tokens",
            "6",
            "--tokenizer",
            "words",
        ],
        &[("OPENAI_API_KEY", API_KEY)],
    );
    assert!(o.status.success());
    let j = read_json(&out.0);
    let p = &j["points"][0];
    assert_eq!(p["completed"], 2, "{}", p["errors"]);
    check_streaming_point(p, 2, 6.0);
}

#[test]
fn openai_chat_stream_against_an_sse_server() {
    let addr = openai_server();
    let url = format!("http://{addr}");
    let out = OutDir::new("openai");
    let o = bench(
        &url,
        &out.0,
        &[
            "--api",
            "openai",
            "--model",
            "m",
            "--concurrency",
            "1,3",
            "--requests",
            "3",
            "--input-tokens",
            "12",
            "--output-tokens",
            "5",
            "--tokenizer",
            "words",
            "--slo-tpot-ms",
            "1",
        ],
        &[("OPENAI_API_KEY", "sk-test")],
    );
    assert!(o.status.success());
    let j = read_json(&out.0);
    for p in j["points"].as_array().expect("points") {
        assert_eq!(p["completed"], 3, "{}", p["errors"]);
        // Three content events 40 ms apart: TTFT >= 40, two gaps of ~40 each,
        // TPOT over the server's 3 tokens ~40; timings on a busy machine run long.
        assert!(num(p, "/ttft_ms/min") >= 39.0, "{}", p["ttft_ms"]);
        assert_eq!(num(p, "/itl_ms/count"), 6.0);
        assert!(
            num(p, "/itl_ms/min") >= 35.0 && num(p, "/itl_ms/p50") < 400.0,
            "{}",
            p["itl_ms"]
        );
        assert!(num(p, "/tpot_ms/min") >= 35.0, "{}", p["tpot_ms"]);
        assert_eq!(num(p, "/output_tokens/mean"), 3.0);
        assert_eq!(num(p, "/input_tokens/mean"), 11.0);
        // A 1 ms TPOT objective nobody meets.
        assert_eq!(num(p, "/goodput/requests"), 0.0);
    }
    check_files(&out.0, 2);

    // Non-streaming, then a wrong key: errors are typed from the OpenAI error body.
    let o = bench(
        &url,
        &out.0,
        &[
            "--api",
            "openai",
            "--model",
            "m",
            "--no-stream",
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--output-tokens",
            "5",
            "--tokenizer",
            "words",
        ],
        &[("OPENAI_API_KEY", "sk-test")],
    );
    assert!(o.status.success());
    let j = read_json(&out.0);
    assert_eq!(
        j["points"][0]["completed"], 2,
        "{}",
        j["points"][0]["errors"]
    );
    assert_eq!(num(&j["points"][0], "/output_tokens/mean"), 3.0);
    let o = bench(
        &url,
        &out.0,
        &[
            "--api",
            "openai",
            "--model",
            "m",
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--output-tokens",
            "5",
            "--tokenizer",
            "words",
            "--api-key",
            "wrong",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let j = read_json(&out.0);
    assert_eq!(j["points"][0]["errors"]["authentication_error"], 2);
}
