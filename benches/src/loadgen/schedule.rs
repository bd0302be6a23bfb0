//! Load shapes: a closed loop (a fixed number of requests always in flight)
//! and an open loop (Poisson arrivals at a given rate), each bounded by a
//! request count and/or a duration, and every request by a timeout.
//!
//! Latency is measured from the moment a request is sent. In the open loop a
//! request is sent at its arrival time unless `max_in_flight` requests are
//! already waiting, in which case it waits for a slot (and the report counts
//! how often that happened: the target could not keep up with the rate).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::record::{RequestError, RequestRecord, Timeline};

/// One sweep point's load; JSON `{"kind": "concurrency"|"rate", "value": N}`
/// (an infinite rate's value is the string `"inf"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Closed loop: this many requests in flight.
    Concurrency(usize),
    /// Open loop: Poisson arrivals at this many requests per second
    /// (infinite: all at once).
    Rate(f64),
}

impl Serialize for Load {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Load", 2)?;
        st.serialize_field("kind", self.kind())?;
        match *self {
            Self::Concurrency(c) => st.serialize_field("value", &c)?,
            Self::Rate(r) if r.is_infinite() => st.serialize_field("value", "inf")?,
            Self::Rate(r) => st.serialize_field("value", &r)?,
        }
        st.end()
    }
}

impl Load {
    /// A short label: `c=4`, `r=2.5`, `r=inf`.
    pub fn label(&self) -> String {
        match self {
            Self::Concurrency(c) => format!("c={c}"),
            Self::Rate(r) if r.is_infinite() => "r=inf".into(),
            Self::Rate(r) => format!("r={r}"),
        }
    }

    /// The load's number (concurrency or rate).
    pub fn value(&self) -> f64 {
        match *self {
            Self::Concurrency(c) => c as f64,
            Self::Rate(r) => r,
        }
    }

    /// `concurrency` or `rate`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Concurrency(_) => "concurrency",
            Self::Rate(_) => "rate",
        }
    }
}

/// Limits of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// Send at most this many requests.
    pub requests: Option<usize>,
    /// Send no new request after this long (requests in flight finish).
    pub duration: Option<Duration>,
    /// Give up on a request after this long.
    pub timeout: Duration,
    /// Open loop: most requests in flight at once.
    pub max_in_flight: usize,
}

/// What a point's run produced.
#[derive(Debug, Clone)]
pub struct PointRun {
    /// One record per request sent, in index order.
    pub records: Vec<RequestRecord>,
    /// First send to last completion, seconds.
    pub duration_s: f64,
    /// Open loop: arrivals that had to wait for an in-flight slot.
    pub delayed_arrivals: usize,
    /// Stopped early (Ctrl-C).
    pub interrupted: bool,
}

/// Runs one point: `send(i)` performs request `i`.
pub async fn run_point<S, F>(
    load: Load,
    bounds: Bounds,
    seed: u64,
    stop: watch::Receiver<bool>,
    progress: Option<ProgressBar>,
    send: S,
) -> PointRun
where
    S: Fn(usize) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Timeline, RequestError>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = bounds.duration.map(|d| start + d);
    let send = Arc::new(send);
    let one = {
        let timeout = bounds.timeout;
        move |i: usize, send: Arc<S>, progress: Option<ProgressBar>| async move {
            let sent = Instant::now();
            let record = match tokio::time::timeout(timeout, send(i)).await {
                Ok(Ok(t)) => RequestRecord::from_timeline(i, start, &t),
                Ok(Err(e)) => RequestRecord::failed(i, start, sent, e),
                Err(_) => RequestRecord::failed(
                    i,
                    start,
                    sent,
                    RequestError::new(
                        "timeout",
                        format!("no complete response within {:.0} s", timeout.as_secs_f64()),
                    ),
                ),
            };
            if let Some(p) = progress {
                p.inc(1);
            }
            record
        }
    };
    let past_deadline = move || deadline.is_some_and(|d| Instant::now() >= d);
    let over_count = move |i: usize| bounds.requests.is_some_and(|n| i >= n);
    let mut set = JoinSet::new();
    let mut delayed_arrivals = 0;
    match load {
        Load::Concurrency(c) => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..c.max(1) {
                let (next, send, stop, progress) =
                    (next.clone(), send.clone(), stop.clone(), progress.clone());
                set.spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        if *stop.borrow() || past_deadline() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if over_count(i) {
                            break;
                        }
                        mine.push(one(i, send.clone(), progress.clone()).await);
                    }
                    mine
                });
            }
        }
        Load::Rate(rate) => {
            let mut rng = StdRng::seed_from_u64(seed);
            let slots = Arc::new(Semaphore::new(bounds.max_in_flight.max(1)));
            let mut stop = stop.clone();
            let mut at = tokio::time::Instant::from_std(start);
            let mut i = 0;
            loop {
                if *stop.borrow() || over_count(i) {
                    break;
                }
                if deadline.is_some_and(|d| at.into_std() >= d) {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    _ = stop.changed() => break,
                }
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        delayed_arrivals += 1;
                        tokio::select! {
                            p = slots.clone().acquire_owned() => match p {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                            _ = stop.changed() => break,
                        }
                    }
                };
                let (send, progress) = (send.clone(), progress.clone());
                set.spawn(async move {
                    let r = one(i, send, progress).await;
                    drop(permit);
                    vec![r]
                });
                i += 1;
                at += inter_arrival(&mut rng, rate);
            }
        }
    }
    let mut records = Vec::new();
    while let Some(done) = set.join_next().await {
        // A panicking request task is a bug in the bench; its request is lost.
        match done {
            Ok(rs) => records.extend(rs),
            Err(e) => tracing::error!("request task failed: {e}"),
        }
    }
    records.sort_by_key(|r| r.index);
    PointRun {
        records,
        duration_s: start.elapsed().as_secs_f64(),
        delayed_arrivals,
        interrupted: *stop.borrow(),
    }
}

