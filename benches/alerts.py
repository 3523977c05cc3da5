"""Tier-1 alerts against a running gateway: time to alert per incident, and false alarms on steady traffic.

    python -m benches.alerts scenarios [--runs 5]      # ~12 min: time to alert, n runs of each scenario
    python -m benches.alerts steady [--minutes 30]     # tier-1 alerts raised by steady traffic (the goal: 0)

The gateway (2 workers, the detector at its defaults: 5 s buckets, 60 s windows, 15 s spike windows, 2 minutes
of history before a caller's baseline is trusted, a 50 ms p99 overhead threshold) runs in front of the simulator
(zero latency). Every run has its own callers and deployments, all warmed up together, so the runs of a
scenario are independent incidents in one process:

- steady traffic per run: a service calling a priority group ``flaky<i>`` (deployments ``flaky<i>-a`` then
  ``flaky<i>-b``, the default circuit breaker), an agent ``planner<i>`` on a priced model, a caller ``pii<i>``
  that now and then sends an e-mail address; Poisson arrivals, jittered prompt and answer sizes;
- the scenarios, one after another for each run: the simulator starts answering 503 for ``flaky<i>-a``; the
  agent loops (20x its request rate, so its cost rate); a burst over the rate limit of a key; the PII caller
  starts sending an e-mail address and a phone number in every request.

Time to alert = from the moment the fault starts to the webhook's arrival (generic JSON webhook served here).
Reported per scenario: min / median / max over the runs, and every tier-1 alert that is not one of the incidents.
``steady`` runs the same callers without incidents for ``--minutes`` on the real clock and counts tier-1 alerts.
Writes ``bench-results/alerts-<mode>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.procs import Webhooks, free_port, stop_all, wait_http

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ADMIN = "gw-bench-alerts-admin-key-00000000000000"


def key(kind: str, i: int) -> str:
    return f"gw-bench-alerts-{kind}-{i}".ljust(40, "0")


def config(runs: int, sim: str, port: int, hook: str, work: Path) -> dict[str, Any]:
    v1 = sim + "/v1"
    keys, models, limits = [], {}, {}
    for i in range(runs):
        keys += [
            {"key": key("svc", i), "name": f"svc{i}", "tenant": f"t{i}"},
            {"key": key("pii", i), "name": f"pii{i}", "tenant": f"t{i}"},
            {"key": key("lim", i), "name": f"lim{i}", "tenant": f"lim{i}"},
        ]
        limits[f"lim{i}"] = {"rpm": 20}
        models[f"flaky{i}"] = {
            "strategy": "priority",
            "deployments": [
                {"id": f"flaky{i}-a", "model": f"flaky{i}-a", "api_base": v1, "api_key": "k", "priority": 0},
                {"id": f"flaky{i}-b", "model": f"flaky{i}-b", "api_base": v1, "api_key": "k", "priority": 1},
            ],
        }
    models["agent-model"] = {
        "deployments": [
            {
                "id": "agent-a",
                "model": "gpt-4o",
                "api_base": v1,
                "api_key": "k",
                "price": {"input": 5, "output": 15},
            }
        ]
    }
    models["mini"] = {
        "deployments": [
            {
                "id": "mini-a",
                "model": "gpt-4o-mini",
                "api_base": v1,
                "api_key": "k",
                "price": {"input": 0.15, "output": 0.6},
            }
        ]
    }
    return {
        "server": {"host": "127.0.0.1", "port": port, "workers": 2},
        "store": {"sqlite_path": str(work / "alerts.db")},
        "admin": {"key": ADMIN},
        "keys": keys,
        "models": models,
        "stages": {
            "pii": {"enabled": True, "default": "mask"},
            "limits": {"enabled": True, "keys": limits},
        },
        "observability": {"alerts": {"webhooks": [{"url": hook, "format": "json"}]}},
    }


class Caller(threading.Thread):
    """Poisson arrivals at ``rate`` req/s (``fast`` x that while ``boost`` is set), until ``stop``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        model: str,
        rate: float,
        stop: threading.Event,
        seed: int,
        agent: str | None = None,
        pii: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.rate, self.stop, self.agent, self.pii = url, model, rate, stop, agent, pii
        self.rng = random.Random(seed)
        self.headers = {"authorization": f"Bearer {api_key}"}
        if agent:
            self.headers["x-gateway-agent"] = agent
        self.boost = threading.Event()
        self.fast = 20.0
        self.sent = self.failed = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            nxt = time.monotonic()
            while not self.stop.is_set():
                rate = self.rate * (self.fast if self.boost.is_set() else 1.0)
                nxt += self.rng.expovariate(rate)
                pause = nxt - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    nxt = time.monotonic()  # behind (a slow answer): no catch-up burst
                words = " ".join(self.rng.choice(WORDS) for _ in range(int(self.rng.lognormvariate(3, 0.5))))
                if self.pii is not None and (self.pii.is_set() or self.rng.random() < 0.03):
                    words += f" mail jane.doe{self.rng.randrange(999)}@example.com"
                    if self.pii.is_set():
                        words += f" or call 415-555-{self.rng.randrange(1000, 9999)}"
                body = {
                    "model": self.model,
                    "max_tokens": max(5, min(200, int(self.rng.lognormvariate(3.3, 0.5)))),
                    "messages": [{"role": "user", "content": words}],
                }
                try:
                    r = client.post("/v1/chat/completions", json=body)
                    self.failed += r.status_code != 200
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1


