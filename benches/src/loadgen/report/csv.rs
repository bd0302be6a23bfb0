//! CSV files (RFC 4180 quoting): one row per sweep point, one row per request.

use super::PointReport;
use crate::loadgen::stats::Summary;

/// A field quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_default()
}

fn summary_cells(s: &Option<Summary>) -> [String; 4] {
    [
        num(s.map(|s| s.mean)),
        num(s.map(|s| s.p50)),
        num(s.map(|s| s.p90)),
        num(s.map(|s| s.p99)),
    ]
}

/// `summary.csv`: one row per point.
pub fn summary(points: &[PointReport]) -> String {
    let mut head = vec![
        "load_kind",
        "load_value",
        "sent",
        "completed",
        "failed",
        "duration_s",
        "requests_per_s",
        "input_tokens_per_s",
        "output_tokens_per_s",
        "goodput_requests_per_s",
        "slo_attainment",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for m in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"] {
        for s in ["mean", "p50", "p90", "p99"] {
            head.push(format!("{m}_{s}"));
        }
    }
    head.extend(["input_tokens_mean", "output_tokens_mean", "errors"].map(String::from));
    let mut out = head.join(",") + "\n";
    for p in points {
        let s = &p.stats;
        let mut row = vec![
            p.load.kind().to_string(),
            p.load.value().to_string(),
            s.sent.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            format!("{:.3}", s.duration_s),
            format!("{:.4}", s.throughput.requests_per_s),
            format!("{:.3}", s.throughput.input_tokens_per_s),
            format!("{:.3}", s.throughput.output_tokens_per_s),
            num(s.goodput.map(|g| g.requests_per_s)),
            num(s.goodput.map(|g| g.attainment)),
        ];
        for m in [&s.ttft_ms, &s.tpot_ms, &s.itl_ms, &s.e2e_ms] {
            row.extend(summary_cells(m));
        }
        row.push(num(s.input_tokens.map(|t| t.mean)));
        row.push(num(s.output_tokens.map(|t| t.mean)));
        let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        row.push(errors.join(";"));
        out += &row.iter().map(|c| field(c)).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

/// `requests.csv`: one row per request; `itl_ms` holds the gaps separated by spaces.
pub fn requests(points: &[PointReport]) -> String {
    let mut out = String::from(
        "load_kind,load_value,index,start_s,ok,error_kind,error_message,ttft_ms,tpot_ms,e2e_ms,input_tokens,output_tokens,usage_reported,itl_ms\n",
    );
    for p in points {
        for r in &p.requests {
            let itl: Vec<String> = r.itl_ms.iter().map(|g| format!("{g:.3}")).collect();
            let row = [
                p.load.kind().to_string(),
                p.load.value().to_string(),
                r.index.to_string(),
                format!("{:.6}", r.start_s),
                (r.error.is_none()).to_string(),
                r.error.as_ref().map(|e| e.kind.clone()).unwrap_or_default(),
                r.error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                num(r.ttft_ms),
                num(r.tpot_ms),
                format!("{:.3}", r.e2e_ms),
                r.input_tokens.map(|t| t.to_string()).unwrap_or_default(),
                r.output_tokens.map(|t| t.to_string()).unwrap_or_default(),
                r.usage_reported.to_string(),
                itl.join(" "),
            ];
            out += &row.iter().map(|c| field(c)).collect::<Vec<_>>().join(",");
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::{RequestError, RequestRecord};
    use crate::loadgen::schedule::Load;
    use crate::loadgen::stats::{PointStats, Slo};

    #[test]
    fn quoting_and_columns() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(field("plain"), "plain");
        let requests = vec![
            RequestRecord {
                ttft_ms: Some(10.0),
                e2e_ms: 30.0,
                itl_ms: vec![5.0, 15.0],
                output_tokens: Some(3),
                ..RequestRecord::default()
            },
            RequestRecord {
                index: 1,
                e2e_ms: 1.0,
                error: Some(RequestError::new("io", "reset, \"peer\"")),
                ..RequestRecord::default()
            },
        ];
        let points = [PointReport {
            load: Load::Concurrency(2),
            interrupted: false,
            delayed_arrivals: 0,
            stats: PointStats::of(&requests, 1.0, &Slo::default()),
            requests,
        }];
        let s = summary(&points);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        let head = lines[0].split(',').count();
        assert_eq!(lines[1].split(',').count(), head, "{s}");
        assert!(lines[1].starts_with("concurrency,2,2,1,1,"));
        assert!(lines[1].ends_with(",io=1"));
        let r = requests_csv_lines(&points);
        assert_eq!(r.len(), 3);
        assert!(r[1].ends_with(",5.000 15.000"), "{}", r[1]);
        assert!(r[2].contains("\"reset, \"\"peer\"\"\""), "{}", r[2]);
    }

    fn requests_csv_lines(points: &[PointReport]) -> Vec<String> {
        requests(points).lines().map(String::from).collect()
    }
}
