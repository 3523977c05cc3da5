"""Routing decisions as properties over random configurations (no network: plans are computed, not executed)."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Config
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.routing.router import Router
from gateway.routing.select import canary_bucket
from gateway.types import ChatRequest, Message, Principal

REGIONS = ["us", "eu", "ap", "ca"]
STRATEGIES = ["weighted", "priority", "least_latency", "lowest_cost", "least_busy"]


@st.composite
def configs(draw: st.DrawFn) -> dict:
    n_groups = draw(st.integers(1, 3))
    names = [f"g{i}" for i in range(n_groups)]
    models = {}
    dep_id = 0
    for i, name in enumerate(names):
        deps = []
        for _ in range(draw(st.integers(1, 4))):
            dep_id += 1
            deps.append(
                {
                    "id": f"d{dep_id}",
                    "model": f"m{dep_id}",
                    "api_base": "http://127.0.0.1:9/v1",
                    "region": draw(st.sampled_from(REGIONS)),
                    "weight": draw(st.floats(0.1, 10)),
                    "priority": draw(st.integers(0, 3)),
                    "price": {"input": draw(st.floats(0, 10)), "output": draw(st.floats(0, 10))},
                }
            )
        models[name] = {
            "strategy": draw(st.sampled_from(STRATEGIES)),
            "fallbacks": [n for n in names[i + 1 :] if draw(st.booleans())],
            "deployments": deps,
        }
    return {"models": models}


def ctx_for(residency: tuple[str, ...], user: str = "u") -> RequestContext:
    ctx = RequestContext("chat", "openai")
    ctx.principal = Principal(key_id="k1", tenant="t", residency=residency)
    ctx.req = ChatRequest(model="g0", messages=[Message(role="user", content="hi")], user=user)
    return ctx


@settings(max_examples=300, deadline=None)
@given(
    cfg=configs(),
    residency=st.sets(st.sampled_from(REGIONS), min_size=1, max_size=2),
    seed=st.integers(0, 2**32 - 1),
    unhealthy=st.sets(st.integers(1, 12)),
)
def test_residency_is_never_violated(cfg: dict, residency: set[str], seed: int, unhealthy: set[int]) -> None:
    router = Router(msgspec.convert(cfg, Config), http=None, rng=random.Random(seed))
    for targets in router.targets.values():  # some deployments are down: the plan must still stay in region
        for t in targets:
            if int(t.dep.id[1:]) in unhealthy:
                t.health.cooldown_until = float("inf")
    allowed = tuple(sorted(residency))
    chain_regions = {
        d["region"]
        for name in ["g0", *cfg["models"]["g0"]["fallbacks"]]
        for d in cfg["models"][name]["deployments"]
    }
    try:
        plan = list(router.plan(ctx_for(allowed), "g0"))
    except GatewayError as e:
        assert e.code == "residency_violation"
        assert not (chain_regions & residency)  # refused only when nothing in the chain is in region
        return
    assert all(t.dep.region in residency for t, _ in plan)
    assert len({t.dep.id for t, _ in plan}) == len(plan)  # no deployment is tried twice


@settings(max_examples=100, deadline=None)
@given(cfg=configs(), seed=st.integers(0, 2**32 - 1))
def test_plan_covers_every_healthy_deployment_in_the_chain_once(cfg: dict, seed: int) -> None:
    router = Router(msgspec.convert(cfg, Config), http=None, rng=random.Random(seed))
    ids = [t.dep.id for t, _ in router.plan(ctx_for(()), "g0")]
    chain = ["g0", *cfg["models"]["g0"]["fallbacks"]]
    expected = {d["id"] for name in chain for d in cfg["models"][name]["deployments"]}
    assert set(ids) == expected and len(ids) == len(expected)


@pytest.mark.parametrize("percent", [1, 20, 50])
def test_canary_bucket_is_stable_and_roughly_uniform(percent: int) -> None:
    n = 20_000
    inside = sum(canary_bucket(f"user-{i}", "grp") < percent for i in range(n))
    assert abs(inside / n - percent / 100) < 0.02
    assert canary_bucket("user-1", "grp") == canary_bucket("user-1", "grp")


def test_retry_budget_caps_retries_at_a_share_of_requests() -> None:
    from gateway.routing.router import RetryBudget

    b = RetryBudget(ratio=0.2, floor=2, window_s=60)
    for _ in range(10):
        b.request()
    allowed = sum(b.allow() for _ in range(100))
    assert allowed == 4  # floor 2 + 20% of 10 requests
    for _ in range(10):
        b.request()
    assert sum(b.allow() for _ in range(100)) == 2  # the budget grows with traffic, never with failures


def test_health_stall_needs_silence_and_clears_with_an_answer_or_when_nothing_waits():
    from gateway.errors import UpstreamError
    from gateway.routing.health import Health

    h = Health(stall_s=1.0)
    h.begin()
    h.begin()
    t0 = h.stalled_since
    assert t0 is not None and h.available(t0 + 0.5) and not h.available(t0 + 1.5)
    h.failure(UpstreamError(504, "timed out", timeout=True))  # a timeout is no answer: still stalled
    h.end()
    assert h.stalled_since == t0 and not h.available(t0 + 1.5)
    h.success(total_ms=10)  # an answer: the one still in flight waits from now
    assert h.stalled_since is not None and h.stalled_since > t0
    h.end()
    assert h.stalled_since is None and h.available(t0 + 100)  # nothing waits: nothing can be stalled
    assert Health().available() and Health().stall_s is None  # off unless configured
