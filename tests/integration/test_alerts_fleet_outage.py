"""Fleet alerting while the shared Redis is frozen (the process stopped, its socket still accepting): the replicas
degrade to judging their own traffic instead of going blind, and when Redis answers again the fleet takes over
without a second page for an incident already paged for and without losing a recovery notice.

Two replicas (two gateway processes, each with its own store), one Redis started for this test:

1. an incident the fleet paged for goes on while Redis is frozen: no second page from the replica that sees it
   alone, and one recovery once Redis is back;
2. an incident that starts while Redis is frozen: the replica that sees it pages on its own traffic (the alert
   names the replica); back on Redis the fleet adopts that alert and sends its one recovery;
3. an incident both replicas see while frozen: two pages (they cannot know of each other), and back on Redis
   one incident with two recoveries, one per page, and no new page.
"""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import openai
import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_LIMITED, base_config, free_port, start_redis
from tests.integration.test_alerts_fleet import until
from tests.procs import Webhooks

ADMIN = "gw-admin-key-for-fleet-outage-000000000"
THRESHOLD = 10
pytestmark = pytest.mark.heavy


def hooks(sink: Webhooks, state: str) -> list[dict[str, Any]]:
    """The rate-limit alert pages (``firing``) or recoveries (``resolved``) received so far."""
    return [h for h in sink.bodies() if h.get("signal") == "rate_limit" and h["state"] == state]


@pytest.fixture
def outage(simulator, start_gateway, tmp_path):
    redis_port, sink = free_port(), Webhooks()
    rd = start_redis(redis_port)
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    gws = []
    for name in ("one", "two"):
        cfg = base_config(simulator.url, tmp_path / f"{name}.db")
        cfg["admin"] = {"key": ADMIN}
        cfg["state"] = {
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "key_prefix": prefix,
            "on_redis_failure": "fail_open",
        }
        cfg["stages"] = {"limits": {"enabled": True, "keys": {"limited": {"rpm": 30}}}}
        cfg["observability"] = {
            "alerts": {
                "every_s": 1,
                "bucket_s": 1,
                "lag_s": 0.5,
                "window_s": 8,
                "spike_window_s": 3,
                "min_history_s": 8,
                "rate_limit_rejects": THRESHOLD,
                "cooldown_s": 6,
                "overhead_p99_ms": 60_000,
                "webhooks": [{"url": sink.url + "/hook", "format": "json"}],
            }
        }
        gws.append(start_gateway(cfg, workers=1))
    try:
        yield gws, rd, sink
    finally:
        rd.send_signal(signal.SIGCONT)
        rd.send_signal(signal.SIGKILL)
        rd.wait()
        sink.close()


def burst(clients: list[Any], n: int) -> list[int]:
    """``n`` requests of the rate-limited key, spread over ``clients``: how many each replica refused."""
    rejected = [0] * len(clients)
    for i in range(n):
        try:
            clients[i % len(clients)].chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"burst {i}"}]
            )
        except openai.RateLimitError:
            rejected[i % len(clients)] += 1
    return rejected


def alerts(gw: Any) -> list[dict[str, Any]]:
    status, body = call(gw.url, ADMIN, "GET", "/admin/alerts", None)
    assert status == 200
    return [a for a in body["data"] if a["signal"] == "rate_limit"]


def test_fleet_alerts_degrade_to_each_replica_while_redis_is_frozen(outage):
    (one, two), rd, sink = outage
    clients = [one.openai(KEY_LIMITED), two.openai(KEY_LIMITED)]

    # 1. the fleet pages for a burst split between the replicas; the burst goes on at one replica, Redis frozen
    split = burst(clients, 46)
    assert all(0 < r < THRESHOLD for r in split) and sum(split) >= THRESHOLD, split
    fleet_alert = until(lambda: hooks(sink, "firing"), 30)[0]
    assert fleet_alert["replica"] is None
    for gw in (one, two):  # each replica knows of the fleet's alert (its mirror) before Redis freezes
        assert until(lambda gw=gw: alerts(gw), 15)
    rd.send_signal(signal.SIGSTOP)
    alone = burst(clients[:1], 50)[0]
    assert alone >= THRESHOLD  # enough for the replica to page on its own traffic, were it not the fleet's
    time.sleep(8)  # several of its ticks judged its own traffic
    assert len(hooks(sink, "firing")) == 1
    rd.send_signal(signal.SIGCONT)
    resolved = until(lambda: hooks(sink, "resolved"), 60)
    assert [h["id"] for h in resolved] == [fleet_alert["id"]]
    print(f"\n1. split {split}, then {alone} at one replica while frozen: one page, one recovery")

    # 2. a new incident while Redis is frozen: the replica that sees it pages; the fleet closes it afterwards
    time.sleep(7)  # past the cooldown
    rd.send_signal(signal.SIGSTOP)
    alone = burst(clients[:1], 50)[0]
    assert alone >= THRESHOLD
    local = until(lambda: hooks(sink, "firing")[1:], 30)
    assert len(local) == 1 and local[0]["replica"], local
    assert local[0]["subject"] == "tenant tenant-a"
    rd.send_signal(signal.SIGCONT)
    resolved = until(lambda: hooks(sink, "resolved")[1:], 60)
    assert [h["id"] for h in resolved] == [local[0]["id"]]
    # both replicas show it resolved: the one that raised it, and the other through the fleet's copy
    for gw in (one, two):
        assert until(
            lambda gw=gw: [a for a in alerts(gw) if a["id"] == local[0]["id"] and a["state"] == "resolved"],
            15,
        )
    print(f"2. {alone} at one replica while frozen: its own page {local[0]['id']}, closed by the fleet")

    # 3. both replicas see an incident while frozen: each pages; back on Redis, one incident, every page closed
    time.sleep(7)
    rd.send_signal(signal.SIGSTOP)
    split = burst(clients, 100)
    assert all(r >= THRESHOLD for r in split), split
    pages = until(lambda: hooks(sink, "firing")[2:] if len(hooks(sink, "firing")) >= 4 else [], 40)
    assert len(pages) == 2 and len({p["replica"] for p in pages}) == 2, pages
    rd.send_signal(signal.SIGCONT)
    resolved = until(lambda: hooks(sink, "resolved")[2:] if len(hooks(sink, "resolved")) >= 4 else [], 60)
    assert sorted(h["id"] for h in resolved) == sorted(p["id"] for p in pages)
    time.sleep(4)  # and nothing more: no page from the fleet for the incident its replicas paged for
    assert len(hooks(sink, "firing")) == 4 and len(hooks(sink, "resolved")) == 4
    print(f"3. {split} at both replicas while frozen: two pages, one per replica, both closed")
