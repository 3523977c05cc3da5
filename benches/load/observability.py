"""What observability costs the request path: ``python -m benches.load.run --observability [--rounds 3]``.

Three gateways (2 workers each) in front of the run's zero-latency simulator, identical but for
``observability``:

- ``off``: metrics, alerts and tracing off;
- ``metrics``: the defaults: Prometheus metrics and the alert detector on, tracing off;
- ``tracing``: metrics and alerts on, and tracing at 100 % sampling, exported over OTLP/HTTP (by each worker's
  exporter process) to a sink in this process.

Each round drives every gateway in turn with ``oha`` (closed loop, c=1 for p50/p99 and c=64 for the max
req/s), and the rounds alternate the order so machine noise hits all of them alike; the direct path (the
simulator alone) is measured in the same rounds as the floor. Medians over the rounds are reported with their
range, and the added latency and throughput change against ``off``. ``/metrics`` is scraped once a second
during the run, as Prometheus would.
"""

from __future__ import annotations

import contextlib
import http.server
import statistics
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benches.load.run import percentile_diff_ci

VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"metrics": {"enabled": False}, "alerts": {"enabled": False}},
    "metrics": {},
    "tracing": {"tracing": {"enabled": True, "sample_ratio": 1.0}},
}


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and counts export requests."""

    received = 0
    bytes = 0

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        Sink.received += 1
        Sink.bytes += n
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def start_variants(
    cfg: dict[str, Any],
    work: Path,
    start: Callable[[dict[str, Any], Path], tuple[str, subprocess.Popen[Any]]],
    free_port: Callable[[], int],
) -> tuple[dict[str, str], list[subprocess.Popen[Any]], Callable[[], None]]:
    """The three gateways (``start`` writes a config and waits for it) and an OTLP sink; returns their URLs,
    processes and a function that stops the sink and the scraper."""
    sink_port = free_port()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    urls: dict[str, str] = {}
    procs = []
    for name, obs in VARIANTS.items():
        if "tracing" in obs:
            obs = {"tracing": {**obs["tracing"], "endpoint": f"http://127.0.0.1:{sink_port}/v1/traces"}}
        port = free_port()
        c = {
            **cfg,
            "server": {**cfg["server"], "port": port},
            "store": {"sqlite_path": str(work / name / "bench.db")},
            "observability": obs,
        }
        (work / name).mkdir(exist_ok=True)
        url, proc = start(c, work / name)
        urls[name] = url
        procs.append(proc)
    stop = threading.Event()

    def scrape() -> None:  # what a Prometheus server would do, once a second
        while not stop.wait(1.0):
            for name in ("metrics", "tracing"):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(urls[name] + "/metrics", timeout=5).read()

    threading.Thread(target=scrape, daemon=True).start()

    def close() -> None:
        stop.set()
        sink.shutdown()

    return urls, procs, close


def compare(
    load: Callable[[str, dict[str, str], int, int, list[float] | None], dict[str, Any]],
    direct: tuple[str, dict[str, str]],
    urls: dict[str, str],
    gw_h: dict[str, str],
    rounds: int,
    n1: int,
    n64: int,
) -> dict[str, Any]:
    """``rounds`` interleaved rounds of c=1 and c=64 over direct and the three variants."""
    targets = {"direct": direct, **{name: (url + "/v1/chat/completions", gw_h) for name, url in urls.items()}}
    for url, h in targets.values():  # warm up: pools, imports, first records
        load(url, h, 4, 500, None)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"c1": [], "c64": []} for n in targets}
    latencies: dict[str, list[float]] = {n: [] for n in targets}  # every c=1 request, all rounds
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            url, h = targets[name]
            runs[name]["c1"].append(load(url, h, 1, n1, latencies[name]))
            runs[name]["c64"].append(load(url, h, 64, n64, None))
    med = statistics.median
    rows: dict[str, Any] = {}
    for name, rr in runs.items():
        row: dict[str, Any] = {"rounds": rr}
        for key, case, field in (
            ("c1_p50_ms", "c1", "p50_ms"),
            ("c1_p99_ms", "c1", "p99_ms"),
            ("c64_rps", "c64", "rps"),
            ("c64_p99_ms", "c64", "p99_ms"),
        ):
            xs = [x[field] for x in rr[case]]
            row[key], row[f"{key}_range"] = med(xs), (min(xs), max(xs))
        row["requests"] = sum(x["n"] for x in rr["c1"] + rr["c64"])
        row["c1_requests_pooled"] = len(latencies[name])
        row["errors"] = sum(sum(x["errors"].values()) + x["n"] - x["ok"] for x in rr["c1"] + rr["c64"])
        rows[name] = row
    base = rows["off"]
    for name, row in rows.items():
        if name == "direct":
            continue
        row["added_c1_p50_ms"] = row["c1_p50_ms"] - base["c1_p50_ms"]
        row["added_c1_p99_ms"] = row["c1_p99_ms"] - base["c1_p99_ms"]
        row["throughput_change"] = row["c64_rps"] / base["c64_rps"] - 1
        # over every c=1 request of every round, with 95% bootstrap intervals
        for q in (50, 99):
            d, lo, hi = percentile_diff_ci(latencies["off"], latencies[name], q, rounds=1000)
            row[f"pooled_added_p{q}_ms"] = {"value": d, "ci95": [lo, hi]}
        # the same difference round by round (each round runs the variants back to back)
        row["added_c1_p50_ms_by_round"] = [
            a["p50_ms"] - b["p50_ms"] for a, b in zip(row["rounds"]["c1"], base["rounds"]["c1"], strict=True)
        ]
        row["throughput_change_by_round"] = [
            a["rps"] / b["rps"] - 1 for a, b in zip(row["rounds"]["c64"], base["rounds"]["c64"], strict=True)
        ]
    return {
        "kind": "observability",
        "n_c1": n1,
        "n_c64": n64,
        "rounds": rounds,
        "variants": rows,
        "otlp_exports_received": Sink.received,
        "otlp_bytes_received": Sink.bytes,
    }


def print_report(r: dict[str, Any]) -> None:
    print(
        f"\nObservability cost ({r['rounds']} interleaved rounds; per round and variant c=1: {r['n_c1']} requests, "
        f"c=64: {r['n_c64']} requests; medians over rounds [min-max]; {r['cpus']} CPUs shared by oha, simulator "
        "and three gateways)"
    )
    print(
        f"{'variant':8} {'c1 p50':>20} {'c1 p99':>20} {'added p50':>10} {'added p99':>10} "
        f"{'c64 req/s':>22} {'vs off':>8} {'errors':>7}"
    )

    def rng(v: dict[str, Any], k: str, fmt: str) -> str:
        lo, hi = v[f"{k}_range"]
        return f"{v[k]:{fmt}} [{lo:{fmt}}-{hi:{fmt}}]"

    for name, v in r["variants"].items():
        added = (
            f"{v['added_c1_p50_ms']:+10.3f} {v['added_c1_p99_ms']:+10.3f}"
            if "added_c1_p50_ms" in v
            else f"{'':10} {'':10}"
        )
        change = f"{v['throughput_change']:+8.1%}" if "throughput_change" in v else f"{'':8}"
        print(
            f"{name:8} {rng(v, 'c1_p50_ms', '.3f'):>20} {rng(v, 'c1_p99_ms', '.3f'):>20} {added} "
            f"{rng(v, 'c64_rps', '.0f'):>22} {change} {v['errors']:7d}"
        )
    for name in ("metrics", "tracing"):
        v = r["variants"][name]
        p50, p99 = v["pooled_added_p50_ms"], v["pooled_added_p99_ms"]
        print(
            f"{name} vs off, all {v['c1_requests_pooled']} c=1 requests pooled: added p50 {p50['value']:+.3f} ms "
            f"(95% CI {p50['ci95'][0]:+.3f} to {p50['ci95'][1]:+.3f}), p99 {p99['value']:+.3f} ms "
            f"(95% CI {p99['ci95'][0]:+.3f} to {p99['ci95'][1]:+.3f})"
        )
        print(
            f"{name} vs off, round by round: added c1 p50 "
            + ", ".join(f"{x:+.3f}" for x in v["added_c1_p50_ms_by_round"])
            + " ms; throughput "
            + ", ".join(f"{x:+.1%}" for x in v["throughput_change_by_round"])
        )
    print(f"OTLP export requests received: {r['otlp_exports_received']} ({r['otlp_bytes_received']} bytes)")
