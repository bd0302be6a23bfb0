//! `/metrics` and `/status.json` move as requests go through the service:
//! token counters equal the usage returned, histograms count each request
//! and token, gauges follow a live stream, HTTP statuses and Bedrock error
//! types are counted, and none of these routes needs credentials.
//! Its own binary (one server), and one test so the deltas are its own.

#[path = "serve/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use factory_server::observability::names::{self, exposed_names};
use harness::*;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

/// One scrape: every sample line, by metric name then label set.
#[derive(Debug, Clone)]
struct Scrape(Vec<(String, HashMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            out.push((name.to_string(), labels, value));
        }
        Self(out)
    }

    /// The sum of `name`'s samples whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

async fn scrape() -> (Scrape, String) {
    let r = send(Credentials::None, "GET", "/metrics", b"").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r
        .header("content-type")
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body.to_vec()).expect("utf-8");
    (Scrape::parse(&text), text)
}

/// `after - before` for `name{labels}`.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

fn ask(text: &str, max_tokens: u64) -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0}
    })
}

fn usage(v: &Value) -> (f64, f64) {
    let u = &v["usage"];
    (
        u["inputTokens"].as_f64().expect("inputTokens"),
        u["outputTokens"].as_f64().expect("outputTokens"),
    )
}

fn finished_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        _ => "stop",
    }
}

