"""Cost and rate contracts across processes: two gateway processes (2 workers each) sharing one real Redis.

Prices are chosen so every request's cost is known: the simulator answers 20 output tokens and input is free,
so a request with ``max_tokens: 20`` reserves exactly what it will cost.
"""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from typing import Any

import openai
import pytest
import redis

from tests.conftest import KEY_A, base_config, free_port, start_redis

PER_REQUEST_USD = 20 * 1250 / 1e6  # 20 output tokens at $1,250 per million = $0.025


def contract_config(
    sim_url: str, db: Any, redis_url: str, stages: dict[str, Any], **state: Any
) -> dict[str, Any]:
    cfg = base_config(sim_url, db)
    cfg["server"]["workers"] = 2
    # These tests check what shared state guarantees while Redis answers; a busy test box must not turn a slow
    # answer into a fail-open decision, so Redis gets a generous deadline unless a test sets its own.
    cfg["state"] = {"redis_url": redis_url, "socket_timeout_s": 2.0, **state}
    cfg["models"]["metered"] = {
        "deployments": [
            {
                "id": "metered",
                "model": "metered",
                "api_base": sim_url + "/v1",
                "api_key": "k",
                "price": {"input": 0.0, "output": 1250.0},
            }
        ]
    }
    cfg["stages"] = stages
    return cfg


def ask(client: openai.OpenAI, **kw: Any) -> tuple[int, Any]:
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="metered", max_tokens=20, messages=[{"role": "user", "content": "spend"}], **kw
        )
        return 200, raw
    except openai.APIStatusError as e:
        return e.status_code, e


def two_gateways(start_gateway, cfg_factory) -> list[Any]:
    return [start_gateway(cfg_factory(i), workers=2) for i in range(2)]


def run_concurrently(gws: list[Any], n: int, threads: int, **kw: Any) -> list[tuple[int, Any]]:
    clients = cycle([gw.openai(KEY_A, timeout=30) for gw in gws])
    jobs = [next(clients) for _ in range(n)]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda c: ask(c, **kw), jobs))


def served_cost(gws: list[Any], results: list[tuple[int, Any]]) -> float:
    ids = {r.headers["x-gateway-request-id"] for status, r in results if status == 200}
    total = 0.0
    for gw in gws:
        for rec in gw.records(wait_for=None):
            if rec["request_id"] in ids:
                total += rec["cost_usd"]
    return total


@pytest.fixture
def fresh_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushall()
    return redis_url


def test_tenant_budget_holds_across_two_processes(simulator, start_gateway, fresh_redis, tmp_path):
    stages = {"budget": {"enabled": True, "tenants": {"tenant-a": {"usd": 1.00, "period": "lifetime"}}}}
    gws = two_gateways(
        start_gateway, lambda i: contract_config(simulator.url, tmp_path / f"g{i}.db", fresh_redis, stages)
    )
    results = run_concurrently(gws, 200, 40)  # would cost 200 x $0.025 = $5.00
    statuses = Counter(s for s, _ in results)
    rejected = [r for s, r in results if s != 200]
    assert all(s in (200, 429) for s in statuses), statuses
    assert all(r.code == "budget_exceeded" and "tenant 'tenant-a'" in r.message for r in rejected)
    time.sleep(0.5)  # let both processes flush their records
    spent = served_cost(gws, results)
    print(
        f"\ntenant budget $1.00: admitted {statuses[200]}, rejected {statuses[429]}, served cost ${spent:.4f}"
    )
    assert spent <= 1.00 + PER_REQUEST_USD + 1e-9
    assert statuses[200] >= 30  # the budget was used, not refused wholesale
    counter = redis.Redis.from_url(fresh_redis).hvals("gw:{tenant:tenant-a}:budn:life")
    assert sum(int(v) for v in counter) == round(
        spent * 1e9
    )  # settled to the actual cost, to the nano-dollar


def test_agent_run_budget_holds_across_two_processes(simulator, start_gateway, fresh_redis, tmp_path):
    stages = {"budget": {"enabled": True, "agent_runs": {"*": {"usd": 0.50, "period": "lifetime"}}}}
    gws = two_gateways(
        start_gateway, lambda i: contract_config(simulator.url, tmp_path / f"g{i}.db", fresh_redis, stages)
    )
    results = run_concurrently(gws, 100, 30, extra_headers={"x-gateway-agent": "planner/run-7"})
    statuses = Counter(s for s, _ in results)
    assert all(
        r.code == "budget_exceeded" and "agent run 'planner/run-7'" in r.message
        for s, r in results
        if s != 200
    )
    time.sleep(0.5)
    spent = served_cost(gws, results)
    print(
        f"\nagent-run budget $0.50: admitted {statuses[200]}, rejected {statuses[429]}, served cost ${spent:.4f}"
    )
    assert spent <= 0.50 + PER_REQUEST_USD + 1e-9 and statuses[200] >= 15
    # another run of the same agent has its own budget
    status, _ = ask(gws[0].openai(KEY_A), extra_headers={"x-gateway-agent": "planner/run-8"})
    assert status == 200


