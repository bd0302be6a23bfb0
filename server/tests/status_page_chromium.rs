//! The live status page renders real numbers in a real browser: `factory
//! serve` answers a few requests, headless Chromium (Debian's `chromium`)
//! loads `/status` and runs its script, and the DOM it dumps shows what
//! `/status.json` says. A screenshot goes to the temp directory, outside
//! the repository.
//!
//! Without Chromium the test is skipped with a loud message, unless
//! `FACTORY_REQUIRE_CHROMIUM=1` (scripts/test.sh sets it once it installed
//! Chromium), where a missing browser fails.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[path = "serve/process.rs"]
mod process;
use process::ServeProcess;

const MODEL_ID: &str = "smollm2-135m-instruct";

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FACTORY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

async fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

/// Runs Chromium headless on `url` with `extra` flags, at most a minute.
fn run_chromium(browser: &Path, profile: &Path, url: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            // Lets the page's script fetch and render before the dump.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // Read the pipes on threads so a large DOM cannot block the browser.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The text inside the element with `id` in serialized HTML.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let len = rest[start..].find('<').expect("element end");
    rest[start..start + len].trim()
}

fn is_ms(text: &str) -> bool {
    text.strip_suffix(" ms")
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|v| v > 0.0)
}

#[tokio::test]
async fn headless_chromium_renders_the_live_numbers() {
    let Some(browser) = chromium() else {
        if std::env::var("FACTORY_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("chromium is required (FACTORY_REQUIRE_CHROMIUM=1) but not installed");
        }
        eprintln!(
            "\n*** SKIPPED headless_chromium_renders_the_live_numbers: no chromium in PATH \
             (apt-get install chromium, or set FACTORY_CHROMIUM) ***\n"
        );
        return;
    };
    let tmp = std::env::temp_dir().join(format!("factory-status-page-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let server = ServeProcess::start(&tmp.join("state"));
    let addr = server.addr.clone();
    // The model loads after the server binds: /ping answers 200 once it is ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while request(&addr, "GET", "/ping", None).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "model never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for question in ["What is 2 + 2?", "Name a color.", "Say hello."] {
        let body = json!({
            "messages": [{"role": "user", "content": [{"text": question}]}],
            "inferenceConfig": {"maxTokens": 8, "temperature": 0}
        });
        let path = format!("/model/{MODEL_ID}/converse");
        let (status, reply) = request(&addr, "POST", &path, Some(&body)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    }
    let (status, raw) = request(&addr, "GET", "/status.json", None).await;
    assert_eq!(status, 200);
    let expected: Value = serde_json::from_slice(&raw).expect("status JSON");
    assert_eq!(expected["totals"]["requests"], 3);

    let url = format!("http://{addr}/status");
    let out = run_chromium(&browser, &tmp.join("profile"), &url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text_of(&dom, "state"), "live", "the script never rendered");
    assert!(text_of(&dom, "models").contains(MODEL_ID));
    assert_eq!(text_of(&dom, "requests-total"), "3");
    assert_eq!(
        text_of(&dom, "gen-total"),
        expected["totals"]["generation_tokens"].to_string()
    );
    assert_eq!(text_of(&dom, "running"), "0");
    assert_eq!(text_of(&dom, "waiting"), "0");
    assert_eq!(text_of(&dom, "requests-minute"), "3");
    assert_eq!(text_of(&dom, "ttft-count"), "3");
    for id in ["ttft-p50", "ttft-p90", "ttft-p99", "itl-p50", "e2e-p50"] {
        assert!(is_ms(text_of(&dom, id)), "#{id}: {:?}", text_of(&dom, id));
    }
    let kv: f64 = text_of(&dom, "kv-usage").parse().expect("KV usage number");
    assert!((0.0..=100.0).contains(&kv));
    let tps: f64 = text_of(&dom, "gen-tps").parse().expect("tokens/s number");
    assert!(tps >= 0.0);

    let shot = tmp.join("factory-status.png");
    let out = run_chromium(
        &browser,
        &tmp.join("profile"),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
    );
    assert!(out.status.success(), "screenshot failed");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let _ = std::fs::remove_dir_all(tmp.join("profile"));
    let _ = std::fs::remove_dir_all(tmp.join("state"));
    eprintln!("status page screenshot: {}", shot.display());
}