/// A Poisson process's gap: exponential with mean `1 / rate` (inverse
/// transform of a uniform); zero for an infinite rate.
pub fn inter_arrival(rng: &mut impl Rng, rate: f64) -> Duration {
    if !rate.is_finite() {
        return Duration::ZERO;
    }
    let u: f64 = rng.random(); // [0, 1)
    Duration::from_secs_f64(-(1.0 - u).ln() / rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::Usage;

    fn bounds(requests: Option<usize>, duration: Option<Duration>) -> Bounds {
        Bounds {
            requests,
            duration,
            timeout: Duration::from_secs(5),
            max_in_flight: 1000,
        }
    }

    /// A fake request taking `ms`, counting how many run at once.
    fn fake(
        ms: u64,
        now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> impl Fn(
        usize,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Timeline, RequestError>> + Send>>
           + Send
           + Sync
           + 'static {
        move |i| {
            let (now, peak) = (now.clone(), peak.clone());
            Box::pin(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                let mut t = Timeline::start(true);
                tokio::time::sleep(Duration::from_millis(ms / 2)).await;
                t.content.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(ms / 2)).await;
                t.content.push(Instant::now());
                t.end = Some(Instant::now());
                t.usage = Some(Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                });
                now.fetch_sub(1, Ordering::SeqCst);
                if i == 3 {
                    return Err(RequestError::new("injected", "request 3 fails"));
                }
                Ok(t)
            })
        }
    }

    #[tokio::test]
    async fn closed_loop_keeps_concurrency_and_count() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (_tx, rx) = watch::channel(false);
        let run = run_point(
            Load::Concurrency(3),
            bounds(Some(12), None),
            0,
            rx,
            None,
            fake(40, now, peak.clone()),
        )
        .await;
        assert_eq!(run.records.len(), 12);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        let idx: Vec<usize> = run.records.iter().map(|r| r.index).collect();
        assert_eq!(idx, (0..12).collect::<Vec<_>>());
        assert_eq!(run.records.iter().filter(|r| r.error.is_some()).count(), 1);
        assert_eq!(
            run.records[3].error.as_ref().map(|e| e.kind.as_str()),
            Some("injected")
        );
        // 12 requests of 40 ms, 3 at a time: about 4 rounds.
        assert!(
            run.duration_s >= 0.15 && run.duration_s < 2.0,
            "{}",
            run.duration_s
        );
        assert!(!run.interrupted);
    }

    #[tokio::test]
    async fn duration_bound_stops_sending() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (_tx, rx) = watch::channel(false);
        let run = run_point(
            Load::Concurrency(2),
            bounds(None, Some(Duration::from_millis(200))),
            0,
            rx,
            None,
            fake(50, now, peak),
        )
        .await;
        // About 200 / 50 * 2 = 8 requests (a few more or less on a busy machine).
        assert!(
            (2..=12).contains(&run.records.len()),
            "{}",
            run.records.len()
        );
        assert!(run.duration_s < 1.5);
    }

    #[tokio::test]
    async fn timeouts_are_recorded() {
        let (_tx, rx) = watch::channel(false);
        let mut b = bounds(Some(2), None);
        b.timeout = Duration::from_millis(30);
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let run = run_point(Load::Concurrency(2), b, 0, rx, None, fake(200, now, peak)).await;
        assert!(run
            .records
            .iter()
            .all(|r| r.error.as_ref().is_some_and(|e| e.kind == "timeout")));
    }

    #[tokio::test]
    async fn open_loop_rate_and_stop() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = watch::channel(false);
        let rate = 200.0;
        let run = run_point(
            Load::Rate(rate),
            bounds(Some(100), None),
            7,
            rx.clone(),
            None,
            fake(20, now.clone(), peak.clone()),
        )
        .await;
        assert_eq!(run.records.len(), 100);
        // 100 arrivals at 200/s: about 0.5 s (Poisson: within a generous band).
        assert!(
            run.duration_s > 0.25 && run.duration_s < 1.5,
            "{}",
            run.duration_s
        );
        // Sends follow the arrivals, not the completions: several overlap.
        assert!(peak.load(Ordering::SeqCst) >= 2);

        // Stopping ends the point early.
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).ok();
        });
        let run = run_point(
            Load::Rate(20.0),
            bounds(Some(1000), None),
            7,
            rx,
            None,
            fake(20, now, peak),
        )
        .await;
        stopper.await.ok();
        assert!(run.interrupted);
        assert!(run.records.len() < 50, "{}", run.records.len());
    }

    #[tokio::test]
    async fn open_loop_cap_delays_arrivals() {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (_tx, rx) = watch::channel(false);
        let mut b = bounds(Some(10), None);
        b.max_in_flight = 2;
        let run = run_point(
            Load::Rate(f64::INFINITY),
            b,
            1,
            rx,
            None,
            fake(30, now, peak.clone()),
        )
        .await;
        assert_eq!(run.records.len(), 10);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // Slots free up in pairs, so at least every other arrival after the first two waits.
        assert!(run.delayed_arrivals >= 4, "{}", run.delayed_arrivals);
    }

    #[test]
    fn exponential_gaps_have_mean_one_over_rate() {
        let mut rng = StdRng::seed_from_u64(11);
        let n = 20_000;
        let mean = (0..n)
            .map(|_| inter_arrival(&mut rng, 4.0).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.25).abs() < 0.01, "{mean}");
        assert_eq!(inter_arrival(&mut rng, f64::INFINITY), Duration::ZERO);
    }
}
