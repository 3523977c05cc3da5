"""Routing and resilience over the simulator: weights, least latency, circuit breaker, fallbacks, canary, pins,
residency, hedging, degradation. Deployment behaviour is changed at run time through the simulator's control API
(``POST /_sim/models/{model}``), so each test owns the upstream models it names."""

from __future__ import annotations

import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.conftest import KEY_A, base_config

MSG = [{"role": "user", "content": "Route me."}]
KEY_EU = "gw-test-eu-only-key-0000000000000000000000"
KEY_PINNED = "gw-test-pinned-key-0000000000000000000000"


def dep(sim_url: str, model: str, **kw: Any) -> dict[str, Any]:
    return {"id": model, "model": model, "api_base": sim_url + "/v1", "api_key": "k", **kw}


@pytest.fixture(scope="module")
def rgw(simulator, start_gateway, tmp_path_factory):
    s = simulator.url
    cfg = base_config(s, tmp_path_factory.mktemp("db") / "g.db")
    cfg["keys"] += [
        {"key": KEY_EU, "name": "eu", "tenant": "tenant-eu", "residency": ["eu"]},
        {"key": KEY_PINNED, "name": "pinned", "tenant": "tenant-a", "pins": {"pinnable": "pin-v1"}},
    ]
    m = cfg["models"]
    m["weighted"] = {"deployments": [dep(s, "w-a", weight=3), dep(s, "w-b", weight=1)]}
    m["fastest"] = {"strategy": "least_latency", "deployments": [dep(s, "ll-a"), dep(s, "ll-b")]}
    m["breaker"] = {
        "failure_threshold": 3,
        "open_s": 1.0,
        "strategy": "priority",
        "deployments": [dep(s, "cb-a", priority=0), dep(s, "cb-b", priority=1)],
    }
    m["fb-secondary"] = {"deployments": [dep(s, "fb-second")]}
    for trigger in ("err", "429", "timeout"):
        m[f"fb-{trigger}"] = {
            "fallbacks": ["fb-secondary"],
            "deployments": [dep(s, f"fbp-{trigger}", timeout_s=0.5)],
        }
    m["fb-context"] = {
        "context_fallback": "fb-secondary",
        "deployments": [dep(s, "fbp-context", context_window=40)],
    }
    m["fb-policy"] = {"content_policy_fallback": "fb-secondary", "deployments": [dep(s, "fbp-policy")]}
    m["canaried"] = {
        "canary": {"deployment": "can-new", "percent": 20, "sticky_by": "user"},
        "deployments": [dep(s, "can-old"), dep(s, "can-new")],
    }
    m["pinnable"] = {"deployments": [dep(s, "pin-v1", weight=0.01), dep(s, "pin-v2", weight=100)]}
    m["group-pinned"] = {
        "pin": "gp-v1",
        "deployments": [dep(s, "gp-v1", weight=0.01), dep(s, "gp-v2", weight=100)],
    }
    m["us-only"] = {"deployments": [dep(s, "res-us", region="us")]}
    m["mixed-region"] = {
        "deployments": [dep(s, "res-us2", region="us", weight=100), dep(s, "res-eu", region="eu")]
    }
    m["hedged"] = {
        "strategy": "priority",
        "hedge": {"after_ms": 100},
        "deployments": [dep(s, "hedge-slow", priority=0), dep(s, "hedge-fast", priority=1)],
    }
    m["all-fail"] = {
        "strategy": "priority",
        "deployments": [dep(s, "af-a", priority=0), dep(s, "af-b", priority=1)],
    }
    m["stalling"] = {
        "strategy": "priority",
        "stall_s": 0.3,
        "deployments": [dep(s, "stall-a", priority=0), dep(s, "stall-b", priority=1)],
    }
    m["capped"] = {
        "strategy": "priority",
        "deployments": [dep(s, "cap-a", priority=0, max_concurrency=1), dep(s, "cap-b", priority=1)],
    }
    m["cheap"] = {"deployments": [dep(s, "cheap-1")]}
    m["degrading"] = {
        "on_unavailable": {"action": "downgrade", "group": "cheap"},
        "max_attempts": 1,
        "deployments": [dep(s, "deg-1")],
    }
    return start_gateway(cfg)


def served_by(client: openai.OpenAI, model: str, content: str = "Route me.", **kw: Any) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )
    return raw.headers["x-gateway-model"], raw.headers["x-gateway-route"]


def test_weights_hold_within_statistical_bounds(rgw):
    client = rgw.openai()
    n = 400
    with ThreadPoolExecutor(8) as pool:
        counts = Counter(d for d, _ in pool.map(lambda _: served_by(client, "weighted"), range(n)))
    expected, sd = n * 0.75, math.sqrt(n * 0.75 * 0.25)
    assert abs(counts["w-a"] - expected) < 4 * sd, counts  # 4 sigma: fails by chance < 1 in 15,000 runs


