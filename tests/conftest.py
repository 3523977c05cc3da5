"""The test rig: real processes on free loopback ports.

- ``redis_url``: a real ``redis-server`` (installed by scripts/setup.sh) started for the session.
- ``simulator``: the provider simulator (``gateway simulate``) over real HTTP.
- ``start_gateway``: the gateway as a real Granian process with a config the test writes.
- ``gw``: a default gateway in front of the simulator, with keys for two tenants.

Clients are the official ``openai`` / ``anthropic`` SDKs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import procs
from tests.procs import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
PY = sys.executable

KEY_A = "gw-test-tenant-a-key-000000000000000000000"
KEY_B = "gw-test-tenant-b-key-000000000000000000000"
KEY_LIMITED = "gw-test-limited-key-00000000000000000000"


def start_redis(port: int) -> subprocess.Popen[Any]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; run scripts/setup.sh --test (make test does)")
    return procs.start_redis(port)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    port = free_port()
    proc = start_redis(port)
    yield f"redis://127.0.0.1:{port}/0"
    stop(proc)


@dataclass
class Sim:
    url: str
    proc: subprocess.Popen[Any]

    def get(self, path: str) -> Any:
        import orjson

        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return orjson.loads(r.read())

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        import orjson

        req = urllib.request.Request(
            self.url + path, data=orjson.dumps(body or {}), headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return orjson.loads(r.read() or b"{}")


@pytest.fixture(scope="session")
def simulator() -> Iterator[Sim]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "gateway", "simulate", "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    yield Sim(url, proc)
    stop(proc)


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[Any]
    config_path: Path
    db_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def records(self, wait_for: int | None = None, timeout_s: float = 10) -> list[dict[str, Any]]:
        """Records in the store; with ``wait_for``, poll until at least that many have been written."""
        import orjson

        deadline = time.monotonic() + timeout_s
        while True:
            conn = sqlite3.connect(self.db_path, timeout=10)
            try:
                rows = [orjson.loads(r[0]) for r in conn.execute("SELECT body FROM records ORDER BY ts")]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
            if wait_for is None or len(rows) >= wait_for or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def record(self, request_id: str, timeout_s: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for r in self.records():
                if r["request_id"] == request_id:
                    return r
            time.sleep(0.1)
        raise AssertionError(f"no record for request {request_id}")

    def openai(self, key: str | None = None, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=key or KEY_A, max_retries=0, **kw)

    def anthropic(self, key: str | None = None, **kw: Any) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=self.url, api_key=key or KEY_A, max_retries=0, **kw)


def base_config(sim_url: str, db_path: Path) -> dict[str, Any]:
    """A config with every deployment pointing at the simulator; tests add to it."""
    v1 = sim_url + "/v1"
    return {
        "server": {"host": "127.0.0.1", "workers": 1, "max_body_bytes": 1_000_000},
        "store": {"sqlite_path": str(db_path), "record_flush_ms": 50},
        "keys": [
            {"key": KEY_A, "name": "a", "tenant": "tenant-a", "team": "team-1"},
            {"key": KEY_B, "name": "b", "tenant": "tenant-b"},
            {"key": KEY_LIMITED, "name": "limited", "tenant": "tenant-a", "models": ["gpt-4o-mini"]},
        ],
        "models": {
            "gpt-4o-mini": {
                "deployments": [
                    {
                        "id": "mini-a",
                        "model": "gpt-4o-mini",
                        "api_base": v1,
                        "api_key": "sim-secret-a",
                        "region": "us",
                        "price": {"input": 0.15, "output": 0.6},
                    },
                ]
            },
            "gpt-4o": {
                "aliases": ["gpt-4o-2024-08-06"],
                "deployments": [
                    {
                        "id": "4o-a",
                        "model": "gpt-4o-2024-08-06",
                        "api_base": v1,
                        "api_key": "sim-secret-b",
                        "region": "us",
                    },
                ],
            },
            "text-embedding-3-small": {
                "deployments": [
                    {"id": "embed-a", "model": "text-embedding-3-small", "api_base": v1, "api_key": "k"}
                ]
            },
            "two-deployments": {
                "deployments": [
                    {"id": "two-a", "model": "two-a", "api_base": v1, "api_key": "k"},
                    {"id": "two-b", "model": "two-b", "api_base": v1, "api_key": "k"},
                ]
            },
        },
    }


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    procs: list[subprocess.Popen[Any]] = []

    def start(
        config: dict[str, Any], workers: int = 1, env: dict[str, str] | None = None, log: Path | None = None
    ) -> Gateway:
        """``log``: a file for the gateway's output (its log lines), instead of the test's own."""
        d = tmp_path_factory.mktemp("gw")
        out = open(log, "wb") if log is not None else None  # noqa: SIM115 (the process owns it)
        cfg_path = d / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen(
            [
                PY,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(cfg_path),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=d,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=out,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", proc)
        db = Path(config["store"]["sqlite_path"])
        return Gateway(url, proc, cfg_path, db, keys={k["name"]: k["key"] for k in config.get("keys", [])})

    yield start
    for p in procs:
        stop(p)


@pytest.fixture(scope="session")
def gw(
    simulator: Sim, start_gateway: Callable[..., Gateway], tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    db = tmp_path_factory.mktemp("db") / "gateway.db"
    return start_gateway(base_config(simulator.url, db))
