//! Metric names, help texts and histogram buckets.
//!
//! `vllm:*` names, types, labels (`model_name`, `engine`) and buckets are
//! vLLM's (v1 engine), so inference gateways and existing vLLM dashboards
//! read this server unchanged; `factory_*` are ours. Counters are exposed
//! with a `_total` suffix, as vLLM's Prometheus client does.

/// Requests in the engine's running batch (gauge).
pub const NUM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
/// Requests queued for admission (gauge).
pub const NUM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
/// Fraction of KV blocks in use, 0..1 (gauge).
pub const KV_CACHE_USAGE_PERC: &str = "vllm:kv_cache_usage_perc";
/// The pre-0.10 name of [`KV_CACHE_USAGE_PERC`], still read by older gateways (gauge).
pub const GPU_CACHE_USAGE_PERC: &str = "vllm:gpu_cache_usage_perc";
/// Prompt tokens looked up in the prefix cache (counter).
pub const PREFIX_CACHE_QUERIES: &str = "vllm:prefix_cache_queries";
/// Of those, tokens found there (counter).
pub const PREFIX_CACHE_HITS: &str = "vllm:prefix_cache_hits";
/// Requests preempted by the scheduler (counter).
pub const NUM_PREEMPTIONS: &str = "vllm:num_preemptions";
/// Prompt tokens of requests whose prefill finished (counter).
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens";
/// Tokens generated (counter).
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens";
/// Requests ended, by `finished_reason` (counter).
pub const REQUEST_SUCCESS: &str = "vllm:request_success";
/// Time to first token (histogram).
pub const TIME_TO_FIRST_TOKEN: &str = "vllm:time_to_first_token_seconds";
/// Time between consecutive tokens of a request (histogram).
pub const INTER_TOKEN_LATENCY: &str = "vllm:inter_token_latency_seconds";
/// Submission to last token (histogram).
pub const E2E_REQUEST_LATENCY: &str = "vllm:e2e_request_latency_seconds";
/// Submission to first scheduling (histogram).
pub const REQUEST_QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
/// Prompt tokens per finished request (histogram).
pub const REQUEST_PROMPT_TOKENS: &str = "vllm:request_prompt_tokens";
/// Generated tokens per finished request (histogram).
pub const REQUEST_GENERATION_TOKENS: &str = "vllm:request_generation_tokens";

/// HTTP responses by `operation` and `status` (counter).
pub const HTTP_REQUESTS: &str = "factory_http_requests";
/// Bedrock errors answered, by `operation` and `error_type`, including
/// exception frames that end a stream (counter).
pub const ERRORS: &str = "factory_errors";
/// Generation streams submitted and not yet dropped (gauge).
pub const REQUESTS_IN_FLIGHT: &str = "factory_requests_in_flight";
/// Requests aborted because their client went away (counter).
pub const REQUESTS_ABORTED: &str = "factory_requests_aborted";
/// Engine steps run (counter).
pub const ENGINE_STEPS: &str = "factory_engine_steps";
/// KV cache blocks in the pool (gauge).
pub const KV_CACHE_BLOCKS: &str = "factory_kv_cache_blocks";

/// Kinds of metric, for descriptions and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; exposed as `NAME_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Exposed as `NAME_bucket`, `NAME_sum`, `NAME_count`.
    Histogram,
}

