//! Statistics over per-request measurements: exact percentiles, summaries and
//! goodput under a service-level objective.
//!
//! Goodput: the number of requests that succeeded *and* met every bound of the
//! SLO, divided by the point's wall time (first send to last completion). A
//! bound the request cannot be judged by counts as met: TPOT when the request
//! produced at most one token, TTFT/TPOT for non-streaming calls (which have no
//! per-token timings). Failed requests never count. `attainment` is the same
//! count over every request sent, failures included.

use serde::Serialize;

use super::record::RequestRecord;

/// The `p`-th percentile (0..=100) of ascending `sorted` values by linear
/// interpolation between closest ranks: numpy's default (`method="linear"`).
/// `None` when there are no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (sorted[lo], sorted[hi.min(n - 1)]);
    Some(a + (b - a) * (rank - lo as f64))
}

/// Mean, percentiles and range of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values` (any order; NaNs are dropped); `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let pct = |p| percentile(&v, p).unwrap_or(f64::NAN);
        Some(Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// Latency bounds a request must meet to count toward goodput (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Slo {
    /// Time to first token at most this.
    pub ttft_ms: Option<f64>,
    /// Time per output token at most this.
    pub tpot_ms: Option<f64>,
    /// End-to-end latency at most this.
    pub e2e_ms: Option<f64>,
}

impl Slo {
    /// Whether any bound is set.
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2e_ms.is_some()
    }

    /// Whether `r` succeeded and meets every bound it can be judged by.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if r.error.is_some() {
            return false;
        }
        let within = |bound: Option<f64>, value: Option<f64>| match (bound, value) {
            (Some(b), Some(v)) => v <= b,
            _ => true,
        };
        within(self.ttft_ms, r.ttft_ms)
            && within(self.tpot_ms, r.tpot_ms)
            && within(self.e2e_ms, Some(r.e2e_ms))
    }
}

/// Requests and tokens per second over a point's wall time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Prompt tokens of successful requests per second.
    pub input_tokens_per_s: f64,
    /// Generated tokens of successful requests per second.
    pub output_tokens_per_s: f64,
}

/// Goodput: successful requests within the SLO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Goodput {
    /// Requests that met the SLO, per second.
    pub requests_per_s: f64,
    /// Requests that met the SLO.
    pub requests: usize,
    /// Those requests over all requests sent (0 when none were sent).
    pub attainment: f64,
}

/// Everything one sweep point measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointStats {
    /// Requests sent.
    pub sent: usize,
    /// Requests that completed without error.
    pub completed: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Failures by error kind, sorted by kind.
    pub errors: std::collections::BTreeMap<String, usize>,
    /// Wall time of the point in seconds: first send to last completion.
    pub duration_s: f64,
    /// Rates over `duration_s`.
    pub throughput: Throughput,
    /// SLO goodput, when an SLO was given.
    pub goodput: Option<Goodput>,
    /// Time to first token (ms), successful streaming requests.
    pub ttft_ms: Option<Summary>,
    /// Time per output token after the first (ms), successful requests with two or more tokens.
    pub tpot_ms: Option<Summary>,
    /// Every gap between consecutive content events (ms), all successful requests pooled.
    pub itl_ms: Option<Summary>,
    /// End-to-end latency (ms), successful requests.
    pub e2e_ms: Option<Summary>,
    /// Prompt tokens per successful request.
    pub input_tokens: Option<Summary>,
    /// Generated tokens per successful request.
    pub output_tokens: Option<Summary>,
}