def test_rpm_limit_holds_across_two_processes(simulator, start_gateway, fresh_redis, tmp_path):
    stages = {"limits": {"enabled": True, "per_tenant": {"rpm": 100}}}
    gws = two_gateways(
        start_gateway, lambda i: contract_config(simulator.url, tmp_path / f"g{i}.db", fresh_redis, stages)
    )
    t0 = time.monotonic()
    results = run_concurrently(gws, 400, 40)
    elapsed = time.monotonic() - t0
    statuses = Counter(s for s, _ in results)
    refill = math.ceil(elapsed * 100 / 60)  # the bucket refills at 100/min while the test runs
    print(
        f"\nRPM 100 across 2 processes x 2 workers: 400 requests in {elapsed:.1f} s, admitted {statuses[200]}, "
        f"429 {statuses[429]} (refill during the run <= {refill})"
    )
    assert statuses[200] <= 100 + refill and statuses[200] >= 90
    assert statuses[200] + statuses[429] == 400
    for s, e in results:
        if s == 429:
            h = e.response.headers
            assert e.code == "rate_limited" and "tenant 'tenant-a' requests per minute" in e.message
            assert h["x-ratelimit-limit-requests"] == "100" and h["x-ratelimit-remaining-requests"] == "0"
            assert int(h["retry-after"]) >= 1


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_redis_killed_mid_load_and_restarted(simulator, start_gateway, tmp_path, policy):
    port = free_port()
    rd = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    stages = {"limits": {"enabled": True, "per_tenant": {"rpm": 1_000_000}}}
    gw = start_gateway(
        contract_config(
            simulator.url, tmp_path / "g.db", url, stages, on_redis_failure=policy, socket_timeout_s=0.25
        ),
        workers=2,
    )
    client = gw.openai(KEY_A, timeout=10)  # a hung request would fail this test with a timeout
    phases: dict[str, list[tuple[int, Any]]] = {}
    try:
        phases["before"] = [ask(client) for _ in range(20)]
        rd.send_signal(signal.SIGKILL)
        rd.wait()
        phases["down"] = [ask(client) for _ in range(20)]
        rd = start_redis(port)
        time.sleep(0.5)
        phases["after"] = [ask(client) for _ in range(20)]
    finally:
        rd.send_signal(signal.SIGKILL)
        rd.wait()
    summary = {k: dict(Counter(s for s, _ in v)) for k, v in phases.items()}
    print(f"\nredis killed mid-load, policy {policy}: {summary}")
    assert all(s == 200 for s, _ in phases["before"])
    if policy == "fail_open":
        assert all(s == 200 for s, _ in phases["down"])
    else:
        assert all(s == 503 and r.code == "state_unavailable" for s, r in phases["down"])
    assert sum(s == 200 for s, _ in phases["after"][5:]) == 15  # reconnected on its own
    ids = [
        (r.headers if s == 200 else r.response.headers)["x-gateway-request-id"]
        for v in phases.values()
        for s, r in v
    ]
    time.sleep(0.5)
    records = {r["request_id"]: r for r in gw.records(wait_for=len(ids))}
    assert set(ids) <= set(records)  # every request has its record, outage or not
    if policy == "fail_open":
        assert any(
            (records[(r.headers)["x-gateway-request-id"]].get("flags") or {}).get("state_degraded")
            for s, r in phases["down"]
        )


def test_upstream_429_storm_moves_traffic_without_amplifying(simulator, start_gateway, tmp_path):
    """One deployment answers 429 to everything: callers never see a 429 while the other has capacity, the
    storming deployment is cooled down (Retry-After honoured) instead of hammered, retries stay bounded."""
    cfg = base_config(simulator.url, tmp_path / "g.db")
    v1 = simulator.url + "/v1"
    cfg["models"]["stormy"] = {
        "strategy": "weighted",
        "deployments": [
            {"id": "storm-a", "model": "storm-a", "api_base": v1, "api_key": "k"},
            {"id": "storm-b", "model": "storm-b", "api_base": v1, "api_key": "k"},
        ],
    }
    gw = start_gateway(cfg, workers=2)
    simulator.post("/_sim/models/storm-a", {"rate_429": 1.0, "retry_after_s": 30})
    try:
        client = gw.openai(KEY_A)
        with ThreadPoolExecutor(8) as pool:
            raws = list(
                pool.map(
                    lambda _: client.chat.completions.with_raw_response.create(
                        model="stormy", messages=[{"role": "user", "content": "hi"}]
                    ),
                    range(200),
                )
            )
    finally:
        simulator.post("/_sim/models/storm-a", {"rate_429": 0.0})
    assert {r.headers["x-gateway-model"] for r in raws} == {"storm-b"}  # nobody saw a 429
    attempts = [int(r.headers["x-gateway-attempts"]) for r in raws]
    hits_a = simulator.get("/_sim/stats")["by_model"].get("storm-a", {}).get("requests", 0)
    print(
        f"\n429 storm on storm-a: 200/200 served by storm-b, attempts max {max(attempts)}, "
        f"extra attempts {sum(attempts) - 200}, requests that reached storm-a {hits_a}"
    )
    assert max(attempts) <= 2
    assert hits_a <= 2 * 8  # at most one 429 per worker per in-flight request before the cooldown took effect