/// Every metric the server exports: name, kind, help text.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        NUM_REQUESTS_RUNNING,
        Kind::Gauge,
        "Number of requests in model execution batches.",
    ),
    (
        NUM_REQUESTS_WAITING,
        Kind::Gauge,
        "Number of requests waiting to be processed.",
    ),
    (
        KV_CACHE_USAGE_PERC,
        Kind::Gauge,
        "KV-cache usage. 1 means 100 percent usage.",
    ),
    (
        GPU_CACHE_USAGE_PERC,
        Kind::Gauge,
        "KV-cache usage. 1 means 100 percent usage. DEPRECATED: use vllm:kv_cache_usage_perc.",
    ),
    (
        PREFIX_CACHE_QUERIES,
        Kind::Counter,
        "Prefix cache queries, in terms of number of queried tokens.",
    ),
    (
        PREFIX_CACHE_HITS,
        Kind::Counter,
        "Prefix cache hits, in terms of number of cached tokens.",
    ),
    (
        NUM_PREEMPTIONS,
        Kind::Counter,
        "Cumulative number of preemption from the engine.",
    ),
    (
        PROMPT_TOKENS,
        Kind::Counter,
        "Number of prefill tokens processed.",
    ),
    (
        GENERATION_TOKENS,
        Kind::Counter,
        "Number of generation tokens processed.",
    ),
    (
        REQUEST_SUCCESS,
        Kind::Counter,
        "Count of successfully processed requests.",
    ),
    (
        TIME_TO_FIRST_TOKEN,
        Kind::Histogram,
        "Histogram of time to first token in seconds.",
    ),
    (
        INTER_TOKEN_LATENCY,
        Kind::Histogram,
        "Histogram of inter-token latency in seconds.",
    ),
    (
        E2E_REQUEST_LATENCY,
        Kind::Histogram,
        "Histogram of e2e request latency in seconds.",
    ),
    (
        REQUEST_QUEUE_TIME,
        Kind::Histogram,
        "Histogram of time spent in WAITING phase for request.",
    ),
    (
        REQUEST_PROMPT_TOKENS,
        Kind::Histogram,
        "Number of prefill tokens processed.",
    ),
    (
        REQUEST_GENERATION_TOKENS,
        Kind::Histogram,
        "Number of generation tokens processed.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP responses by Bedrock operation and status code.",
    ),
    (
        ERRORS,
        Kind::Counter,
        "Bedrock errors by operation and x-amzn-ErrorType (stream exception frames included).",
    ),
    (
        REQUESTS_IN_FLIGHT,
        Kind::Gauge,
        "Generation requests submitted and not yet finished or dropped.",
    ),
    (
        REQUESTS_ABORTED,
        Kind::Counter,
        "Requests aborted because the client went away.",
    ),
    (ENGINE_STEPS, Kind::Counter, "Engine steps run."),
    (
        KV_CACHE_BLOCKS,
        Kind::Gauge,
        "KV-cache blocks in the pool, by state (total, free).",
    ),
];

/// The names a scrape shows for metric `name` of `kind`.
pub fn exposed_names(name: &str, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Counter => vec![format!("{name}_total")],
        Kind::Gauge => vec![name.to_string()],
        Kind::Histogram => ["bucket", "sum", "count"]
            .iter()
            .map(|s| format!("{name}_{s}"))
            .collect(),
    }
}

/// vLLM's time-to-first-token buckets, in seconds.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// vLLM's inter-token latency buckets, in seconds.
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// vLLM's request latency buckets (e2e, queue), in seconds.
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// 1, 2, 5, 10, 20, 50, ... up to `max` (vLLM's token-count buckets).
pub fn buckets_1_2_5(max: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut base = 1usize;
    'outer: loop {
        for m in [1, 2, 5] {
            let Some(v) = base.checked_mul(m) else {
                break 'outer;
            };
            if v > max {
                break 'outer;
            }
            out.push(v as f64);
        }
        match base.checked_mul(10) {
            Some(b) => base = b,
            None => break,
        }
    }
    if out.is_empty() {
        out.push(1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_five_buckets_stop_at_the_maximum() {
        assert_eq!(
            buckets_1_2_5(2048),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]
        );
        assert_eq!(buckets_1_2_5(1), [1.0]);
        assert_eq!(buckets_1_2_5(0), [1.0]);
        assert!(buckets_1_2_5(usize::MAX).len() > 50);
    }

    #[test]
    fn buckets_increase() {
        for b in [TTFT_BUCKETS, ITL_BUCKETS, REQUEST_LATENCY_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
