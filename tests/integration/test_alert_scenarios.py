"""Alert scenarios replayed against a running 2-worker gateway with the simulator as the upstream: a provider
starting to return 503s, a runaway agent loop (cost rate x20), a burst of rate-limit rejects, a caller whose
PII rate jumps. Each raises its tier-1 alert (GET /admin/alerts, the webhooks), once; the time to alert is
printed. The steady traffic before the incidents raises nothing. (The detector runs on a 1 s clock here; the
default is 5 s buckets, 15 s spike windows and 2 minutes of history, see tests/unit/test_alerts_detector.py.)"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import openai
import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, KEY_B, base_config
from tests.procs import Webhooks

ADMIN = "gw-admin-key-for-alerts-000000000000000"
KEY_PII = "gw-test-pii-caller-key-00000000000000000"
pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def hooks() -> Any:
    sink = Webhooks()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def agw(simulator, start_gateway, tmp_path_factory, hooks):
    v1 = simulator.url + "/v1"
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "alerts.db")
    cfg["admin"] = {"key": ADMIN}
    cfg["keys"].append({"key": KEY_PII, "name": "pii-caller", "tenant": "tenant-c"})
    cfg["models"]["flaky"] = {
        "strategy": "priority",
        "failure_threshold": 1000,  # keep trying the failing deployment: the alert, not the breaker, is tested
        "deployments": [
            {"id": "flaky-a", "model": "flaky-a", "api_base": v1, "api_key": "k", "priority": 0},
            {"id": "flaky-b", "model": "flaky-b", "api_base": v1, "api_key": "k", "priority": 1},
        ],
    }
    cfg["models"]["gpt-4o"]["deployments"][0]["price"] = {"input": 5.0, "output": 15.0}
    cfg["stages"] = {
        "pii": {"enabled": True, "default": "mask"},
        "limits": {"enabled": True, "keys": {"limited": {"rpm": 30}}},
    }
    cfg["observability"] = {
        "alerts": {
            "every_s": 1,
            "bucket_s": 1,
            "lag_s": 0.5,
            "window_s": 10,
            "spike_window_s": 3,
            "min_history_s": 8,
            "min_requests": 5,
            "cost_min_usd_per_min": 0.001,
            # not a scenario here: on a box this busy (oha, simulator, other suites) the overhead is not the point
            "overhead_p99_ms": 60_000,
            "webhooks": [
                {"url": hooks.url + "/json", "format": "json"},
                {"url": hooks.url + "/slack", "format": "slack"},
            ],
        }
    }
    gw = start_gateway(cfg, workers=2)
    yield gw


class Traffic:
    """Steady background traffic from several callers, in a thread, until stopped."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.stop = threading.Event()
        self.runaway = threading.Event()
        self.pii = threading.Event()
        self.threads = [
            threading.Thread(target=f, daemon=True) for f in (self._steady, self._agent, self._pii)
        ]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _steady(self) -> None:
        a, b = self.gw.openai(KEY_A), self.gw.openai(KEY_B)
        i = 0
        while not self.stop.is_set():
            i += 1
            with contextlib.suppress(openai.APIError):  # retries refused by the retry budget fail: fine
                (a if i % 2 else b).chat.completions.create(
                    model="flaky", messages=[{"role": "user", "content": f"steady {i}"}]
                )
            time.sleep(0.1)

    def _agent(self) -> None:
        client = self.gw.openai(KEY_A)
        while not self.stop.is_set():
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "next step"}],
                extra_headers={"x-gateway-agent": "planner/run-1"},
            )
            time.sleep(0.02 if self.runaway.is_set() else 0.5)

    def _pii(self) -> None:
        client = self.gw.openai(KEY_PII)
        i = 0
        while not self.stop.is_set():
            i += 1
            text = (
                f"write to jane.doe{i}@example.com or call 415-555-{1000 + i % 9000}"
                if self.pii.is_set()
                else f"hi {i}"
            )
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
            time.sleep(0.2)


def alerts(gw: Any) -> list[dict[str, Any]]:
    status, body = call(gw.url, ADMIN, "GET", "/admin/alerts", None)
    assert status == 200
    return body["data"]


def wait_alert(
    gw: Any, signal: str, subject: str, since: float, timeout_s: float = 60
) -> tuple[dict[str, Any], float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for a in alerts(gw):
            if a["signal"] == signal and a["subject"] == subject and a["started_at"] >= since:
                return a, time.time() - since
        time.sleep(0.25)
    raise AssertionError(f"no {signal} alert for {subject}: {[a['message'] for a in alerts(gw)]}")


def test_alert_scenarios_against_a_running_gateway(agw, simulator, hooks):
    took: dict[str, float] = {}
    with Traffic(agw) as traffic:
        time.sleep(14)  # baselines learnt; nothing anomalous yet
        assert [a for a in alerts(agw) if a["tier"] == 1] == []

        t0 = time.time()  # 1. the provider behind flaky-a starts answering 503
        simulator.post("/_sim/models/flaky-a", {"rate_503": 1.0})
        a, took["provider 503s"] = wait_alert(agw, "provider_errors", "flaky-a", t0)
        assert "flaky-a" in a["message"] and a["value"] >= 0.2
        simulator.post("/_sim/models/flaky-a", {"rate_503": 0.0})

        t0 = time.time()  # 2. the planner agent loops: 20x its request (and cost) rate
        traffic.runaway.set()
        a, took["runaway agent x20"] = wait_alert(agw, "cost_spike", "agent tenant-a/planner", t0)
        traffic.runaway.clear()

        t0 = time.time()  # 3. a burst the key's rate limit rejects
        limited = agw.openai("gw-test-limited-key-00000000000000000000")
        rejected = 0
        for i in range(45):
            try:
                limited.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"b{i}"}]
                )
            except openai.RateLimitError:
                rejected += 1
        assert rejected >= 10
        a, took["rate-limit rejects"] = wait_alert(agw, "rate_limit", "tenant tenant-a", t0)

        t0 = time.time()  # 4. a caller that never sent PII starts sending e-mail addresses and phone numbers
        traffic.pii.set()
        a, took["PII rate jump"] = wait_alert(agw, "pii_spike", f"key {pii_key_id(agw)}", t0)
    print("\ntime to alert:", {k: round(v, 1) for k, v in took.items()})
    fired = [a for a in alerts(agw) if a["tier"] == 1]
    keys = [(a["signal"], a["subject"]) for a in fired]
    assert len(keys) == len(set(keys)), "an incident raised more than one alert"
    assert {a["signal"] for a in fired} == {"provider_errors", "cost_spike", "rate_limit", "pii_spike"}
    # the webhooks got each alert, as generic JSON and as Slack text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(hooks.bodies("/slack")) < 4:
        time.sleep(0.2)
    json_hooks = hooks.bodies("/json")
    assert {h["signal"] for h in json_hooks if h["state"] == "firing"} >= {"provider_errors", "pii_spike"}
    assert all(h["source"] == "ai-gateway" for h in json_hooks)
    assert any("provider_errors" in h["text"] for h in hooks.bodies("/slack"))


def pii_key_id(gw: Any) -> str:
    for r in gw.records():
        if r["tenant"] == "tenant-c" and r["key_id"]:
            return r["key_id"]
    raise AssertionError("no record of the PII caller")
