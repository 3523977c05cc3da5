"""What observability costs the request path: the same requests through three gateways in one run.

    python -m benches.load.observability [--quick] [--rounds 3] [--out bench-results/observability.json]

Three gateways (2 workers each) in front of one zero-latency simulator, identical but for ``observability``:

- ``off``: metrics, alerts and tracing off;
- ``metrics``: the defaults: Prometheus metrics and the alert detector on, tracing off;
- ``tracing``: metrics and alerts on, and tracing at 100 % sampling, exported over OTLP/HTTP to a sink in this
  process.

Each round drives every gateway in turn with ``oha`` (closed loop, c=1 for p50/p99 and c=64 for the max
req/s; ``--client wrk`` uses Debian's ``wrk`` for timed runs instead), and the rounds interleave the three so
machine noise hits all of them alike; medians over the rounds are reported with the added latency against
``off``. The metrics endpoint is scraped once a second during the
run, as Prometheus would.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from benches.load.run import BODY, KEY, PY, ROOT, ensure_oha, free_port, oha, wait

VARIANTS = {
    "off": {"metrics": {"enabled": False}, "alerts": {"enabled": False}},
    "metrics": {},
    "tracing": {"tracing": {"enabled": True, "sample_ratio": 1.0}},
}


class Sink(http.server.BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        Sink.received += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout
  io.write(string.format('WRK {"n": %%d, "errors": %%d, "secs": %%f, "p50": %%f, "p99": %%f}\\n',
    summary.requests, errors, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
    """A timed closed-loop run with wrk (latencies in microseconds from its Lua summary)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (body.decode(), KEY))
        script = f.name
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1" if conc == 1 else "2",
            "-c",
            str(conc),
            "-d",
            f"{round(seconds)}s",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    d = json.loads(line[4:])
    return {
        "n": d["n"],
        "ok": d["n"] - d["errors"],
        "errors": {"wrk": d["errors"]} if d["errors"] else {},
        "rps": d["n"] / d["secs"],
        "p50_ms": d["p50"] / 1000,
        "p99_ms": d["p99"] / 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client", choices=["oha", "wrk"], default="oha")
    ap.add_argument("--out", default="bench-results/observability.json")
    args = ap.parse_args()
    exe = ensure_oha() if args.client == "oha" else "wrk"
    n1, n64 = (600, 4000) if args.quick else (3000, 20000)
    sink_port = free_port()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="gw-obs-bench-"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    procs: list[subprocess.Popen[Any]] = []
    stop = threading.Event()
    try:
        sim = subprocess.Popen(
            [PY, "-m", "gateway", "simulate", "--port", str(sim_port), "--workers", "1"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(sim)
        wait(sim_url + "/healthz", sim)
        urls: dict[str, str] = {}
        for name, obs in VARIANTS.items():
            port = free_port()
            if "tracing" in obs:
                obs = {"tracing": {**obs["tracing"], "endpoint": f"http://127.0.0.1:{sink_port}/v1/traces"}}
            cfg = {
                "server": {"host": "127.0.0.1", "port": port, "workers": 2},
                "store": {"sqlite_path": str(work / name / "bench.db")},
                "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
                "models": {
                    "bench": {
                        "deployments": [
                            {
                                "id": "sim",
                                "model": "bench",
                                "api_base": sim_url + "/v1",
                                "api_key": "sim",
                                "price": {"input": 0.15, "output": 0.6},
                            }
                        ]
                    }
                },
                "observability": obs,
            }
            (work / name).mkdir()
            (work / name / "bench.yaml").write_text(yaml.safe_dump(cfg))
            gw = subprocess.Popen(
                [PY, "-m", "gateway", "serve", "--config", str(work / name / "bench.yaml")],
                cwd=work / name,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(gw)
            wait(f"http://127.0.0.1:{port}/readyz", gw)
            urls[name] = f"http://127.0.0.1:{port}"

        def scrape() -> None:  # what a Prometheus server would do, once a second
            while not stop.wait(1.0):
                for name in ("metrics", "tracing"):
                    with contextlib.suppress(OSError):
                        urllib.request.urlopen(urls[name] + "/metrics", timeout=5).read()

        threading.Thread(target=scrape, daemon=True).start()
        body = json.dumps(BODY).encode()
        headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}

        def load(url: str, conc: int, n: int) -> dict[str, Any]:
            if args.client == "wrk":  # a timed run about as long as n requests take
                return wrk(url, body, conc, max(3.0, n / (600 if conc == 1 else 3000)))
            return oha(exe, url, body, headers, conc=conc, n=n)

        for url in urls.values():  # warm up: pools, imports, first records
            load(url + "/v1/chat/completions", 4, 500)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"c1": [], "c64": []} for n in urls}
        for r in range(args.rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                url = urls[name] + "/v1/chat/completions"
                runs[name]["c1"].append(load(url, 1, n1))
                runs[name]["c64"].append(load(url, 64, n64))
        result = summarise(runs, n1, n64, args.rounds)
        result["client"] = args.client
        result["otlp_batches_received"] = Sink.received
        out = ROOT / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        report(result)
        print(f"\nwritten to {out}")
        return 0
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.shutdown()


def summarise(runs: dict[str, Any], n1: int, n64: int, rounds: int) -> dict[str, Any]:
    med = statistics.median
    rows = {}
    for name, r in runs.items():
        rows[name] = {
            "c1_p50_ms": med(x["p50_ms"] for x in r["c1"]),
            "c1_p99_ms": med(x["p99_ms"] for x in r["c1"]),
            "c64_rps": med(x["rps"] for x in r["c64"]),
            "c64_p99_ms": med(x["p99_ms"] for x in r["c64"]),
            "errors": sum(sum(x["errors"].values()) + x["n"] - x["ok"] for x in r["c1"] + r["c64"]),
            "rounds": r,
        }
    base = rows["off"]
    for row in rows.values():
        row["added_c1_p50_ms"] = row["c1_p50_ms"] - base["c1_p50_ms"]
        row["added_c1_p99_ms"] = row["c1_p99_ms"] - base["c1_p99_ms"]
        row["throughput_change"] = row["c64_rps"] / base["c64_rps"] - 1
    return {"n_c1": n1, "n_c64": n64, "rounds": rounds, "cpus": os.cpu_count(), "variants": rows}


def report(r: dict[str, Any]) -> None:
    print(
        f"\nObservability cost ({r['rounds']} interleaved rounds; c=1: {r['n_c1']} requests, c=64: {r['n_c64']} "
        f"requests per round; medians; {r['cpus']} CPUs shared by oha, simulator and three gateways)"
    )
    print(
        f"{'variant':10} {'c1 p50':>8} {'c1 p99':>8} {'added p50':>10} {'added p99':>10} {'c64 rps':>9} {'vs off':>8} {'errors':>7}"
    )
    for name, v in r["variants"].items():
        print(
            f"{name:10} {v['c1_p50_ms']:8.3f} {v['c1_p99_ms']:8.3f} {v['added_c1_p50_ms']:+10.3f} "
            f"{v['added_c1_p99_ms']:+10.3f} {v['c64_rps']:9.0f} {v['throughput_change']:+8.1%} {v['errors']:7d}"
        )
    print(f"OTLP batches received: {r['otlp_batches_received']}")


if __name__ == "__main__":
    raise SystemExit(main())
