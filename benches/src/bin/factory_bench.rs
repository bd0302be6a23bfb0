//! `factory-bench`: drives a running server (Bedrock Runtime API or OpenAI
//! chat API) through a sweep of closed-loop concurrencies or open-loop
//! Poisson rates, and reports latency (TTFT, TPOT, inter-token gaps,
//! end-to-end), throughput and goodput as a table, JSON, CSV and an SVG chart.
//!
//! `cargo run --release -p factory-benches --bin factory-bench -- --help`
//!
//! Exit status: 0 when the sweep ran (request failures are results, counted
//! in the report), 1 on bad flags or I/O errors, 2 when every request failed
//! (usually a wrong URL, model id or credentials).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use factory_benches::loadgen::cli::Args;
use factory_benches::loadgen::client::Client;
use factory_benches::loadgen::report::{table, write_all};
use factory_benches::loadgen::run::run_sweep;
use tokio::sync::watch;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("factory-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan(&|k| std::env::var(k).ok())?;
    let client = Client::new(plan.target.clone())?;
    let c = &plan.config;
    eprintln!(
        "factory-bench: {} {} model {} ({} auth), {} points, prompts: {} ({})",
        c.url,
        serde_json::to_string(&c.api)?.trim_matches('"'),
        c.model,
        c.auth,
        plan.loads.len(),
        c.workload.prompts,
        c.workload.prompt_lengths,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(async {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "factory-bench: stopping (requests in flight finish); Ctrl-C again to abort"
                );
                tx.send(true).ok();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        run_sweep(&plan, &client, rx, |p| {
            let s = &p.stats;
            eprintln!(
                "{:>8}: {} ok, {} failed, {:.2} req/s, {:.1} output tok/s in {:.1} s",
                p.load.label(),
                s.completed,
                s.failed,
                s.throughput.requests_per_s,
                s.throughput.output_tokens_per_s,
                s.duration_s,
            );
        })
        .await
    });
    print!("{}", table::render(&report.points));
    let written = write_all(&plan.out, &report)
        .with_context(|| format!("writing results to {}", plan.out.display()))?;
    println!(
        "wrote {}, {}, {}, {}",
        written.json.display(),
        written.summary_csv.display(),
        written.requests_csv.display(),
        written.chart.display()
    );
    let sent: usize = report.points.iter().map(|p| p.stats.sent).sum();
    let completed: usize = report.points.iter().map(|p| p.stats.completed).sum();
    if sent > 0 && completed == 0 {
        eprintln!("factory-bench: every request failed");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
