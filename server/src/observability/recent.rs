//! The last minute of requests, for the status page: latency samples with
//! their times and per-second token counts, pruned as they age out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How far back the window reaches.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Span over which tokens per second are averaged.
pub const RATE_SPAN: Duration = Duration::from_secs(10);
/// Most samples of one kind kept, so a burst cannot grow memory without bound
/// (the oldest go first).
const MAX_SAMPLES: usize = 20_000;

/// Timed samples of one quantity, oldest first.
#[derive(Debug, Default)]
struct Samples(VecDeque<(Instant, f64)>);

impl Samples {
    fn push(&mut self, at: Instant, value: f64) {
        if self.0.len() == MAX_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((at, value));
    }

    fn prune(&mut self, oldest: Instant) {
        while self.0.front().is_some_and(|&(t, _)| t < oldest) {
            self.0.pop_front();
        }
    }

    fn summary(&self) -> Percentiles {
        let mut v: Vec<f64> = self.0.iter().map(|&(_, x)| x).collect();
        v.sort_by(f64::total_cmp);
        Percentiles {
            count: v.len(),
            p50: nearest_rank(&v, 0.50),
            p90: nearest_rank(&v, 0.90),
            p99: nearest_rank(&v, 0.99),
        }
    }
}

/// The `q` quantile of sorted `v` by nearest rank; `None` when empty.
fn nearest_rank(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Percentiles of a window's samples (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples in the window.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// What the window shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentSummary {
    /// Requests finished in the window.
    pub requests: usize,
    /// Generated tokens per second over the last [`RATE_SPAN`].
    pub generation_tokens_per_second: f64,
    /// Prompt tokens per second over the last [`RATE_SPAN`].
    pub prompt_tokens_per_second: f64,
    /// Time to first token.
    pub ttft_seconds: Percentiles,
    /// Inter-token latency.
    pub itl_seconds: Percentiles,
    /// End-to-end latency of finished requests.
    pub e2e_seconds: Percentiles,
}

/// The rolling window. Times come from the monotonic clock.
#[derive(Debug)]
pub struct RecentWindow {
    origin: Instant,
    ttft: Samples,
    itl: Samples,
    e2e: Samples,
    /// (second since `origin`, generated tokens, prompt tokens), oldest first.
    per_second: VecDeque<(u64, u64, u64)>,
    totals: Totals,
}

/// Counts since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests that finished normally.
    pub requests: u64,
    /// Prompt tokens of requests that reached their first token.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generation_tokens: u64,
}

impl RecentWindow {
    /// An empty window starting now.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            ttft: Samples::default(),
            itl: Samples::default(),
            e2e: Samples::default(),
            per_second: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    /// Counts since the start.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// A request's first token, `ttft` after submission, ending a prefill of
    /// `prompt_tokens`.
    pub fn first_token(&mut self, at: Instant, ttft: Duration, prompt_tokens: usize) {
        self.ttft.push(at, ttft.as_secs_f64());
        self.count(at, 1, prompt_tokens as u64);
        self.totals.prompt_tokens += prompt_tokens as u64;
        self.totals.generation_tokens += 1;
        self.prune(at);
    }

    /// A later token, `itl` after the request's previous one.
    pub fn next_token(&mut self, at: Instant, itl: Duration) {
        self.itl.push(at, itl.as_secs_f64());
        self.count(at, 1, 0);
        self.totals.generation_tokens += 1;
        self.prune(at);
    }

