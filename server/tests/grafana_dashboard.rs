//! The Grafana dashboard in deploy/grafana is valid JSON, and every query in
//! it names only metrics the server exports (under their exposed names).

use std::collections::BTreeSet;
use std::path::PathBuf;

use factory_server::observability::names::{self, exposed_names};
use serde_json::Value;

fn dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/factory-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every PromQL string in the dashboard: panel `expr`s and variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression (ours and vLLM's).
fn metrics_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("vllm:") || t.starts_with("factory_"))
        .collect()
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let exported: BTreeSet<String> = names::ALL
        .iter()
        .flat_map(|&(name, kind, _)| exposed_names(name, kind))
        .collect();
    let d = dashboard();
    assert!(d["title"].is_string() && d["panels"].is_array());
    let mut qs = Vec::new();
    queries(&d, &mut qs);
    assert!(qs.len() > 20, "only {} queries", qs.len());
    let mut used = BTreeSet::new();
    for q in &qs {
        let ms = metrics_in(q);
        assert!(!ms.is_empty(), "query names no metric: {q}");
        for m in ms {
            assert!(exported.contains(m), "{m} (in {q}) is not exported");
            used.insert(m.to_string());
        }
    }
    // The dashboard shows each metric the issue names.
    for name in [
        names::NUM_REQUESTS_RUNNING,
        names::NUM_REQUESTS_WAITING,
        names::KV_CACHE_USAGE_PERC,
        names::PREFIX_CACHE_QUERIES,
        names::PREFIX_CACHE_HITS,
        names::NUM_PREEMPTIONS,
        names::TIME_TO_FIRST_TOKEN,
        names::INTER_TOKEN_LATENCY,
        names::E2E_REQUEST_LATENCY,
        names::REQUEST_QUEUE_TIME,
        names::PROMPT_TOKENS,
        names::GENERATION_TOKENS,
        names::HTTP_REQUESTS,
        names::ERRORS,
    ] {
        assert!(
            used.iter().any(|u| u.starts_with(name)),
            "the dashboard does not show {name}"
        );
    }
    // Panel ids are unique (Grafana relies on it).
    let ids: Vec<u64> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn metric_names_are_found_in_queries() {
    assert_eq!(
        metrics_in("histogram_quantile(0.9, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{model_name=~\"$m\"}[$__rate_interval])))"),
        ["vllm:e2e_request_latency_seconds_bucket"]
    );
    assert_eq!(
        metrics_in("sum by (operation, status) (rate(factory_http_requests_total[5m]))"),
        ["factory_http_requests_total"]
    );
}