WORDS = [
    "the",
    "a",
    "quarterly",
    "report",
    "draft",
    "summary",
    "ticket",
    "customer",
    "order",
    "refund",
    "invoice",
    "plan",
    "next",
    "check",
]


def start(runs: int, work: Path, hooks: Webhooks) -> tuple[str, str, list[subprocess.Popen[Any]], str]:
    sim_port, gw_port = free_port(), free_port()
    sim, gw = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    cfg = config(runs, sim, gw_port, hooks.url + "/hook", work)
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    procs = [
        subprocess.Popen(
            [
                PY,
                "-m",
                "gateway",
                "simulate",
                "--port",
                str(sim_port),
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    ]
    wait_http(sim + "/healthz", procs[0])
    log = (work / "gateway.log").open("wb")
    procs.append(
        subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(work / "gateway.yaml")],
            cwd=work,
            stdout=log,
            stderr=log,
        )
    )
    wait_http(gw + "/readyz", procs[1])
    return sim, gw, procs, str(work / "gateway.log")


def sim_patch(sim: str, model: str, patch: dict[str, Any] | None) -> None:
    data = json.dumps(patch).encode() if patch is not None else None
    req = urllib.request.Request(
        f"{sim}/_sim/models/{model}", data=data, method="POST" if patch else "DELETE"
    )
    if data:
        req.add_header("content-type", "application/json")
    urllib.request.urlopen(req, timeout=10).close()


def wait_hook(
    hooks: Webhooks, signal: str, match: Any, since: float, timeout_s: float = 240
) -> tuple[float, dict[str, Any]]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for _, h, t in list(hooks.received):
            if t >= since and h["signal"] == signal and h["state"] == "firing" and match(h["subject"]):
                return t - since, h
        time.sleep(0.1)
    raise RuntimeError(f"no {signal} alert in {timeout_s}s after the fault")