    /// A request that finished `e2e` after submission.
    pub fn finished(&mut self, at: Instant, e2e: Duration) {
        self.e2e.push(at, e2e.as_secs_f64());
        self.totals.requests += 1;
        self.prune(at);
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    fn count(&mut self, at: Instant, generated: u64, prompt: u64) {
        let sec = self.second(at);
        match self.per_second.back_mut() {
            // Samples come from many tasks, so one can arrive after a newer
            // second began; it joins the newest bucket, keeping them in order.
            Some((s, g, p)) if *s >= sec => {
                *g += generated;
                *p += prompt;
            }
            _ => self.per_second.push_back((sec, generated, prompt)),
        }
    }

    fn prune(&mut self, now: Instant) {
        let oldest = now.checked_sub(WINDOW).unwrap_or(self.origin);
        self.ttft.prune(oldest);
        self.itl.prune(oldest);
        self.e2e.prune(oldest);
        let first_sec = self.second(oldest);
        while self
            .per_second
            .front()
            .is_some_and(|&(s, _, _)| s < first_sec)
        {
            self.per_second.pop_front();
        }
    }

    /// The window as of `now`.
    pub fn summary(&mut self, now: Instant) -> RecentSummary {
        self.prune(now);
        let now_sec = self.second(now);
        // Whole seconds only: the current, partial second is left out.
        let span = RATE_SPAN.as_secs();
        let first = now_sec.saturating_sub(span);
        let (mut generated, mut prompt) = (0, 0);
        for &(s, g, p) in &self.per_second {
            if s >= first && s < now_sec {
                generated += g;
                prompt += p;
            }
        }
        let seconds = now_sec.min(span).max(1) as f64;
        RecentSummary {
            requests: self.e2e.0.len(),
            generation_tokens_per_second: generated as f64 / seconds,
            prompt_tokens_per_second: prompt as f64 / seconds,
            ttft_seconds: self.ttft.summary(),
            itl_seconds: self.itl.summary(),
            e2e_seconds: self.e2e.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(50.0));
        assert_eq!(nearest_rank(&v, 0.9), Some(90.0));
        assert_eq!(nearest_rank(&v, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&[3.0], 0.99), Some(3.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn samples_older_than_a_minute_leave_the_window() {
        let t0 = Instant::now();
        let mut w = RecentWindow::new(t0);
        w.first_token(t0, ms(100), 10);
        w.next_token(t0 + ms(20), ms(20));
        w.finished(t0 + ms(40), ms(140));
        let s = w.summary(t0 + Duration::from_secs(1));
        assert_eq!(s.requests, 1);
        assert_eq!(s.ttft_seconds.p50, Some(0.1));
        assert_eq!(s.itl_seconds.p99, Some(0.02));
        assert_eq!(s.e2e_seconds.count, 1);

        w.first_token(t0 + Duration::from_secs(61), ms(300), 5);
        let s = w.summary(t0 + Duration::from_secs(62));
        assert_eq!(s.requests, 0);
        assert_eq!(s.ttft_seconds.count, 1);
        assert_eq!(s.ttft_seconds.p50, Some(0.3));
        assert_eq!(s.itl_seconds.p50, None);
        assert_eq!(
            w.totals(),
            Totals {
                requests: 1,
                prompt_tokens: 15,
                generation_tokens: 3
            }
        );
    }

    #[test]
    fn tokens_per_second_over_whole_seconds() {
        let t0 = Instant::now();
        let mut w = RecentWindow::new(t0);
        // 20 tokens per second for 12 seconds.
        for i in 0..240u64 {
            let at = t0 + ms(i * 50);
            if i % 20 == 0 {
                w.first_token(at, ms(10), 100);
            } else {
                w.next_token(at, ms(50));
            }
        }
        let s = w.summary(t0 + Duration::from_secs(12));
        assert!(
            (s.generation_tokens_per_second - 20.0).abs() < 1e-9,
            "{s:?}"
        );
        assert!((s.prompt_tokens_per_second - 100.0).abs() < 1e-9, "{s:?}");
        // Two seconds in, the rate is over those two seconds.
        let mut w = RecentWindow::new(t0);
        for i in 0..40u64 {
            w.next_token(t0 + ms(i * 50), ms(50));
        }
        let s = w.summary(t0 + Duration::from_secs(2));
        assert!(
            (s.generation_tokens_per_second - 20.0).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut w = RecentWindow::new(t0);
        for _ in 0..(MAX_SAMPLES + 10) {
            w.next_token(t0, ms(1));
        }
        assert_eq!(w.summary(t0).itl_seconds.count, MAX_SAMPLES);
    }
}
