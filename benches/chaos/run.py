"""Chaos benchmark: does the router keep every request answered while deployments fail, rate-limit and slow down?

    python -m benches.chaos.run [--duration 60] [--rate 100] [--outage 503|timeout] [--quick]
    make bench-chaos

What it does (about 2.5 minutes with the defaults; ``--quick``: 20 s runs, under a minute):

1. Starts the simulator (1 worker, seeded profile below) and a gateway (2 workers) with one model group ``chat``:
   ``least_latency`` over three deployments on different upstream models (chaos-a/b/c: ~100/110/120 ms
   non-stream, ~50/55/60 ms to the first token, ±40/±20 ms uniform jitter), falling back to a group
   ``chat-backup`` (chaos-d, ~250 ms). Breakers: 5 consecutive failures open a circuit for 5 s.
2. Warms up for a few seconds (EWMAs, connection pools), then runs the same open-loop load twice, with the same
   seed (so the same mix of requests): a BASELINE without faults, then the CHAOS run. The load is a separate
   process (``benches/chaos/client.py``): ``--rate`` req/s for ``--duration`` s, 30% streams, three callers
   (gateway keys), latency measured from each request's due time.
3. In the chaos run the simulator's control API (``POST /_sim/models/{model}``) injects, one after another:
   an outage of chaos-a (every request 503, or a hang with ``--outage timeout``), a 429 storm on chaos-b
   (every request 429, ``Retry-After: 2``), a latency spike on chaos-c (latency and TTFT x10); each lasts a
   quarter of the run and is healed (``DELETE``) when the next starts; the last 15% runs healed. The baseline
   keeps the same phase boundaries so each phase has a fault-free twin.
4. Reports, per run and per phase: success rate (target: 100%, since some deployment can always serve),
   p50/p99 latency, attempts per request (``x-gateway-attempts``: mean and max), the simulator's upstream
   request count vs the client's, and the traffic split by deployment (as the client saw it, and as the
   simulator counted it, with its non-200 answers). Writes ``bench-results/chaos.json`` and prints tables.

To repeat: same command; the simulator's faults and jitter are seeded, the request mix is seeded, so runs differ
only by timing (the 2-core machine is shared by load client, simulator and gateway).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from benches.chaos.common import Stack, diff_counts, pct, read_records, stack
from benches.results import save_result

DEPLOYMENTS = ["chaos-a", "chaos-b", "chaos-c", "chaos-d"]
PROFILE: dict[str, Any] = {
    "seed": 7,
    "auth": False,
    "default": {"output_tokens": 24, "tokens_per_s": 400, "jitter_dist": "uniform"},
    "models": {
        "chaos-a": {"latency_ms": 100, "latency_jitter_ms": 40, "ttft_ms": 50, "ttft_jitter_ms": 20},
        "chaos-b": {"latency_ms": 110, "latency_jitter_ms": 40, "ttft_ms": 55, "ttft_jitter_ms": 20},
        "chaos-c": {"latency_ms": 120, "latency_jitter_ms": 40, "ttft_ms": 60, "ttft_jitter_ms": 20},
        "chaos-d": {"latency_ms": 250, "latency_jitter_ms": 60, "ttft_ms": 120, "ttft_jitter_ms": 30},
    },
}


def dep(model: str) -> dict[str, Any]:
    # a hung upstream is given up on after 2 s (the outage with --outage timeout)
    return {"id": model, "model": model, "timeout_s": 2.0}


MODELS: dict[str, Any] = {
    "chat": {
        "strategy": "least_latency",
        "fallbacks": ["chat-backup"],
        "max_attempts": 3,
        "timeout_s": 20.0,
        "ttft_timeout_s": 2.0,
        "failure_threshold": 5,
        "open_s": 5.0,
        "deployments": [dep("chaos-a"), dep("chaos-b"), dep("chaos-c")],
    },
    "chat-backup": {"deployments": [dep("chaos-d")]},
}


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of the run's duration
    target: str | None = None  # the deployment (upstream model) faulted in the chaos run
    fault: str = ""  # what is done to it, for the report

    def describe(self, outage: str) -> str:
        return (
            "hang until the gateway's 2 s timeout"
            if self.name == "outage" and outage == "timeout"
            else self.fault
        )

    def patch(self, outage: str) -> dict[str, Any]:
        base = PROFILE["models"].get(self.target or "", {})
        return {
            "outage": {"rate_503": 1.0} if outage == "503" else {"rate_timeout": 1.0, "timeout_s": 3.0},
            "429 storm": {"rate_429": 1.0, "retry_after_s": 2.0},
            "latency x10": {
                "latency_ms": base.get("latency_ms", 0) * 10,
                "ttft_ms": base.get("ttft_ms", 0) * 10,
            },
        }.get(self.name, {})


PHASES = [
    Phase("steady", 0.10),
    Phase("outage", 0.25, "chaos-a", "503 on every request"),
    Phase("429 storm", 0.25, "chaos-b", "429 on every request, Retry-After 2 s"),
    Phase("latency x10", 0.25, "chaos-c", "latency and TTFT x10"),
    Phase("healed", 0.15),
]


def boundaries(duration: float) -> list[float]:
    out, t = [], 0.0
    for ph in PHASES:
        out.append(t)
        t += ph.share * duration
    return out


def run_once(st: Stack, a: argparse.Namespace, faults: bool) -> dict[str, Any]:
    """One open-loop run of ``a.duration`` s; with ``faults`` the phases' faults are injected on schedule.
    Returns the client's records and the simulator's per-phase counts."""
    st.sim("POST", "/_sim/reset")  # counters to zero, patches dropped, RNGs reseeded: both runs alike
    out = st.work / f"{'chaos' if faults else 'baseline'}.jsonl"
    start_at = time.time() + 2.0  # the client process needs a moment to import
    proc = st.client(
        out,
        *("--rate", str(a.rate), "--duration", str(a.duration), "--start-at", str(start_at)),
        *("--stream-share", "0.3", "--seed", "11", "--model", "chat"),
    )
    snaps: list[dict[str, dict[str, int]]] = []
    faulted: str | None = None
    for ph, t in zip(PHASES, boundaries(a.duration), strict=True):
        time.sleep(max(0.0, start_at + t - time.time()))
        snaps.append(st.sim_counts())
        if faults and faulted:
            st.heal(faulted)
            faulted = None
        if faults and ph.target:
            st.patch(ph.target, ph.patch(a.outage))
            faulted = ph.target
    if proc.wait(a.duration + 120) != 0:
        raise SystemExit(f"load client failed ({proc.returncode})")
    if faulted:
        st.heal(faulted)
    snaps.append(st.sim_counts())
    return {"records": read_records(out), "sim": [diff_counts(b, a_) for a_, b in itertools.pairwise(snaps)]}


def summarize(records: list[dict[str, Any]], sim: dict[str, dict[str, int]]) -> dict[str, Any]:
    n = len(records)
    ok = [r for r in records if r["ok"]]
    lat = [r["lat_ms"] for r in ok]
    ttfb = [r["ttfb_ms"] for r in ok if r["stream"]]
    attempts = [r.get("attempts", 0) for r in records]
    served: dict[str, int] = {}
    for r in ok:
        served[r["model"]] = served.get(r["model"], 0) + 1
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            errors[str(r.get("code"))] = errors.get(str(r.get("code")), 0) + 1
    upstream = sum(sum(by.values()) for by in sim.values())
    return {
        "requests": n,
        "ok": len(ok),
        "success_pct": 100 * len(ok) / n if n else float("nan"),
        "errors": errors,
        "p50_ms": pct(lat, 0.5),
        "p90_ms": pct(lat, 0.9),
        "p99_ms": pct(lat, 0.99),
        "max_ms": max(lat, default=float("nan")),
        "stream_ttfb_p50_ms": pct(ttfb, 0.5),
        "stream_ttfb_p99_ms": pct(ttfb, 0.99),
        "attempts_mean": sum(attempts) / n if n else float("nan"),
        "attempts_max": max(attempts, default=0),
        "attempts_hist": {str(k): attempts.count(k) for k in sorted(set(attempts))},
        "served_by": {d: served.get(d, 0) for d in DEPLOYMENTS},
        "upstream_requests": upstream,
        "upstream_per_request": upstream / n if n else float("nan"),
        "upstream_by_model": sim,
    }


def analyse(run: dict[str, Any], duration: float) -> dict[str, Any]:
    recs = run["records"]
    edges = [*boundaries(duration), float("inf")]
    phases = []
    for k, ph in enumerate(PHASES):
        in_phase = [r for r in recs if edges[k] <= r["t"] < edges[k + 1]]
        row = summarize(in_phase, run["sim"][k])
        row.update(phase=ph.name, start_s=edges[k], end_s=min(edges[k + 1], duration))
        phases.append(row)
    total_sim: dict[str, dict[str, int]] = {}
    for per in run["sim"]:
        for m, by in per.items():
            for s, n in by.items():
                total_sim.setdefault(m, {})[s] = total_sim.get(m, {}).get(s, 0) + n
    return {"overall": summarize(recs, total_sim), "phases": phases}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per run (baseline and chaos)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    ap.add_argument("--outage", choices=("503", "timeout"), default="503")
    ap.add_argument("--quick", action="store_true", help="20 s runs (phases of 2-5 s): a smoke run")
    ap.add_argument("--out", default="bench-results/chaos.json")
    a = ap.parse_args()
    if a.quick:
        a.duration = 20.0
    with stack(PROFILE, MODELS, workers=2) as st:
        print(
            f"warming up; then baseline and chaos runs of {a.duration:.0f} s at {a.rate:.0f} req/s",
            flush=True,
        )
        st.sim("POST", "/_sim/reset")
        warm = st.work / "warm.jsonl"
        if st.client(warm, "--rate", str(a.rate), "--duration", "3", "--stream-share", "0.3").wait(60) != 0:
            raise SystemExit("warm-up failed")
        baseline = analyse(run_once(st, a, faults=False), a.duration)
        print("baseline done; chaos run ...", flush=True)
        chaos = analyse(run_once(st, a, faults=True), a.duration)
    result = {
        "config": {
            "duration_s": a.duration,
            "rate": a.rate,
            "outage": a.outage,
            "stream_share": 0.3,
            "gateway_workers": 2,
            "cpus": os.cpu_count(),
            "simulator_profile": PROFILE,
            "model_groups": MODELS,
            "phases": [
                {"phase": p.name, "start_s": t, "target": p.target, "fault": p.describe(a.outage)}
                for p, t in zip(PHASES, boundaries(a.duration), strict=True)
            ],
        },
        "baseline": baseline,
        "chaos": chaos,
    }
    return save_result(result, a.out, report)


def _split(s: dict[str, Any]) -> str:
    n = max(1, s["ok"])
    return " ".join(f"{100 * s['served_by'][d] / n:3.0f}" for d in DEPLOYMENTS)


def _upstream(s: dict[str, Any]) -> str:
    """Per deployment: upstream requests, with non-200 answers in brackets."""
    cells = []
    for d in DEPLOYMENTS:
        by = s["upstream_by_model"].get(d, {})
        bad = sum(n for st, n in by.items() if st != "200")
        cells.append(f"{sum(by.values())}" + (f"({bad})" if bad else ""))
    return " ".join(f"{c:>9}" for c in cells)


def report(r: dict[str, Any]) -> None:
    c = r["config"]
    print(
        f"\nChaos benchmark: {c['rate']:.0f} req/s open loop for {c['duration_s']:.0f} s per run, "
        f"{int(100 * c['stream_share'])}% streams, gateway {c['gateway_workers']} workers, {c['cpus']} CPUs shared"
    )
    hdr = (
        f"{'run':9} {'requests':>8} {'ok %':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'attempts mean/max':>17} {'upstream/client':>16}  errors"
    )
    print(hdr)
    for name in ("baseline", "chaos"):
        s = r[name]["overall"]
        print(
            f"{name:9} {s['requests']:>8} {s['success_pct']:>7.2f} {s['p50_ms']:>7.1f} {s['p90_ms']:>7.1f} "
            f"{s['p99_ms']:>7.1f} {s['max_ms']:>7.1f} {s['attempts_mean']:>11.3f}/{s['attempts_max']:<5} "
            f"{s['upstream_requests']:>7}/{s['requests']:<8} {s['errors'] or ''}"
        )
    print(
        "\nPer phase. served %: share of answered requests by deployment (a b c | backup d), from x-gateway-model;"
        "\nupstream: requests the simulator counted per deployment (non-200 in brackets)."
    )
    print(
        f"{'phase':12} {'window s':>9} {'fault':38} {'run':8} {'ok %':>7} {'p50':>6} {'p99':>7} "
        f"{'att mean/max':>12} {'served % a  b  c  d':>19}  {'upstream a / b / c / d':>39}"
    )
    for k, _ in enumerate(r["config"]["phases"]):
        for name in ("baseline", "chaos"):
            s = r[name]["phases"][k]
            ph = c["phases"][k]
            fault = f"{ph['target']}: {ph['fault']}" if ph["target"] and name == "chaos" else ""
            window = f"{s['start_s']:.0f}-{s['end_s']:.0f}"
            print(
                f"{s['phase'] if name == 'baseline' else '':12} {window if name == 'baseline' else '':>9} "
                f"{fault:38} {name:8} {s['success_pct']:>7.2f} {s['p50_ms']:>6.0f} {s['p99_ms']:>7.0f} "
                f"{s['attempts_mean']:>7.3f}/{s['attempts_max']:<4} {_split(s):>19}  {_upstream(s)}"
            )


if __name__ == "__main__":
    sys.exit(main())