def test_a_429_cools_the_deployment_down_for_every_replica(simulator, start_gateway, fresh_redis, tmp_path):
    def cfg(i: int) -> dict[str, Any]:
        c = contract_config(simulator.url, tmp_path / f"g{i}.db", fresh_redis, {})
        v1 = simulator.url + "/v1"
        c["models"]["cooling"] = {
            "strategy": "priority",
            "deployments": [
                {"id": "cool-a", "model": "cool-a", "api_base": v1, "api_key": "k", "priority": 0},
                {"id": "cool-b", "model": "cool-b", "api_base": v1, "api_key": "k", "priority": 1},
            ],
        }
        return c

    gw1, gw2 = two_gateways(start_gateway, cfg)
    simulator.post("/_sim/models/cool-a", {"rate_429": 1.0, "retry_after_s": 30})
    try:
        msg = [{"role": "user", "content": "hi"}]
        first = gw1.openai(KEY_A).chat.completions.with_raw_response.create(model="cooling", messages=msg)
        assert (
            first.headers["x-gateway-model"] == "cool-b"
            and "429 from cool-a" in first.headers["x-gateway-route"]
        )
        time.sleep(1.0)  # replicas adopt shared cooldowns every 0.5 s
        served = {
            gw2.openai(KEY_A)
            .chat.completions.with_raw_response.create(model="cooling", messages=msg)
            .headers["x-gateway-model"]
            for _ in range(20)
        }
    finally:
        simulator.post("/_sim/models/cool-a", {"rate_429": 0.0})
    assert served == {"cool-b"}
    assert (
        simulator.get("/_sim/stats")["by_model"]["cool-a"]["requests"] == 1
    )  # the other replica never tried it


def test_queue_mode_admits_waiting_requests_as_tokens_refill(simulator, start_gateway, fresh_redis, tmp_path):
    # 5 requests per second shared by two processes; 30 requests at once; waiting up to 10 s is allowed
    stages = {
        "limits": {
            "enabled": True,
            "on_exceed": "queue",
            "max_wait_s": 10,
            "per_tenant": {"rpm": 5, "window_s": 1},
        }
    }
    gws = two_gateways(
        start_gateway, lambda i: contract_config(simulator.url, tmp_path / f"g{i}.db", fresh_redis, stages)
    )
    t0 = time.monotonic()
    results = run_concurrently(gws, 30, 30)
    elapsed = time.monotonic() - t0
    assert all(s == 200 for s, _ in results)  # nobody was refused: they waited their turn
    time.sleep(0.5)
    ids = {r.headers["x-gateway-request-id"] for _, r in results}
    recs = [r for gw in gws for r in gw.records() if r["request_id"] in ids]
    queued = sorted((r.get("flags") or {}).get("queued_ms", 0) for r in recs)
    print(
        f"\nqueue mode, 5 req/s shared: 30/30 admitted in {elapsed:.1f} s; {sum(q > 0 for q in queued)} queued, "
        f"longest wait {queued[-1]:.0f} ms; max queue depth seen {max((r.get('flags') or {}).get('queue_depth_at_entry', 0) for r in recs)}"
    )
    assert sum(q > 0 for q in queued) >= 20  # at most the 5-token burst got in without waiting
    assert elapsed >= 3.5  # 25 beyond the burst at 5/s: admitted as the bucket refilled, not all at once


def test_fallback_mode_routes_over_limit_requests_to_another_group(
    simulator, start_gateway, fresh_redis, tmp_path
):
    stages = {
        "limits": {
            "enabled": True,
            "on_exceed": "fallback",
            "fallback_group": "gpt-4o-mini",
            "per_model": {"metered": {"rpm": 3}},
        }
    }
    gw = start_gateway(contract_config(simulator.url, tmp_path / "g.db", fresh_redis, stages))
    served = [ask(gw.openai(KEY_A))[1].headers["x-gateway-model"] for _ in range(6)]
    assert served[:3] == ["metered"] * 3 and served[3:] == ["mini-a"] * 3


def test_a_reject_after_fallback_names_the_fallback_tried(simulator, start_gateway, fresh_redis, tmp_path):
    stages = {
        "limits": {
            "enabled": True,
            "on_exceed": "fallback",
            "fallback_group": "gpt-4o-mini",
            "per_model": {"metered": {"rpm": 1}, "gpt-4o-mini": {"rpm": 1}},
        }
    }
    gw = start_gateway(contract_config(simulator.url, tmp_path / "g.db", fresh_redis, stages))
    statuses = [ask(gw.openai(KEY_A)) for _ in range(3)]
    assert [s for s, _ in statuses] == [200, 200, 429]  # own limit, then the fallback's, then neither
    err = statuses[2][1]
    assert err.code == "rate_limited"
    assert "model 'gpt-4o-mini' requests per minute" in err.message
    assert (
        "the fallback 'gpt-4o-mini' was tried" in err.message and "'metered' was at its limit" in err.message
    )