impl PointStats {
    /// Summarizes `records` measured over `duration_s` seconds.
    pub fn of(records: &[RequestRecord], duration_s: f64, slo: &Slo) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
        let mut errors = std::collections::BTreeMap::new();
        for r in records {
            if let Some(e) = &r.error {
                *errors.entry(e.kind.clone()).or_insert(0) += 1;
            }
        }
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let input: u64 = ok.iter().filter_map(|r| r.input_tokens).sum();
        let output: u64 = ok.iter().filter_map(|r| r.output_tokens).sum();
        let goodput = slo.is_set().then(|| {
            let good = records.iter().filter(|r| slo.met_by(r)).count();
            Goodput {
                requests_per_s: per_s(good as f64),
                requests: good,
                attainment: if records.is_empty() {
                    0.0
                } else {
                    good as f64 / records.len() as f64
                },
            }
        });
        Self {
            sent: records.len(),
            completed: ok.len(),
            failed: records.len() - ok.len(),
            errors,
            duration_s,
            throughput: Throughput {
                requests_per_s: per_s(ok.len() as f64),
                input_tokens_per_s: per_s(input as f64),
                output_tokens_per_s: per_s(output as f64),
            },
            goodput,
            ttft_ms: Summary::of(ok.iter().filter_map(|r| r.ttft_ms)),
            tpot_ms: Summary::of(ok.iter().filter_map(|r| r.tpot_ms)),
            itl_ms: Summary::of(ok.iter().flat_map(|r| r.itl_ms.iter().copied())),
            e2e_ms: Summary::of(ok.iter().map(|r| r.e2e_ms)),
            input_tokens: Summary::of(ok.iter().filter_map(|r| r.input_tokens.map(|t| t as f64))),
            output_tokens: Summary::of(ok.iter().filter_map(|r| r.output_tokens.map(|t| t as f64))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::RequestError;
    use proptest::prelude::*;

    fn ok(ttft: f64, tpot: Option<f64>, e2e: f64, out: u64) -> RequestRecord {
        RequestRecord {
            ttft_ms: Some(ttft),
            tpot_ms: tpot,
            e2e_ms: e2e,
            input_tokens: Some(10),
            output_tokens: Some(out),
            itl_ms: vec![1.0; out.saturating_sub(1) as usize],
            ..RequestRecord::default()
        }
    }

    fn failed(kind: &str) -> RequestRecord {
        RequestRecord {
            e2e_ms: 5.0,
            error: Some(RequestError::new(kind, "x")),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [0, 25, 50, 90, 99, 100])
        //   -> [1.0, 2.0, 3.0, 7.6, 9.76, 10.0]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        let want = [
            (0.0, 1.0),
            (25.0, 2.0),
            (50.0, 3.0),
            (90.0, 7.6),
            (99.0, 9.76),
            (100.0, 10.0),
        ];
        for (p, w) in want {
            let got = percentile(&v, p).unwrap_or(f64::NAN);
            assert!((got - w).abs() < 1e-9, "p{p}: {got} != {w}");
        }
        // numpy.percentile([5, 7], 50) -> 6.0; one value is every percentile.
        assert_eq!(percentile(&[5.0, 7.0], 50.0), Some(6.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_of_unsorted_values() {
        let s = Summary::of([4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, 2.5);
        assert_eq!(s.p50, 2.5);
        assert!((s.p90 - 3.7).abs() < 1e-9);
        assert!((s.p99 - 3.97).abs() < 1e-9);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_eq!(Summary::of([]), None);
        assert_eq!(Summary::of([f64::NAN]), None);
    }

    #[test]
    fn goodput_counts_only_successes_within_every_bound() {
        let records = vec![
            ok(500.0, Some(50.0), 2000.0, 30),  // good
            ok(1500.0, Some(50.0), 3000.0, 30), // TTFT too slow
            ok(200.0, Some(150.0), 5000.0, 30), // TPOT too slow
            ok(900.0, None, 900.0, 1),          // one token: TPOT not judged -> good
            failed("ThrottlingException"),
        ];
        let slo = Slo {
            ttft_ms: Some(1000.0),
            tpot_ms: Some(100.0),
            e2e_ms: None,
        };
        let s = PointStats::of(&records, 2.0, &slo);
        let g = s.goodput.expect("an SLO was set");
        assert_eq!(g.requests, 2);
        assert_eq!(g.requests_per_s, 1.0);
        assert!((g.attainment - 0.4).abs() < 1e-12);
        assert_eq!(s.sent, 5);
        assert_eq!(s.completed, 4);
        assert_eq!(s.failed, 1);
        assert_eq!(s.errors.get("ThrottlingException"), Some(&1));
        assert_eq!(s.throughput.requests_per_s, 2.0);
        assert_eq!(s.throughput.output_tokens_per_s, (30.0 * 3.0 + 1.0) / 2.0);
        assert_eq!(s.throughput.input_tokens_per_s, 20.0);
        // The failure's e2e does not enter the latency summary.
        assert_eq!(s.e2e_ms.map(|e| e.min), Some(900.0));
        assert_eq!(s.itl_ms.map(|i| i.count), Some(29 * 3));
        assert_eq!(s.tpot_ms.map(|t| t.count), Some(3));

        let e2e_only = Slo {
            e2e_ms: Some(2500.0),
            ..Slo::default()
        };
        let g = PointStats::of(&records, 2.0, &e2e_only)
            .goodput
            .expect("set");
        assert_eq!(g.requests, 2);
        assert_eq!(PointStats::of(&records, 2.0, &Slo::default()).goodput, None);
    }

    #[test]
    fn empty_point_has_no_summaries_and_zero_rates() {
        let s = PointStats::of(&[], 0.0, &Slo::default());
        assert_eq!(s.sent, 0);
        assert_eq!(s.throughput.requests_per_s, 0.0);
        assert!(s.ttft_ms.is_none() && s.e2e_ms.is_none());
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_and_bounded(
            mut v in prop::collection::vec(-1e6f64..1e6, 1..200),
            p in 0f64..=100.0,
        ) {
            v.sort_by(f64::total_cmp);
            let s = Summary::of(v.iter().copied()).expect("non-empty");
            prop_assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
            prop_assert!(s.min <= s.mean + 1e-6 && s.mean <= s.max + 1e-6);
            prop_assert_eq!(s.min, v[0]);
            prop_assert_eq!(s.max, v[v.len() - 1]);
            let x = percentile(&v, p).expect("non-empty");
            prop_assert!(v[0] <= x && x <= v[v.len() - 1]);
            // Monotone in p.
            let y = percentile(&v, (p + 1.0).min(100.0)).expect("non-empty");
            prop_assert!(x <= y + 1e-9 * y.abs().max(1.0));
            // At least p% of the values are <= the p-th percentile's floor rank value.
            let below = v.iter().filter(|&&a| a <= x).count();
            prop_assert!(below as f64 >= (p / 100.0) * (v.len() - 1) as f64);
        }

        #[test]
        fn goodput_never_exceeds_throughput(
            ttfts in prop::collection::vec(0f64..3000.0, 0..50),
            fails in 0usize..5,
            bound in 0f64..3000.0,
        ) {
            let mut records: Vec<RequestRecord> =
                ttfts.iter().map(|&t| ok(t, Some(10.0), t + 100.0, 11)).collect();
            records.extend((0..fails).map(|_| failed("io")));
            let slo = Slo { ttft_ms: Some(bound), ..Slo::default() };
            let s = PointStats::of(&records, 1.5, &slo);
            let g = s.goodput.expect("set");
            prop_assert!(g.requests <= s.completed);
            prop_assert!(g.requests_per_s <= s.throughput.requests_per_s + 1e-12);
            prop_assert!((0.0..=1.0).contains(&g.attainment));
            prop_assert_eq!(g.requests, ttfts.iter().filter(|&&t| t <= bound).count());
        }
    }
}
