//! What one request measured, and how raw arrival times become the measures.
//!
//! TTFT: send to the first non-empty content event. ITL: every gap between
//! consecutive content events. TPOT: `(e2e - ttft) / (output_tokens - 1)`
//! with the server's reported output tokens (undefined for one token).
//! End-to-end: send to the end of the response body.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Why a request failed: a short kind for grouping, and the detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestError {
    /// `connect`, `timeout`, `io`, `decode`, `incomplete`, an HTTP error code such
    /// as `ThrottlingException` or `http_500`, or a stream exception type.
    pub kind: String,
    /// What happened, for people.
    pub message: String,
}

impl RequestError {
    /// An error of `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Token counts the server reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// Raw times of one request, filled in while its response arrives.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// When the request was handed to the connection.
    pub sent: Instant,
    /// Arrival of each non-empty content event.
    pub content: Vec<Instant>,
    /// Arrival of the end of the response.
    pub end: Option<Instant>,
    /// Usage from the server, if it reported one.
    pub usage: Option<Usage>,
    /// Whether the response streams (TTFT and gaps are meaningful).
    pub streaming: bool,
}

impl Timeline {
    /// A timeline starting now.
    pub fn start(streaming: bool) -> Self {
        Self {
            sent: Instant::now(),
            content: Vec::new(),
            end: None,
            usage: None,
            streaming,
        }
    }
}

/// One request's measures (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Position in the point's request sequence.
    pub index: usize,
    /// Send time, seconds after the point started.
    pub start_s: f64,
    /// Time to first token; streaming calls only.
    pub ttft_ms: Option<f64>,
    /// Time per output token after the first; streaming calls with >= 2 tokens.
    pub tpot_ms: Option<f64>,
    /// End-to-end latency (for failures: until the failure was seen).
    pub e2e_ms: f64,
    /// Gaps between consecutive content events.
    pub itl_ms: Vec<f64>,
    /// Prompt tokens (server-reported).
    pub input_tokens: Option<u64>,
    /// Generated tokens (server-reported; else the number of content events).
    pub output_tokens: Option<u64>,
    /// Whether token counts came from the server's usage report.
    pub usage_reported: bool,
    /// The failure, if the request failed.
    pub error: Option<RequestError>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl RequestRecord {
    /// The measures of a finished timeline; `point_start` anchors `start_s`.
    pub fn from_timeline(index: usize, point_start: Instant, t: &Timeline) -> Self {
        let end = t
            .end
            .or_else(|| t.content.last().copied())
            .unwrap_or(t.sent);
        let e2e_ms = ms(end.saturating_duration_since(t.sent));
        let (output_tokens, usage_reported) = match t.usage {
            Some(u) => (Some(u.output_tokens), true),
            None if t.streaming => (Some(t.content.len() as u64), false),
            None => (None, false),
        };
        let (ttft_ms, tpot_ms, itl_ms) = if t.streaming {
            let ttft = t
                .content
                .first()
                .map(|&f| ms(f.saturating_duration_since(t.sent)));
            let itl = t
                .content
                .windows(2)
                .map(|w| ms(w[1].saturating_duration_since(w[0])))
                .collect();
            let tpot = match (ttft, output_tokens) {
                (Some(ttft), Some(n)) if n > 1 => Some((e2e_ms - ttft).max(0.0) / (n - 1) as f64),
                _ => None,
            };
            (ttft, tpot, itl)
        } else {
            // The whole body arrives at once: no first token to time apart from the end.
            (None, None, Vec::new())
        };
        Self {
            index,
            start_s: t.sent.saturating_duration_since(point_start).as_secs_f64(),
            ttft_ms,
            tpot_ms,
            e2e_ms,
            itl_ms,
            input_tokens: t.usage.map(|u| u.input_tokens),
            output_tokens,
            usage_reported,
            error: None,
        }
    }

    /// A failed request: the error and the time until it was seen.
    pub fn failed(index: usize, point_start: Instant, sent: Instant, error: RequestError) -> Self {
        Self {
            index,
            start_s: sent.saturating_duration_since(point_start).as_secs_f64(),
            e2e_ms: ms(sent.elapsed()),
            error: Some(error),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_measures_from_arrival_times() {
        let t0 = Instant::now();
        let at = |m: u64| t0 + Duration::from_millis(m);
        let t = Timeline {
            sent: at(10),
            content: vec![at(110), at(130), at(160), at(170)],
            end: Some(at(210)),
            usage: Some(Usage {
                input_tokens: 7,
                output_tokens: 5,
            }),
            streaming: true,
        };
        let r = RequestRecord::from_timeline(3, t0, &t);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(r.ttft_ms.unwrap_or(0.0), 100.0));
        assert!(close(r.e2e_ms, 200.0));
        // (200 - 100) / (5 - 1)
        assert!(close(r.tpot_ms.unwrap_or(0.0), 25.0));
        let gaps: Vec<f64> = r.itl_ms.iter().map(|g| g.round()).collect();
        assert_eq!(gaps, [20.0, 30.0, 10.0]);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(7), Some(5)));
        assert!(r.usage_reported);
        assert!(close(r.start_s, 0.010));
        assert_eq!(r.index, 3);
    }

    #[test]
    fn one_token_has_no_tpot_and_missing_usage_counts_events() {
        let t0 = Instant::now();
        let t = Timeline {
            sent: t0,
            content: vec![t0 + Duration::from_millis(5)],
            end: Some(t0 + Duration::from_millis(6)),
            usage: None,
            streaming: true,
        };
        let r = RequestRecord::from_timeline(0, t0, &t);
        assert_eq!(r.tpot_ms, None);
        assert_eq!(r.output_tokens, Some(1));
        assert!(!r.usage_reported);
        assert!(r.itl_ms.is_empty());
    }

    #[test]
    fn non_streaming_has_no_per_token_times() {
        let t0 = Instant::now();
        let t = Timeline {
            sent: t0,
            content: vec![],
            end: Some(t0 + Duration::from_millis(40)),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 9,
            }),
            streaming: false,
        };
        let r = RequestRecord::from_timeline(0, t0, &t);
        assert_eq!(r.ttft_ms, None);
        assert!((r.e2e_ms - 40.0).abs() < 1e-6);
        assert_eq!(r.tpot_ms, None);
        assert_eq!(r.output_tokens, Some(9));
    }
}