def test_least_latency_moves_off_a_slow_deployment_and_back(rgw, simulator):
    client = rgw.openai()

    def phase(n: int) -> Counter[str]:
        with ThreadPoolExecutor(4) as pool:
            return Counter(d for d, _ in pool.map(lambda _: served_by(client, "fastest"), range(n)))

    for m in ("ll-a", "ll-b"):
        simulator.post(f"/_sim/models/{m}", {"latency_ms": 50})
    phase(20)
    simulator.post("/_sim/models/ll-a", {"latency_ms": 250})  # 5x slower
    phase(20)  # let the EWMA see it
    slow_phase = phase(100)
    assert slow_phase["ll-b"] >= 90, slow_phase
    simulator.post("/_sim/models/ll-a", {"latency_ms": 50})  # recovered
    phase(600)  # a probe every 0.5 s pulls ll-a's EWMA back into the fast band
    recovered = phase(100)
    assert recovered["ll-a"] >= 20, recovered


def test_open_circuit_stops_traffic_and_half_open_probe_restores_it(rgw, simulator):
    client = rgw.openai()
    simulator.post("/_sim/models/cb-a", {"rate_500": 1.0})
    served = [served_by(client, "breaker")[0] for _ in range(20)]
    assert set(served) == {"cb-b"}  # every request still succeeds, via failover
    hits_a = simulator.get("/_sim/stats")["by_model"]["cb-a"]["requests"]
    assert hits_a == 3  # failure_threshold: after 3 failures the circuit opened and cb-a got nothing more
    simulator.post("/_sim/models/cb-a", {"rate_500": 0.0})
    time.sleep(1.2)  # open_s elapses; the next request is a half-open probe
    served = [served_by(client, "breaker")[0] for _ in range(5)]
    assert served == ["cb-a"] * 5  # the probe succeeded, the circuit closed, priority routing is back


@pytest.mark.parametrize(
    ("group", "directive", "why"),
    [
        ("fb-err", "[[sim:fail=500@fbp-err]]", "500 from fbp-err"),
        ("fb-429", "[[sim:fail=429@fbp-429]] [[sim:retry_after=0]]", "429 from fbp-429"),
        ("fb-timeout", "[[sim:latency_ms=3000@fbp-timeout]]", "timeout from fbp-timeout"),
    ],
)
def test_fallback_on_errors(rgw, group, directive, why):
    d, route = served_by(rgw.openai(), group, f"hi {directive}")
    assert d == "fb-second"
    assert "fallback to fb-secondary" in route and why in route


def test_fallback_on_context_window_overflow(rgw):
    d, route = served_by(rgw.openai(), "fb-context", "word " * 200)
    assert d == "fb-second" and "context" in route
    d, _ = served_by(rgw.openai(), "fb-context", "short")
    assert d == "fbp-context"


def test_fallback_on_upstream_context_length_error(rgw, simulator):
    simulator.post("/_sim/models/fbp-err", {"context_window": 10})
    try:
        d, _ = served_by(rgw.openai(), "fb-err", "word " * 50)
    finally:
        simulator.post("/_sim/models/fbp-err", {"context_window": None})
    assert d == "fb-second"


def test_fallback_on_content_policy_refusal(rgw):
    d, route = served_by(rgw.openai(), "fb-policy", "hi [[sim:fail=content_filter@fbp-policy]]")
    assert d == "fb-second" and "content_policy" in route


def test_canary_percentage_and_stickiness(rgw):
    client = rgw.openai()
    n = 300
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: served_by(client, "canaried", user=f"user-{i}"), range(n)))
    in_canary = sum(1 for d, _ in results if d == "can-new")
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(in_canary - n * 0.2) < 4 * sd, in_canary
    assert all(r.startswith("canary 20%") for d, r in results if d == "can-new")
    for i in range(10):  # one caller sees one version, every time
        first = results[i][0]
        assert {served_by(client, "canaried", user=f"user-{i}")[0] for _ in range(5)} == {first}


def test_pins_override_strategies(rgw):
    pinned = rgw.openai(KEY_PINNED)
    assert {served_by(pinned, "pinnable")[0] for _ in range(20)} == {"pin-v1"}
    assert Counter(served_by(rgw.openai(), "pinnable")[0] for _ in range(20))["pin-v2"] >= 15
    assert {served_by(rgw.openai(), "group-pinned")[0] for _ in range(10)} == {"gp-v1"}
    _, route = served_by(pinned, "pinnable")
    assert route.startswith("pinned pin-v1")


def test_residency_is_never_violated(rgw):
    eu = rgw.openai(KEY_EU)
    with pytest.raises(openai.PermissionDeniedError) as e:
        eu.chat.completions.create(model="us-only", messages=MSG)
    assert e.value.code == "residency_violation" and "eu" in e.value.message
    raw = [
        eu.chat.completions.with_raw_response.create(model="mixed-region", messages=MSG) for _ in range(10)
    ]
    assert {r.headers["x-gateway-region"] for r in raw} == {"eu"}
    rec = rgw.record(raw[0].headers["x-gateway-request-id"])
    assert rec["region"] == "eu"


