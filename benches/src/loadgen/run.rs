//! Running a plan: optional warm-up, then each sweep point in turn, with a
//! progress bar per point, into a [`BenchReport`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::cli::Plan;
use super::client::Client;
use super::report::{BenchReport, PointReport};
use super::schedule::{run_point, Bounds, Load, PointRun};
use super::stats::PointStats;
use super::workload::{PromptRequest, Workload};

/// The point index used for warm-up prompts (distinct from every sweep point).
const WARMUP_POINT: usize = usize::MAX;

fn progress_bar(load: &Load, bounds: &Bounds, show: bool) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = match bounds.requests {
        Some(n) => ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if bounds.requests.is_some() {
        "{prefix:>8} [{bar:32}] {pos}/{len} requests  {elapsed_precise}"
    } else {
        "{prefix:>8} {spinner} {pos} requests  {elapsed_precise}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(load.label());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// One point to run: its place in the sweep (which picks its prompts), load,
/// limits and arrival seed.
struct PointSpec {
    index: usize,
    load: Load,
    bounds: Bounds,
    seed: u64,
}

/// Runs one point.
async fn point(
    client: &Client,
    workload: &Arc<Workload>,
    spec: PointSpec,
    stop: watch::Receiver<bool>,
    progress: Option<ProgressBar>,
) -> PointRun {
    let PointSpec {
        index: point,
        load,
        bounds,
        seed,
    } = spec;
    // With a request count the prompts are made before the clock starts, so
    // making them (tokenizer work) never delays a send.
    let made: Option<Arc<Vec<PromptRequest>>> = bounds
        .requests
        .map(|n| Arc::new((0..n).map(|i| workload.request(point, i)).collect()));
    let client = client.clone();
    let workload = workload.clone();
    let send = move |i: usize| {
        let client = client.clone();
        let req = match &made {
            Some(m) if i < m.len() => m[i].clone(),
            _ => workload.request(point, i),
        };
        async move { client.send(&req).await }
    };
    run_point(load, bounds, seed, stop, progress, send).await
}

/// Runs the warm-up and the sweep; `on_point` sees each point as it finishes.
pub async fn run_sweep(
    plan: &Plan,
    client: &Client,
    stop: watch::Receiver<bool>,
    mut on_point: impl FnMut(&PointReport),
) -> BenchReport {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let workload = Arc::new(plan.workload.clone());
    if plan.warmup > 0 {
        let c = match plan.loads.first() {
            Some(Load::Concurrency(c)) => *c,
            _ => 4,
        }
        .min(plan.warmup);
        let bounds = Bounds {
            requests: Some(plan.warmup),
            duration: None,
            ..plan.bounds
        };
        tracing::info!("warm-up: {} requests at concurrency {c}", plan.warmup);
        let spec = PointSpec {
            index: WARMUP_POINT,
            load: Load::Concurrency(c),
            bounds,
            seed: plan.seed,
        };
        let run = point(client, &workload, spec, stop.clone(), None).await;
        let failed = run.records.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            tracing::warn!("warm-up: {failed} of {} requests failed", run.records.len());
        }
    }
    let mut points = Vec::new();
    for (k, &load) in plan.loads.iter().enumerate() {
        if *stop.borrow() {
            break;
        }
        let bar = progress_bar(&load, &plan.bounds, plan.progress);
        let seed = plan.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let spec = PointSpec {
            index: k,
            load,
            bounds: plan.bounds,
            seed,
        };
        let run = point(client, &workload, spec, stop.clone(), bar.clone()).await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let report = PointReport {
            load,
            interrupted: run.interrupted,
            delayed_arrivals: run.delayed_arrivals,
            stats: PointStats::of(&run.records, run.duration_s, &plan.slo),
            requests: run.records,
        };
        on_point(&report);
        points.push(report);
    }
    BenchReport {
        tool: "factory-bench",
        version: env!("CARGO_PKG_VERSION"),
        started_unix_s,
        interrupted: *stop.borrow(),
        config: plan.config.clone(),
        points,
    }
}
