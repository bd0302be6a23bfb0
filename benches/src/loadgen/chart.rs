//! The sweep's chart as SVG, written directly (no plotting dependency):
//! three panels (TTFT, TPOT, end-to-end latency), each plotting p50/p90/p99
//! latency against output token throughput, one marker per sweep point
//! labelled with its load.

use std::fmt::Write as _;

use super::report::BenchReport;
use super::stats::Summary;

const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 320.0;
const MARGIN_L: f64 = 62.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 58.0;
const MARGIN_B: f64 = 64.0;
const SERIES: [(&str, &str, &str); 3] = [
    ("p50", "#1f77b4", ""),
    ("p90", "#ff7f0e", "6 3"),
    ("p99", "#d62728", "2 3"),
];

/// XML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `0..=max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn tick_label(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Axis end and step covering `max` (at least something visible when all are 0).
fn axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let step = nice_step(max, 5.0);
    ((max / step).ceil() * step, step)
}

/// The chart for `report`.
pub fn svg(report: &BenchReport) -> String {
    type Pick = fn(&crate::loadgen::stats::PointStats) -> Option<Summary>;
    let panels: [(&str, Pick); 3] = [
        ("Time to first token (ms)", |s| s.ttft_ms),
        ("Time per output token (ms)", |s| s.tpot_ms),
        ("End-to-end latency (ms)", |s| s.e2e_ms),
    ];
    let width = PANEL_W * panels.len() as f64;
    let height = PANEL_H + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    out.push('\n');
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let c = &report.config;
    let title = format!(
        "factory-bench: {} via {}{} at {} - latency vs output throughput ({})",
        c.model,
        serde_json::to_value(c.api)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        if c.stream { " (stream)" } else { "" },
        c.url,
        report
            .points
            .first()
            .map_or("no points", |p| if p.load.kind() == "rate" {
                "Poisson arrivals"
            } else {
                "closed loop"
            }),
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(&title)
    );
    let xs: Vec<f64> = report
        .points
        .iter()
        .map(|p| p.stats.throughput.output_tokens_per_s)
        .collect();
    let (x_max, x_step) = axis(xs.iter().copied().fold(0.0, f64::max) * 1.05);
    for (k, (name, pick)) in panels.iter().enumerate() {
        let ox = k as f64 * PANEL_W;
        let (l, r) = (ox + MARGIN_L, ox + PANEL_W - MARGIN_R);
        let (t, b) = (MARGIN_T, PANEL_H + 30.0 - MARGIN_B);
        let sums: Vec<Option<Summary>> = report.points.iter().map(|p| pick(&p.stats)).collect();
        let y_top = sums.iter().flatten().map(|s| s.p99).fold(0.0, f64::max) * 1.08;
        let (y_max, y_step) = axis(y_top);
        let px = |x: f64| l + (x / x_max) * (r - l);
        let py = |y: f64| b - (y / y_max) * (b - t);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="12" font-weight="bold">{}</text>"#,
            (l + r) / 2.0,
            t - 10.0,
            esc(name)
        );
        // Grid and ticks.
        let mut v = 0.0;
        while v <= y_max + y_step * 1e-9 {
            let y = py(v);
            let _ = writeln!(
                out,
                r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                l - 5.0,
                y + 4.0,
                tick_label(v)
            );
            v += y_step;
        }
        let mut v = 0.0;
        while v <= x_max + x_step * 1e-9 {
            let x = px(v);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="#f0f0f0"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                b + 15.0,
                tick_label(v)
            );
            v += x_step;
        }
        let _ = writeln!(
            out,
            r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            r - l,
            b - t
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">output tokens/s</text>"#,
            (l + r) / 2.0,
            b + 32.0
        );
        if sums.iter().all(Option::is_none) {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no data (not streamed)</text>"##,
                (l + r) / 2.0,
                (t + b) / 2.0
            );
            continue;
        }
        for (name, color, dash) in SERIES {
            let pts: Vec<(f64, f64)> = xs
                .iter()
                .zip(&sums)
                .filter_map(|(&x, s)| {
                    let s = (*s)?;
                    let y = match name {
                        "p50" => s.p50,
                        "p90" => s.p90,
                        _ => s.p99,
                    };
                    Some((px(x), py(y)))
                })
                .collect();
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8" stroke-dasharray="{dash}"/>"#,
                path.join(" ")
            );
            for (x, y) in &pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.8" fill="{color}"/>"#
                );
            }
        }
        // Load labels next to the p50 markers.
        for ((p, &x), s) in report.points.iter().zip(&xs).zip(&sums) {
            if let Some(s) = s {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" fill="#555" font-size="10">{}</text>"##,
                    px(x) + 4.0,
                    py(s.p50) + 12.0,
                    esc(&p.load.label())
                );
            }
        }
        // Legend.
        for (i, (name, color, dash)) in SERIES.iter().enumerate() {
            let y = t + 12.0 + i as f64 * 14.0;
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="1.8" stroke-dasharray="{dash}"/><text x="{}" y="{}">{name}</text>"#,
                l + 8.0,
                l + 28.0,
                l + 32.0,
                y + 4.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.3, 5.0), 0.1);
        assert_eq!(axis(93.0), (100.0, 20.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