def test_residency_holds_even_when_the_region_is_down(rgw, simulator):
    simulator.post("/_sim/models/res-eu", {"rate_503": 1.0})
    try:
        with pytest.raises(openai.InternalServerError):
            rgw.openai(KEY_EU).chat.completions.create(model="mixed-region", messages=MSG)
    finally:
        simulator.post("/_sim/models/res-eu", {"rate_503": 0.0})
    assert simulator.get("/_sim/stats")["by_model"].get("res-us2", {}).get("requests", 0) == 0


def test_hedging_takes_the_first_answer(rgw, simulator):
    simulator.post("/_sim/models/hedge-slow", {"latency_ms": 2000})
    try:
        raw = rgw.openai().chat.completions.with_raw_response.create(model="hedged", messages=MSG)
    finally:
        simulator.post("/_sim/models/hedge-slow", {"latency_ms": None})
    assert raw.headers["x-gateway-model"] == "hedge-fast"
    assert raw.headers["x-gateway-route"].startswith("hedge after 100ms")
    rec = rgw.record(raw.headers["x-gateway-request-id"])
    assert rec["flags"]["hedged"] is True and rec["flags"]["hedge_cancelled"] == "hedge-slow"
    assert rec["attempts"] == 2


def test_degradation_downgrades_to_a_cheaper_group(rgw):
    raw = rgw.openai().chat.completions.with_raw_response.create(
        model="degrading", messages=[{"role": "user", "content": "x [[sim:fail=503@deg-1]]"}]
    )
    assert raw.headers["x-gateway-model"] == "cheap-1"
    assert rgw.record(raw.headers["x-gateway-request-id"])["flags"]["degraded_to"] == "cheap"


def test_route_decision_in_headers_and_record(rgw):
    raw = rgw.openai().chat.completions.with_raw_response.create(model="weighted", messages=MSG)
    assert raw.headers["x-gateway-route"].startswith("weighted p=")
    rec = rgw.record(raw.headers["x-gateway-request-id"])
    assert rec["route"] == raw.headers["x-gateway-route"] and rec["attempts"] == 1


def test_stream_fails_over_before_first_byte(rgw):
    client = rgw.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="fb-err", messages=[{"role": "user", "content": "s [[sim:fail=500@fbp-err]]"}], stream=True
    )
    assert raw.headers["x-gateway-model"] == "fb-second"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_failing_after_first_byte_ends_with_error_event(rgw):
    client = rgw.openai(KEY_A)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="gpt-4o-mini",
            stream=True,
            messages=[
                {
                    "role": "user",
                    "content": "s [[sim:fail=drop]] [[sim:drop_after=2]] [[sim:output_tokens=30]]",
                }
            ],
        ):
            pass


def test_deployment_quota_sends_overflow_to_the_next_deployment(simulator, start_gateway, tmp_path):
    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["models"]["quota"] = {
        "strategy": "priority",
        "deployments": [
            dep(simulator.url, "quota-a", priority=0, rpm=5),
            dep(simulator.url, "quota-b", priority=1),
        ],
    }
    gw = start_gateway(cfg)
    served = [served_by(gw.openai(), "quota")[0] for _ in range(8)]
    assert (
        served == ["quota-a"] * 5 + ["quota-b"] * 3
    )  # the provider's quota is respected, callers still served
    assert simulator.get("/_sim/stats")["by_model"]["quota-a"]["requests"] == 5


def test_when_every_deployment_fails_the_error_lists_what_was_tried(rgw):
    with pytest.raises(openai.APIStatusError) as e:
        rgw.openai().chat.completions.create(
            model="all-fail", messages=[{"role": "user", "content": "hi [[sim:fail=503]]"}]
        )
    assert e.value.status_code == 503 and e.value.code == "upstream_unavailable"
    assert "Tried 2 deployments: 503 from af-a, 503 from af-b." in e.value.message


def test_a_stalled_deployment_is_routed_around_before_its_timeout(rgw):
    client = rgw.openai(timeout=30)
    with ThreadPoolExecutor(1) as pool:  # one request hangs on stall-a for 2 s (its timeout is 300 s)
        slow = pool.submit(served_by, client, "stalling", "hang [[sim:latency_ms=2000@stall-a]]")
        time.sleep(0.8)  # past stall_s (0.3 s) with no answer from stall-a
        assert served_by(client, "stalling")[0] == "stall-b"
        assert slow.result()[0] == "stall-a"  # the hung request itself was answered in the end
    assert served_by(client, "stalling")[0] == "stall-a"  # it answered: back to first choice


def test_a_deployment_at_its_concurrency_limit_is_passed_over(rgw):
    client = rgw.openai()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(served_by, client, "capped", "slow [[sim:latency_ms=1500@cap-a]]")
        time.sleep(0.5)  # the slow one is in flight on cap-a, its only slot
        second = served_by(client, "capped", "next")
        first = slow.result()
    assert first[0] == "cap-a"
    assert second[0] == "cap-b" and "cap-a at its concurrency limit" in second[1]
    assert served_by(client, "capped", "alone")[0] == "cap-a"  # the slot is free again
