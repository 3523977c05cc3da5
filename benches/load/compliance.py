"""The compliance stage's cost on the request path: the same requests through two gateways in one run, one
with compliance off and one with an injection + output-filter + canary profile on every request.

    python -m benches.load.compliance [--quick] [--rounds 3]

Both gateways (1 worker each) sit in front of one zero-latency simulator; rounds alternate off/on so drift on
this shared machine hits both alike. Reported: p50/p99 at concurrency 1 (non-stream and stream) and max req/s at
concurrency 16; added = on - off, per round and as the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benches.load.run import BODY, KEY, PY, ROOT, ensure_oha, free_port, oha, wait

PROMPT = (
    "Summarise the following meeting notes in three bullet points. The team agreed to move the release to "
    "Thursday, to add two more integration tests for the billing service, and to ask design for a review of "
    "the onboarding screens before the end of the sprint. "
) * 4  # ~1 KB of prose, the size the issue's goal is stated for


def config(sim_url: str, port: int, db: Path, on: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "store": {"sqlite_path": str(db)},
        "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
        "models": {
            "bench": {
                "deployments": [
                    {"id": "sim", "model": "bench", "api_base": sim_url + "/v1", "api_key": "sim"}
                ]
            }
        },
    }
    if on:
        cfg["stages"] = {
            "compliance": {
                "enabled": True,
                "default": "std",
                "profiles": {
                    "std": {
                        "injection": {"action": "reject"},
                        "content": {
                            "categories": {"secrets": "redact", "canary": "block"},
                            "default": "flag",
                        },
                        "canary": True,
                    }
                },
            }
        }
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-results/compliance-load.json")
    args = ap.parse_args()
    n1 = 300 if args.quick else 1500
    exe = ensure_oha()
    work = Path(tempfile.mkdtemp(prefix="gw-bench-comp-"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        procs.append(
            subprocess.Popen(
                [PY, "-m", "gateway", "simulate", "--port", str(sim_port)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
        )
        wait(sim_url + "/healthz", procs[-1])
        urls = {}
        for name, on in (("off", False), ("on", True)):
            port = free_port()
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config(sim_url, port, work / f"{name}.db", on)))
            procs.append(
                subprocess.Popen(
                    [PY, "-m", "gateway", "serve", "--config", str(path)], cwd=work, stdout=subprocess.DEVNULL
                )
            )
            wait(f"http://127.0.0.1:{port}/readyz", procs[-1])
            urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        h = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        body = json.dumps({**BODY, "messages": [{"role": "user", "content": PROMPT}]}).encode()
        stream = json.dumps({**json.loads(body), "stream": True}).encode()
        for u in urls.values():
            oha(exe, u, body, h, conc=4, n=300)
        rounds = []
        for _ in range(args.rounds):
            row: dict[str, Any] = {}
            for name in ("off", "on"):
                row[name] = {
                    "c1": oha(exe, urls[name], body, h, conc=1, n=n1),
                    "stream_c1": oha(exe, urls[name], stream, h, conc=1, n=n1 // 2),
                    "c16": oha(exe, urls[name], body, h, conc=16, n=n1 * 4),
                }
            rounds.append(row)
        summary = {}
        for case in ("c1", "stream_c1", "c16"):
            for p in ("p50_ms", "p99_ms", "rps"):
                added = [r["on"][case][p] - r["off"][case][p] for r in rounds]
                summary[f"{case}.{p}"] = {
                    "off": statistics.median(r["off"][case][p] for r in rounds),
                    "on": statistics.median(r["on"][case][p] for r in rounds),
                    "added_median": statistics.median(added),
                    "added_per_round": added,
                }
        result = {"rounds": rounds, "summary": summary, "n_c1": n1, "prompt_bytes": len(PROMPT)}
        out = ROOT / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(
            f"compliance off vs on, {args.rounds} rounds, {n1} requests per c=1 run, prompt {len(PROMPT)} bytes"
        )
        for k, v in summary.items():
            print(
                f"  {k:<18} off {v['off']:9.3f}  on {v['on']:9.3f}  added (median) {v['added_median']:+.3f}  per round {[round(x, 3) for x in v['added_per_round']]}"
            )
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