/// Waits until a scrape satisfies `ok`.
async fn scrape_until(what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let t0 = Instant::now();
    loop {
        let (s, _) = scrape().await;
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never saw {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_and_status_move_with_requests() {
    let model = [("model_name", MODEL_ID)];

    // Unauthenticated; engine and request metrics are present from the start
    // (HTTP and error counters appear with their first label values).
    let (m0, text) = scrape().await;
    for &(name, kind, _) in names::ALL {
        if [names::HTTP_REQUESTS, names::ERRORS].contains(&name) {
            continue;
        }
        for exposed in exposed_names(name, kind) {
            assert!(m0.has(&exposed), "{exposed} missing from\n{text}");
        }
    }
    assert!(text.contains("# TYPE vllm:time_to_first_token_seconds histogram"));
    assert!(text.contains("# TYPE vllm:prompt_tokens_total counter"));
    assert!(text.contains("# TYPE vllm:num_requests_running gauge"));
    assert_eq!(
        m0.get(
            "vllm:time_to_first_token_seconds_bucket",
            &[("model_name", MODEL_ID), ("engine", "0"), ("le", "0.001")]
        ),
        0.0
    );

    // A whole Converse: tokens equal its usage, one of each request histogram,
    // one inter-token gap per token after the first.
    let prompt =
        "Tell me about the history of the city of Paris, from the Romans to today, in detail.";
    let r = post(MODEL_ID, "converse", &ask(prompt, 6)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let (input, output) = usage(&v);
    let stop = v["stopReason"].as_str().expect("stopReason");
    let (m1, _) = scrape().await;
    let d = |name: &str| delta(&m0, &m1, name, &model);
    assert_eq!(d("vllm:prompt_tokens_total"), input);
    assert_eq!(d("vllm:generation_tokens_total"), output);
    assert_eq!(d("vllm:time_to_first_token_seconds_count"), 1.0);
    assert_eq!(d("vllm:inter_token_latency_seconds_count"), output - 1.0);
    assert_eq!(d("vllm:e2e_request_latency_seconds_count"), 1.0);
    assert_eq!(d("vllm:request_queue_time_seconds_count"), 1.0);
    assert_eq!(d("vllm:request_prompt_tokens_sum"), input);
    assert_eq!(d("vllm:request_generation_tokens_sum"), output);
    let (ttft, e2e, queue) = (
        d("vllm:time_to_first_token_seconds_sum"),
        d("vllm:e2e_request_latency_seconds_sum"),
        d("vllm:request_queue_time_seconds_sum"),
    );
    assert!(
        ttft > 0.0 && ttft <= e2e && queue < ttft,
        "{ttft} {e2e} {queue}"
    );
    assert_eq!(
        delta(
            &m0,
            &m1,
            "vllm:request_success_total",
            &[("finished_reason", finished_reason(stop))]
        ),
        1.0
    );
    // The lookup covers the prompt but its last token.
    assert_eq!(d("vllm:prefix_cache_queries_total"), input - 1.0);
    assert_eq!(
        delta(
            &m0,
            &m1,
            "factory_http_requests_total",
            &[("operation", "Converse"), ("status", "200")]
        ),
        1.0
    );
    // Buckets are cumulative and end at the count.
    let inf = m1.get(
        "vllm:time_to_first_token_seconds_bucket",
        &[("model_name", MODEL_ID), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        m1.get("vllm:time_to_first_token_seconds_count", &model)
    );

    // The same prompt again hits the prefix cache.
    let r = post(MODEL_ID, "converse", &ask(prompt, 6)).await;
    assert_eq!(r.status, 200);
    let (m2, _) = scrape().await;
    let hits = delta(&m1, &m2, "vllm:prefix_cache_hits_total", &model);
    assert!(
        hits > 0.0 && hits <= input - 1.0,
        "hits {hits} of {input} tokens"
    );

    // ConverseStream: the same accounting, from the stream's metadata.
    let r = post(MODEL_ID, "converse-stream", &ask("Name three colors.", 5)).await;
    assert_eq!(r.status, 200);
    let meta = r
        .frames()
        .last()
        .map(|f| f.payload.clone())
        .expect("frames");
    let meta: Value = serde_json::from_slice(&meta).expect("metadata JSON");
    let (input, output) = usage(&meta);
    let (m3, _) = scrape().await;
    let d = |name: &str| delta(&m2, &m3, name, &model);
    assert_eq!(d("vllm:prompt_tokens_total"), input);
    assert_eq!(d("vllm:generation_tokens_total"), output);
    assert_eq!(d("vllm:time_to_first_token_seconds_count"), 1.0);
    assert_eq!(
        delta(
            &m2,
            &m3,
            "factory_http_requests_total",
            &[("operation", "ConverseStream"), ("status", "200")]
        ),
        1.0
    );

    // A 400 and a 403, counted by status and by Bedrock error type.
    let bad = post(MODEL_ID, "converse", &json!({"messages": "not a list"})).await;
    assert_eq!(bad.status, 400);
    let wrong_key = Credentials::SigV4 {
        akid: AKID,
        secret: "not-the-secret",
    };
    let path = format!("/model/{}/converse", encode_label(MODEL_ID));
    let denied = send(
        wrong_key,
        "POST",
        &path,
        ask("Hi", 2).to_string().as_bytes(),
    )
    .await;
    assert_eq!(denied.status, 403);
    let (m4, _) = scrape().await;
    let count = |status: &str| {
        delta(
            &m3,
            &m4,
            "factory_http_requests_total",
            &[("operation", "Converse"), ("status", status)],
        )
    };
    assert_eq!((count("400"), count("403")), (1.0, 1.0));
    for reply in [&bad, &denied] {
        let error_type = reply.error_code();
        assert_eq!(
            delta(
                &m3,
                &m4,
                "factory_errors_total",
                &[("operation", "Converse"), ("error_type", error_type)]
            ),
            1.0,
            "{error_type}"
        );
    }
    assert_eq!(delta(&m3, &m4, "vllm:generation_tokens_total", &model), 0.0);
    for &(name, kind, _) in names::ALL {
        for exposed in exposed_names(name, kind) {
            assert!(m4.has(&exposed), "{exposed} missing");
        }
    }

    // A long stream: running and in flight while it lasts; dropping it
    // aborts the request, and the gauges return to zero.
    let path = format!(
        "/model/{}/invoke-with-response-stream",
        encode_label(LLAMA_ID)
    );
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_gen_len": 2048});
    let resp = open(GOOD, "POST", &path, long.to_string().as_bytes()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => break,
            Some(Ok(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    let live = scrape_until("a running request", |s| {
        s.get("vllm:num_requests_running", &model) == 1.0
    })
    .await;
    assert_eq!(live.get("vllm:num_requests_waiting", &model), 0.0);
    assert_eq!(live.get("factory_requests_in_flight", &model), 1.0);
    let kv = live.get("vllm:kv_cache_usage_perc", &model);
    assert!(kv > 0.0 && kv <= 1.0, "{kv}");
    assert_eq!(live.get("vllm:gpu_cache_usage_perc", &model), kv);
    drop(body);
    let done = scrape_until("the abort", |s| {
        s.get("vllm:num_requests_running", &model) == 0.0
            && delta(&m4, s, "factory_requests_aborted_total", &model) == 1.0
    })
    .await;
    assert_eq!(done.get("factory_requests_in_flight", &model), 0.0);
    assert_eq!(
        delta(
            &m4,
            &done,
            "vllm:request_success_total",
            &[("finished_reason", "abort")]
        ),
        1.0
    );

    // The status numbers agree with what was sent, without credentials.
    let r = send(Credentials::None, "GET", "/status.json", b"").await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["models"][0]["id"], MODEL_ID);
    assert_eq!(s["requests"]["running"], 0);
    assert_eq!(s["totals"]["requests"], 3);
    let finished_generation = done.get("vllm:generation_tokens_total", &model);
    assert_eq!(
        s["totals"]["generation_tokens"].as_f64(),
        Some(finished_generation)
    );
    let minute = &s["last_minute"];
    assert_eq!(minute["requests"], 3);
    assert_eq!(minute["ttft_seconds"]["count"], 4);
    for p in ["p50", "p90", "p99"] {
        assert!(minute["ttft_seconds"][p].as_f64().is_some_and(|x| x > 0.0));
        assert!(minute["itl_seconds"][p].as_f64().is_some_and(|x| x > 0.0));
    }
    assert!(s["prefix_cache"]["hit_rate"]
        .as_f64()
        .is_some_and(|x| x > 0.0));

    // The page itself: served to anyone, self-contained.
    for path in ["/", "/status"] {
        let page = send(Credentials::None, "GET", path, b"").await;
        assert_eq!(page.status, 200);
        assert!(page.header("content-type").starts_with("text/html"));
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("/status.json"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    // A forced tool call the server closes itself ends the generation early:
    // a finished request (stop), not a client's abort.
    let (before, _) = scrape().await;
    let weather = json!({"toolSpec": {
        "name": "get_weather",
        "description": "Get the weather for a city.",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    }});
    let mut forced = ask("What is the weather in Paris?", 200);
    forced["toolConfig"] =
        json!({"tools": [weather], "toolChoice": {"tool": {"name": "get_weather"}}});
    let r = post(MODEL_ID, "converse", &forced).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["stopReason"], "tool_use", "{}", r.json());
    // Once the engine runs nothing, an abort would have been counted.
    let after = scrape_until("the tool call's finish", |s| {
        s.get("vllm:num_requests_running", &model) == 0.0
            && delta(
                &before,
                s,
                "vllm:request_success_total",
                &[("finished_reason", "stop")],
            ) == 1.0
    })
    .await;
    assert_eq!(
        delta(&before, &after, "factory_requests_aborted_total", &model),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "vllm:request_success_total",
            &[("finished_reason", "abort")]
        ),
        0.0
    );
}