def summary(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "min": min(xs), "median": statistics.median(xs), "max": max(xs), "all": xs}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["scenarios", "steady"])
    ap.add_argument("--runs", type=int, default=5, help="scenarios: independent incidents of each kind")
    ap.add_argument("--minutes", type=float, default=30.0, help="steady: how long")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = args.runs if args.mode == "scenarios" else 3
    work = Path(tempfile.mkdtemp(prefix="gw-bench-alerts-"))
    stop = threading.Event()
    procs: list[subprocess.Popen[Any]] = []
    result: dict[str, Any] = {"mode": args.mode, "runs": runs}
    hooks = Webhooks()
    try:
        sim, gw, procs, _log = start(runs, work, hooks)
        callers: dict[str, Caller] = {}
        pii_events = [threading.Event() for _ in range(runs)]
        for i in range(runs):
            callers[f"svc{i}"] = Caller(gw, key("svc", i), f"flaky{i}", 1.5, stop, 10 * i)
            callers[f"agent{i}"] = Caller(
                gw, key("svc", i), "agent-model", 1.0, stop, 10 * i + 1, agent=f"planner{i}/run"
            )
            callers[f"pii{i}"] = Caller(gw, key("pii", i), "mini", 1.0, stop, 10 * i + 2, pii=pii_events[i])
        for c in callers.values():
            c.start()
        t_start = time.time()
        incidents: list[tuple[str, str]] = []  # (signal, subject prefix) of the incidents caused on purpose
        if args.mode == "steady":
            print(f"steady traffic for {args.minutes} min, {len(callers)} callers ...", flush=True)
            time.sleep(args.minutes * 60)
        else:
            took: dict[str, list[float]] = {
                "provider 503s": [],
                "runaway agent x20": [],
                "rate-limit burst": [],
                "PII rate jump": [],
            }
            print("warming up (baselines: 2 minutes of history) ...", flush=True)
            time.sleep(150)
            for i in range(runs):
                t0 = time.time()
                sim_patch(sim, f"flaky{i}-a", {"rate_503": 1.0})
                dt, _ = wait_hook(hooks, "provider_errors", lambda s, i=i: s == f"flaky{i}-a", t0)
                took["provider 503s"].append(dt)
                sim_patch(sim, f"flaky{i}-a", None)
                incidents.append(("provider_errors", f"flaky{i}-a"))

                t0 = time.time()
                callers[f"agent{i}"].boost.set()
                dt, h = wait_hook(hooks, "cost_spike", lambda s, i=i: s == f"agent t{i}/planner{i}", t0)
                took["runaway agent x20"].append(dt)
                callers[f"agent{i}"].boost.clear()
                incidents += [
                    ("cost_spike", f"agent t{i}/planner{i}"),
                    ("cost_spike", f"tenant t{i}"),
                    ("cost_spike", "key "),
                ]

                t0 = time.time()
                with httpx.Client(base_url=gw, headers={"authorization": f"Bearer {key('lim', i)}"}) as c:
                    codes = [
                        c.post(
                            "/v1/chat/completions",
                            json={"model": "mini", "messages": [{"role": "user", "content": f"burst {n}"}]},
                        ).status_code
                        for n in range(30)
                    ]
                assert 429 in codes, codes
                dt, _ = wait_hook(hooks, "rate_limit", lambda s, i=i: s == f"tenant lim{i}", t0)
                took["rate-limit burst"].append(dt)
                incidents.append(("rate_limit", f"tenant lim{i}"))

                t0 = time.time()
                pii_events[i].set()
                dt, h = wait_hook(hooks, "pii_spike", lambda s: s.startswith("key "), t0)
                took["PII rate jump"].append(dt)
                pii_events[i].clear()
                incidents.append(("pii_spike", h["subject"]))
                print(
                    f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in took.items()),
                    flush=True,
                )
            result["time_to_alert_s"] = {k: summary(v) for k, v in took.items()}
        time.sleep(12)  # alerts still on their way
        fired = [h for h in hooks.bodies() if h["state"] == "firing" and h["tier"] == 1]
        unexpected = [
            h for h in fired if not any(h["signal"] == s and h["subject"].startswith(p) for s, p in incidents)
        ]
        result["seconds"] = round(time.time() - t_start)
        result["requests"] = sum(c.sent for c in callers.values())
        result["failed_requests"] = sum(c.failed for c in callers.values())
        result["tier1_alerts"] = len(fired)
        result["unexpected_tier1_alerts"] = [
            f"{h['signal']} {h['subject']}: {h['message']}" for h in unexpected
        ]
        result["recoveries"] = len([1 for h in hooks.bodies() if h["state"] == "resolved"])
    finally:
        stop.set()
        stop_all(procs)
        hooks.close()
    out = Path(args.out or f"bench-results/alerts-{args.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
