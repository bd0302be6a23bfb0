//! `factory serve` drains on SIGTERM: it stops accepting connections, lets
//! the request in flight finish its stream, then exits successfully.

#![cfg(unix)]

#[path = "serve/process.rs"]
mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use factory_server::bedrock::eventstream::decode_frame;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use process::ServeProcess;

#[tokio::test]
async fn sigterm_finishes_the_stream_in_flight_then_exits() {
    let state = std::env::temp_dir().join(format!("factory-sigterm-{}", std::process::id()));
    let mut server = ServeProcess::start(&state);
    let addr = server.addr.clone();
    // The model loads after the server binds: /ping says when it is ready.
    let t0 = Instant::now();
    loop {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let ping = http::Request::get("/ping")
            .header("host", &addr)
            .body(Full::new(Bytes::new()))
            .expect("request");
        if sender.send_request(ping).await.expect("ping").status() == 200 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "model never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    // The default model id has no provider prefix: Anthropic Messages bodies.
    let body = serde_json::json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 48,
        "messages": [{"role": "user", "content": "Count from one to twenty."}]
    });
    let req = http::Request::post("/model/smollm2-135m-instruct/invoke-with-response-stream")
        .header("host", &addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    if resp.status() != 200 {
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        panic!("status not 200: {}", String::from_utf8_lossy(&b));
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while buf.is_empty() {
        match body.frame().await {
            Some(Ok(f)) => buf.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            other => panic!("stream ended early: {other:?}"),
        }
    }

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    // The stream in flight still ends normally, with its last chunk.
    while let Some(f) = body.frame().await {
        if let Some(d) = f.expect("frame").data_ref() {
            buf.extend_from_slice(d);
        }
    }
    let mut last = None;
    let mut at = 0;
    while let Some((msg, used)) = decode_frame(&buf[at..]).expect("valid frames") {
        at += used;
        last = Some(msg);
    }
    let last = last.expect("frames");
    let payload: serde_json::Value = serde_json::from_slice(&last.payload).expect("json");
    let bytes = payload["bytes"].as_str().expect("chunk bytes");
    let chunk =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, bytes).expect("base64");
    let chunk: serde_json::Value = serde_json::from_slice(&chunk).expect("chunk json");
    assert_eq!(chunk["type"], "message_stop", "last chunk: {chunk}");
    assert!(chunk["amazon-bedrock-invocationMetrics"].is_object());

    // New connections are refused, and the process exits successfully.
    let t0 = Instant::now();
    let exit = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    let _ = std::fs::remove_dir_all(&state);
}
