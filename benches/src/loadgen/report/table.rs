//! The terminal table: one row per sweep point.

use super::PointReport;
use crate::loadgen::stats::Summary;

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn pcts(s: &Option<Summary>, all: bool) -> String {
    match s {
        Some(s) if all => format!("{}/{}/{}", ms(s.p50), ms(s.p90), ms(s.p99)),
        Some(s) => format!("{}/{}", ms(s.p50), ms(s.p99)),
        None => "-".into(),
    }
}

/// The table of `points`, with a header; columns padded to their widest cell.
pub fn render(points: &[PointReport]) -> String {
    let mut rows = vec![vec![
        "load".to_string(),
        "ok/fail".into(),
        "req/s".into(),
        "out tok/s".into(),
        "goodput".into(),
        "TTFT ms p50/90/99".into(),
        "TPOT ms p50/90/99".into(),
        "ITL ms p50/99".into(),
        "E2E ms p50/90/99".into(),
        "tok in/out".into(),
    ]];
    for p in points {
        let s = &p.stats;
        let mut load = p.load.label();
        if p.interrupted {
            load.push('*');
        }
        rows.push(vec![
            load,
            format!("{}/{}", s.completed, s.failed),
            format!("{:.2}", s.throughput.requests_per_s),
            format!("{:.1}", s.throughput.output_tokens_per_s),
            s.goodput.map_or_else(
                || "-".into(),
                |g| format!("{:.2} ({:.0}%)", g.requests_per_s, g.attainment * 100.0),
            ),
            pcts(&s.ttft_ms, true),
            pcts(&s.tpot_ms, true),
            pcts(&s.itl_ms, false),
            pcts(&s.e2e_ms, true),
            match (s.input_tokens, s.output_tokens) {
                (Some(i), Some(o)) => format!("{:.0}/{:.0}", i.mean, o.mean),
                (None, Some(o)) => format!("-/{:.0}", o.mean),
                _ => "-".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out += &"-".repeat(total);
            out.push('\n');
        }
    }
    let errors: Vec<String> = points
        .iter()
        .filter(|p| !p.stats.errors.is_empty())
        .map(|p| {
            let e: Vec<String> = p
                .stats
                .errors
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            format!("{}: {}", p.load.label(), e.join(", "))
        })
        .collect();
    if !errors.is_empty() {
        out += &format!("errors: {}\n", errors.join("; "));
    }
    out
}
