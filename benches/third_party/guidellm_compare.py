#!/usr/bin/env python3
"""guidellm's and factory-bench's figures side by side, one row per tool and
concurrency level, from the files benches/third_party/guidellm.sh writes.

usage: guidellm_compare.py OUT_DIR C [C ...]
"""
import json
import sys
from pathlib import Path


def guidellm_row(path: Path) -> dict:
    bench = json.loads(path.read_text())["benchmarks"][0]
    m = bench["metrics"]

    def ok(name: str) -> dict:
        return m[name]["successful"]

    totals = m["request_totals"]
    return {
        "ok": totals["successful"],
        "failed": totals["errored"] + totals["incomplete"],
        "req_s": ok("requests_per_second")["mean"],
        "req_s_wall": totals["successful"] / bench["duration"],
        "out_tok_s": ok("output_tokens_per_second")["mean"],
        "out_tok_p50": ok("output_token_count")["percentiles"]["p50"],
        "ttft_p50": ok("time_to_first_token_ms")["percentiles"]["p50"],
        "ttft_p99": ok("time_to_first_token_ms")["percentiles"]["p99"],
        # guidellm's ITL is per request (last - first token) / (n - 1): our TPOT.
        "tpot_p50": ok("inter_token_latency_ms")["percentiles"]["p50"],
        "itl_p50": None,
        "e2e_p50": 1000 * ok("request_latency")["percentiles"]["p50"],
    }


def factory_bench_row(path: Path) -> dict:
    point = json.loads(path.read_text())["points"][0]
    s = point  # PointStats is flattened into the point
    return {
        "ok": s["completed"],
        "failed": s["failed"],
        "req_s": s["throughput"]["requests_per_s"],
        "req_s_wall": s["throughput"]["requests_per_s"],
        "out_tok_s": s["throughput"]["output_tokens_per_s"],
        "out_tok_p50": s["output_tokens"]["p50"],
        "ttft_p50": s["ttft_ms"]["p50"],
        "ttft_p99": s["ttft_ms"]["p99"],
        "tpot_p50": s["tpot_ms"]["p50"],
        "itl_p50": s["itl_ms"]["p50"],
        "e2e_p50": s["e2e_ms"]["p50"],
    }


def cache_hit_share(path: Path) -> float | None:
    """Share of prompt tokens the server's prefix cache served during one run."""
    try:
        (q0, h0), (q1, h1) = (map(float, line.split()) for line in path.read_text().splitlines())
    except (OSError, ValueError):
        return None
    return (h1 - h0) / (q1 - q0) if q1 > q0 else None


COLUMNS = [
    ("ok/failed", lambda r: f"{r['ok']}/{r['failed']}"),
    ("req/s", lambda r: f"{r['req_s']:.2f}"),
    ("req/s (n/wall)", lambda r: f"{r['req_s_wall']:.2f}"),
    ("out tok/s", lambda r: f"{r['out_tok_s']:.1f}"),
    ("out tok p50", lambda r: f"{r['out_tok_p50']:.0f}"),
    ("TTFT p50 ms", lambda r: f"{r['ttft_p50']:.0f}"),
    ("TTFT p99 ms", lambda r: f"{r['ttft_p99']:.0f}"),
    ("TPOT p50 ms", lambda r: f"{r['tpot_p50']:.1f}"),
    ("ITL gap p50 ms", lambda r: "-" if r["itl_p50"] is None else f"{r['itl_p50']:.1f}"),
    ("E2E p50 ms", lambda r: f"{r['e2e_p50']:.0f}"),
    ("prefix-cache hits", lambda r: "-" if r["cached"] is None else f"{100 * r['cached']:.0f}%"),
]


def main() -> None:
    out = Path(sys.argv[1])
    print("| c | tool | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for c in sys.argv[2:]:
        rows = [
            ("guidellm", guidellm_row(out / f"guidellm-c{c}.json")),
            ("factory-bench", factory_bench_row(out / f"factory-bench-c{c}" / "bench.json")),
        ]
        for tool, r in rows:
            r["cached"] = cache_hit_share(out / f"{tool}-c{c}.cache")
            print(f"| {c} | {tool} | " + " | ".join(f(r) for _, f in COLUMNS) + " |")


if __name__ == "__main__":
    main()
