"""What observability costs the request path: ``python -m benches.load.run --observability [--rounds 3]``.

Three gateways (2 workers each) in front of the run's zero-latency simulator, identical but for
``observability``:

- ``off``: metrics, alerts and tracing off;
- ``metrics``: the defaults: Prometheus metrics and the alert detector on, tracing off;
- ``tracing``: metrics and alerts on, and tracing at 100 % sampling, exported over OTLP/HTTP (by each worker's
  exporter process) to a sink in this process.

Each round drives every gateway in turn with ``oha`` (closed loop, c=1 for p50/p99 and c=64 for the max
req/s), and the rounds alternate the order so machine noise hits all of them alike; the direct path (the
simulator alone) is measured in the same rounds as the floor. Each run starts once every gateway (workers and
exporter processes) is idle, so the backlog one variant's c=64 run leaves behind (records, spans) is not
measured as the next variant's latency. Medians over the rounds are reported with their range, and the added
latency and throughput change against ``off``. Because latency on a shared box is noisy, the CPU time each
variant's processes used per request is reported too (workers, and the exporter processes apart): that is
what observability takes from the cores the requests need. ``/metrics`` is scraped once a second during the
run, as Prometheus would.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import statistics
import subprocess
import threading
import time
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


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(root: int) -> dict[str, float]:
    """CPU seconds used so far by a gateway's live processes (supervisor and workers; exporters apart)."""
    parents: dict[int, int] = {}
    used: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        kind = "exporter" if b"gateway.observability.exporter" in cmd else "gateway"
        used[pid] = (kind, (int(fields[11]) + int(fields[12])) * TICK_S)
    out = {"gateway": 0.0, "exporter": 0.0}
    for pid, (kind, s) in used.items():
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            out[kind] += s
    return out


def wait_idle(roots: list[int], timeout_s: float = 10.0) -> float:
    """Wait until the gateways (and their exporters) use under 10% of a CPU; returns how long that took."""
    t0 = time.monotonic()
    before = sum(sum(cpu_s(r).values()) for r in roots)
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.25)
        now = sum(sum(cpu_s(r).values()) for r in roots)
        if now - before <= 0.25 * 0.1:
            break
        before = now
    return time.monotonic() - t0


def compare(
    load: Callable[[str, dict[str, str], int, int, list[float] | None], dict[str, Any]],
    direct: tuple[str, dict[str, str]],
    urls: dict[str, str],
    gw_h: dict[str, str],
    rounds: int,
    n1: int,
    n64: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    """``rounds`` interleaved rounds of c=1 and c=64 over direct and the three variants (``pids``: each
    variant's gateway process, for the CPU it uses)."""
    targets = {"direct": direct, **{name: (url + "/v1/chat/completions", gw_h) for name, url in urls.items()}}
    for url, h in targets.values():  # warm up: pools, imports, first records
        load(url, h, 4, 500, None)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"c1": [], "c64": []} for n in targets}
    latencies: dict[str, list[float]] = {n: [] for n in targets}  # every c=1 request, all rounds
    roots = list(pids.values())
    waited = wait_idle(roots, 30.0)
    cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            url, h = targets[name]
            waited += wait_idle(roots)
            runs[name]["c1"].append(load(url, h, 1, n1, latencies[name]))
            waited += wait_idle(roots)
            runs[name]["c64"].append(load(url, h, 64, n64, None))
    wait_idle(roots, 60.0)  # what is still queued (records, spans) is part of the cost
    cpu1 = {name: cpu_s(pid) for name, pid in pids.items()}
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
        if name in pids:  # CPU per request over the rounds (no process restarted in between)
            for kind in ("gateway", "exporter"):
                row[f"cpu_us_per_request_{kind}"] = (
                    (cpu1[name][kind] - cpu0[name][kind]) / row["requests"] * 1e6
                )
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
        "waited_for_idle_s": waited,
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
    for name in ("off", "metrics", "tracing"):
        v = r["variants"][name]
        print(
            f"{name}: CPU per request {v['cpu_us_per_request_gateway']:.0f} us in the gateway's processes, "
            f"{v['cpu_us_per_request_exporter']:.0f} us in its trace exporters ({v['requests']} requests)"
        )
    print(f"OTLP export requests received: {r['otlp_exports_received']} ({r['otlp_bytes_received']} bytes)")
