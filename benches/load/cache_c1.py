"""Exact-cache hits end to end at concurrency 1, without a load generator binary: one keep-alive HTTP client
(Python's http.client) sends the same request N times to each target in turn, in one run, interleaved in rounds.

    python -m benches.load.cache_c1 [--n 2000] [--workers 1]

Targets: the simulator directly (zero latency), the gateway without a cache, the gateway with the exact cache as
a miss (``x-gateway-cache: refresh``: key computed, upstream asked, answer stored) and as a hit (upstream never
asked). The client's own cost is in every number alike; compare the columns (added = target - direct). Also prints
RSS per worker of a gateway without the cache, with the exact cache, and with the semantic cache (model loaded).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benches.load.run import BODY, KEY, PY, free_port, rss_per_worker_mb, wait


def timings(port: int, path: str, headers: dict[str, str], body: bytes, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", path, body, headers)
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, r.status
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-cache-bench-"))
    sim_port = free_port()
    procs: list[subprocess.Popen[Any]] = []
    try:
        sim = subprocess.Popen(
            [PY, "-m", "gateway", "simulate", "--port", str(sim_port)], stdout=subprocess.DEVNULL
        )
        procs.append(sim)
        wait(f"http://127.0.0.1:{sim_port}/healthz", sim)
        ports: dict[str, int] = {}
        gws: dict[str, subprocess.Popen[Any]] = {}
        for name, stages in (
            ("no cache", {}),
            ("exact", {"cache": {"enabled": True}}),
            ("semantic", {"cache": {"enabled": True, "semantic": {"enabled": True}}}),
        ):
            port = ports[name] = free_port()
            cfg = {
                "server": {"host": "127.0.0.1", "port": port, "workers": args.workers},
                "store": {"sqlite_path": str(work / f"{name}.db")},
                "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
                "models": {
                    "bench": {
                        "deployments": [
                            {
                                "id": "sim",
                                "model": "bench",
                                "api_base": f"http://127.0.0.1:{sim_port}/v1",
                                "api_key": "sim",
                                "price": {"input": 0.15, "output": 0.6},
                            }
                        ]
                    }
                },
                "stages": stages,
            }
            path = work / f"{name.replace(' ', '-')}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            p = subprocess.Popen(
                [PY, "-m", "gateway", "serve", "--config", str(path)], cwd=work, stdout=subprocess.DEVNULL
            )
            procs.append(p)
            gws[name] = p
            wait(f"http://127.0.0.1:{port}/readyz", p, timeout_s=180)
        body = json.dumps(BODY).encode()
        gw_h = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        targets = {
            "direct": (sim_port, {"content-type": "application/json", "authorization": "Bearer sim"}),
            "gateway, no cache": (ports["no cache"], gw_h),
            "exact miss (refresh)": (ports["exact"], {**gw_h, "x-gateway-cache": "refresh"}),
            "exact hit": (ports["exact"], gw_h),
        }
        samples: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(2):  # warm-up round, discarded
            for port, h in targets.values():
                timings(port, "/v1/chat/completions", h, body, 100)
        rounds = 10
        for _ in range(rounds):
            for label, (port, h) in targets.items():
                samples[label] += timings(port, "/v1/chat/completions", h, body, args.n // rounds)
        d50 = statistics.median(samples["direct"])
        d99 = statistics.quantiles(samples["direct"], n=100)[98]
        print(
            f"\nc=1, {args.n} requests per target, {args.workers} worker(s), interleaved in {rounds} rounds"
        )
        print(f"{'target':24} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
        result: dict[str, Any] = {"n": args.n, "workers": args.workers, "rows": {}}
        for label, xs in samples.items():
            p50, p99 = statistics.median(xs), statistics.quantiles(xs, n=100)[98]
            result["rows"][label] = {
                "p50_ms": p50,
                "p99_ms": p99,
                "added_p50_ms": p50 - d50,
                "added_p99_ms": p99 - d99,
            }
            print(f"{label:24} {p50:8.3f} {p99:8.3f} {p50 - d50:+10.3f} {p99 - d99:+10.3f}")
        result["rss_mb_per_worker"] = {name: rss_per_worker_mb(p.pid) for name, p in gws.items()}
        print(f"RSS per worker (MB): {result['rss_mb_per_worker']}")
        out = Path("bench-results/cache_c1.json")
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
