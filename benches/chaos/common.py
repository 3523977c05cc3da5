"""What the chaos and hedging benchmarks share: starting the simulator and a gateway as processes, the
simulator's control API, running the load client process, and the statistics they report.

Everything runs on loopback, each part in its own process (simulator, gateway with its workers, load client), so
the gateway never shares an event loop with the load that measures it.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.procs import stop_all

from benches.load.run import free_port, wait

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
# One gateway key per simulated caller (service): the load mixes them.
KEYS = {
    "svc-search": "gw-chaos-search-00000000000000000000000000",
    "svc-support": "gw-chaos-support-0000000000000000000000000",
    "svc-batch": "gw-chaos-batch-000000000000000000000000000",
}


@dataclass
class Stack:
    """A running simulator + gateway pair and the scratch directory they use."""

    sim_url: str
    gw_url: str
    work: Path

    # ---------------------------------------------------------------- simulator control

    def sim(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.sim_url + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def patch(self, model: str, patch: dict[str, Any]) -> None:
        self.sim("POST", f"/_sim/models/{model}", patch)

    def heal(self, model: str) -> None:
        """Drop a model's run-time patch: it behaves as the profile file says again."""
        self.sim("DELETE", f"/_sim/models/{model}")

    def sim_counts(self) -> dict[str, dict[str, int]]:
        """Upstream requests the simulator has answered so far: model -> status -> count."""
        stats = self.sim("GET", "/_sim/stats")
        return {m: dict(e["by_status"]) for m, e in stats["by_model"].items()}

    # ---------------------------------------------------------------- load

    def client(self, out: Path, *args: str) -> subprocess.Popen[Any]:
        """Start the load client (``benches/chaos/client.py``) in its own process."""
        keys = ",".join(f"{name}={key}" for name, key in KEYS.items())
        cmd = [
            PY,
            "-m",
            "benches.chaos.client",
            "--url",
            self.gw_url,
            "--keys",
            keys,
            "--out",
            str(out),
            *args,
        ]
        return subprocess.Popen(cmd, cwd=ROOT)


@contextmanager
def stack(profile: dict[str, Any], models: dict[str, Any], workers: int = 2) -> Iterator[Stack]:
    """Start the simulator (one worker, ``profile``) and a gateway (``workers`` workers, model groups
    ``models``); stop both (SIGINT, then kill) and remove the scratch directory on exit."""
    work = Path(tempfile.mkdtemp(prefix="gw-chaos-"))
    sim_port, gw_port = free_port(), free_port()
    st = Stack(f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}", work)
    for group in models.values():
        for dep in group["deployments"]:
            dep.setdefault("api_base", st.sim_url + "/v1")
            dep.setdefault("api_key", "sim")
            dep.setdefault("price", {"input": 0.15, "output": 0.6})
    cfg = {
        "server": {"host": "127.0.0.1", "port": gw_port, "workers": workers},
        "store": {"sqlite_path": str(work / "chaos.db")},
        "keys": [{"key": key, "name": name, "tenant": name} for name, key in KEYS.items()],
        "models": models,
    }
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "sim.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    procs: list[subprocess.Popen[Any]] = []
    try:
        sim_cmd = [PY, "-m", "gateway", "simulate", "--port", str(sim_port), "--workers", "1"]
        sim = subprocess.Popen(
            [*sim_cmd, "--profile", str(work / "sim.yaml"), "--log-level", "warning"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(sim)
        wait(st.sim_url + "/healthz", sim)
        gw = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(work / "gateway.yaml")],
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        procs.append(gw)
        wait(st.gw_url + "/readyz", gw)
        yield st
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


def run_client(st: Stack, *args: str, timeout_s: float = 600) -> list[dict[str, Any]]:
    """Run the load client to completion and return its per-request records."""
    out = st.work / f"client-{time.monotonic_ns()}.jsonl"
    proc = st.client(out, *args)
    if proc.wait(timeout_s) != 0:
        raise SystemExit(f"load client failed ({proc.returncode})")
    return read_records(out)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def diff_counts(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Per model and status, the simulator's requests between two snapshots."""
    out: dict[str, dict[str, int]] = {}
    for m, by in after.items():
        d = {s: n - before.get(m, {}).get(s, 0) for s, n in by.items()}
        d = {s: n for s, n in d.items() if n}
        if d:
            out[m] = d
    return out
