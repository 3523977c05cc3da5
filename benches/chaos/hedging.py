"""Hedging benchmark: how much of a deployment's slow tail a hedge removes, and what it costs in extra upstream
requests.

    python -m benches.chaos.hedging [--requests 1000] [--concurrency 8] [--after-ms 100] [--tail-share 0.03]

Three model groups with the same two deployments (upstream models matched by the same simulator profile globs,
so each group's traffic is counted apart), ``priority`` strategy, the primary first:

- primary ``tail-*``: usually fast (30 ms + Exp(mean 20 ms)), but a ``--tail-share`` of requests take
  ``--tail-ms`` (600 ms + the same jitter). The slow share is drawn per request by the load client, which adds a
  simulator directive scoped to the primary's models (``[[sim@tail-*:latency_ms=600]]``): the simulator's jitter
  distributions have one mode, and a real slow tail is a small share of very slow calls (queueing, a cold replica)
  on top of a fast body. The seeded draw gives every group the same slow requests.
- secondary ``steady-*``: 45 ms ± 10 ms, no tail (a bit slower in the median: the price of being steady).

Groups: ``no-hedge``; ``hedge-fixed`` (``hedge: {after_ms: --after-ms}``, about the primary's fast-path p95);
``hedge-p95`` (``hedge: {}``: after the primary's observed p95 once it has 20 samples). Each group gets a warm-up
of 100 requests (so the p95 group has samples), then ``--requests`` at ``--concurrency`` from the load client
process (``benches/chaos/client.py``), non-stream (the router hedges non-stream calls only). Reported per group:
p50/p90/p99/max, the share of requests hedged (``x-gateway-attempts`` = 2) and won by the backup, and the
upstream requests the simulator counted (the cost of hedging). Written to ``bench-results/hedging.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from benches.chaos.common import pct, run_client, stack
from benches.results import save_result

GROUPS = {"no-hedge": ("nh", None), "hedge-fixed": ("fx", "fixed"), "hedge-p95": ("p95", "p95")}


def config(after_ms: float) -> tuple[dict[str, Any], dict[str, Any]]:
    profile = {
        "seed": 5,
        "auth": False,
        "models": {
            "tail-*": {"latency_ms": 30, "latency_jitter_ms": 20, "jitter_dist": "exponential"},
            "steady-*": {"latency_ms": 45, "latency_jitter_ms": 10, "jitter_dist": "uniform"},
        },
    }
    models: dict[str, Any] = {}
    for group, (tag, hedge) in GROUPS.items():
        g: dict[str, Any] = {
            "strategy": "priority",
            "deployments": [
                {"id": f"tail-{tag}", "model": f"tail-{tag}", "priority": 0},
                {"id": f"steady-{tag}", "model": f"steady-{tag}", "priority": 1},
            ],
        }
        if hedge == "fixed":
            g["hedge"] = {"after_ms": after_ms}
        elif hedge == "p95":
            g["hedge"] = {}
        models[group] = g
    return profile, models


def summarize(group: str, recs: list[dict[str, Any]], upstream: dict[str, int]) -> dict[str, Any]:
    tag = GROUPS[group][0]
    ok = [r for r in recs if r["ok"]]
    lat = [r["lat_ms"] for r in ok]
    hedged = [r for r in recs if r.get("attempts", 0) > 1]
    backup_won = [r for r in ok if r["model"] == f"steady-{tag}"]
    delays = sorted(
        float(r["route"].split("hedge after ")[1].rstrip("ms"))
        for r in backup_won
        if r.get("route") and "hedge after " in r["route"]
    )
    n = len(recs)
    sent = sum(upstream.values())
    return {
        "group": group,
        "requests": n,
        "ok": len(ok),
        "p50_ms": pct(lat, 0.5),
        "p90_ms": pct(lat, 0.9),
        "p99_ms": pct(lat, 0.99),
        "max_ms": max(lat, default=float("nan")),
        "tail_requests": sum(1 for r in recs if r["tail"]),
        "hedged": len(hedged),
        "hedged_pct": 100 * len(hedged) / n if n else float("nan"),
        "backup_won": len(backup_won),
        "attempts_total": sum(r.get("attempts", 0) for r in recs),
        "upstream_by_model": upstream,
        "upstream_requests": sent,
        "extra_upstream_pct": 100 * (sent - n) / n if n else float("nan"),
        # the hedge delay the router used, read back from x-gateway-route on backup wins (first/last quarter)
        "hedge_delay_ms": {
            "min": delays[0] if delays else None,
            "median": pct(delays, 0.5) if delays else None,
            "max": delays[-1] if delays else None,
        },
        "hedge_delay_by_quarter_ms": _quarters(backup_won),
    }


def _quarters(backup_won: list[dict[str, Any]]) -> list[float | None]:
    """Median hedge delay in each quarter of the run (by request index): does the p95-based delay drift?"""
    if not backup_won:
        return []
    last = max(r["i"] for r in backup_won) + 1
    out: list[float | None] = []
    for q in range(4):
        ds = [
            float(r["route"].split("hedge after ")[1].rstrip("ms"))
            for r in backup_won
            if q * last / 4 <= r["i"] < (q + 1) * last / 4 and "hedge after " in (r.get("route") or "")
        ]
        out.append(pct(ds, 0.5) if ds else None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--after-ms", type=float, default=100.0, help="hedge-fixed: delay before the hedge")
    ap.add_argument("--tail-share", type=float, default=0.03, help="share of requests slow on the primary")
    ap.add_argument("--tail-ms", type=float, default=600.0, help="the primary's latency on those requests")
    ap.add_argument("--out", default="bench-results/hedging.json")
    a = ap.parse_args()
    profile, models = config(a.after_ms)
    directive = f"[[sim@tail-*:latency_ms={a.tail_ms:g}]]"
    rows = []
    with stack(profile, models, workers=2) as st:
        for group in GROUPS:
            common = ("--model", group, "--concurrency", str(a.concurrency), "--tail-directive", directive)
            tail = ("--tail-share", str(a.tail_share))
            run_client(st, *common, *tail, "--requests", "100", "--seed", "99")  # warm-up: p95 samples, pools
            time.sleep(
                a.tail_ms / 1000 + 0.5
            )  # the warm-up's cancelled hedges finish before the counters reset
            st.sim("POST", "/_sim/reset")
            recs = run_client(st, *common, *tail, "--requests", str(a.requests), "--seed", "1")
            time.sleep(a.tail_ms / 1000 + 0.5)  # cancelled hedges finish (and are counted) upstream
            upstream = {m: sum(by.values()) for m, by in st.sim_counts().items()}
            rows.append(summarize(group, recs, upstream))
            print(f"{group}: done", flush=True)
    result = {
        "config": {
            "requests": a.requests,
            "concurrency": a.concurrency,
            "after_ms": a.after_ms,
            "tail_share": a.tail_share,
            "tail_ms": a.tail_ms,
            "simulator_profile": profile,
            "model_groups": models,
            "gateway_workers": 2,
            "cpus": os.cpu_count(),
        },
        "rows": rows,
    }
    return save_result(result, a.out, report)


def report(r: dict[str, Any]) -> None:
    c = r["config"]
    print(
        f"\nHedging: {c['requests']} non-stream requests per group at concurrency {c['concurrency']}; primary slow "
        f"({c['tail_ms']:.0f} ms) on {100 * c['tail_share']:.0f}% of requests; {c['cpus']} CPUs shared"
    )
    print(
        f"{'group':12} {'hedge':>14} {'ok':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'hedged':>7} {'backup won':>10} {'upstream':>8} {'extra':>7} {'hedge delay ms (min/med/max)':>29}"
    )
    for row in r["rows"]:
        hedge = {
            "no-hedge": "none",
            "hedge-fixed": f"after {c['after_ms']:.0f} ms",
            "hedge-p95": "primary p95",
        }[row["group"]]
        d = row["hedge_delay_ms"]
        delay = "-" if d["min"] is None else f"{d['min']:.0f}/{d['median']:.0f}/{d['max']:.0f}"
        print(
            f"{row['group']:12} {hedge:>14} {row['ok']:>5} {row['p50_ms']:>7.1f} {row['p90_ms']:>7.1f} "
            f"{row['p99_ms']:>7.1f} {row['max_ms']:>7.1f} {row['hedged_pct']:>6.1f}% {row['backup_won']:>10} "
            f"{row['upstream_requests']:>8} {row['extra_upstream_pct']:>6.1f}% {delay:>29}"
        )


if __name__ == "__main__":
    sys.exit(main())
