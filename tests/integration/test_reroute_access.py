"""A key's model allow-list and residency hold on every path that moves a request to another model group:
fallbacks after an upstream error (streams and ``/v1/messages`` too), context fallbacks, a group cooling down, the
``on_unavailable`` downgrade, the rate-limit fallback and the budget downgrade (``RequestContext.reroute``).

Each case is paired with the same request from an unrestricted key, which *is* moved: the fallback is real, and
only the restricted caller is kept out of it."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import KEY_A, base_config

KEY_SMALL = "gw-test-small-only-key-00000000000000000000"
KEY_SMALL_BUDGET = "gw-test-small-budget-key-000000000000000000"
KEY_EU = "gw-test-eu-reroute-key-0000000000000000000"
ALLOWED = [
    "small",
    "small-stream",
    "small-msgs",
    "small-ctx",
    "small-cool",
    "small-deg",
    "small-rl",
    "small-bud",
]


def dep(sim_url: str, model: str, **kw: Any) -> dict[str, Any]:
    return {"id": model, "model": model, "api_base": sim_url + "/v1", "api_key": "k", **kw}


@pytest.fixture(scope="module")
def agw(simulator, start_gateway, tmp_path_factory):
    s = simulator.url
    cfg = base_config(s, tmp_path_factory.mktemp("db") / "g.db")
    cfg["keys"] += [
        {"key": KEY_SMALL, "name": "small-only", "tenant": "tenant-s", "models": ALLOWED},
        {"key": KEY_SMALL_BUDGET, "name": "small-budget", "tenant": "tenant-s", "models": ALLOWED},
        {"key": KEY_EU, "name": "eu-only", "tenant": "tenant-eu", "residency": ["eu"]},
    ]
    m = cfg["models"]
    price = {"input": 1.0, "output": 1.0}
    m["big"] = {"deployments": [dep(s, "acc-big", region="us", price=price)]}
    for name in ("small", "small-stream", "small-msgs"):
        m[name] = {"fallbacks": ["big"], "deployments": [dep(s, f"acc-{name}")]}
    m["small-ctx"] = {"context_fallback": "big", "deployments": [dep(s, "acc-ctx", context_window=40)]}
    m["small-cool"] = {"fallbacks": ["big"], "deployments": [dep(s, "acc-cool")]}
    m["small-deg"] = {
        "on_unavailable": {"action": "downgrade", "group": "big"},
        "max_attempts": 1,
        "deployments": [dep(s, "acc-deg")],
    }
    m["small-rl"] = {"deployments": [dep(s, "acc-rl")]}
    m["small-bud"] = {"deployments": [dep(s, "acc-bud", region="eu", price=price)]}
    cfg["stages"] = {
        "limits": {
            "enabled": True,
            "per_model": {"small-rl": {"rpm": 1, "window_s": 3600}},
            "on_exceed": "fallback",
            "fallback_group": "big",
        },
        "budget": {
            "enabled": True,
            "keys": {
                name: {"usd": 0.000001, "on_exceed": "downgrade", "downgrade_to": "big"}
                for name in ("small-budget", "eu-only")
            },
        },
    }
    return start_gateway(cfg)


def chat(client: openai.OpenAI, model: str, content: str, **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


def refused(agw: Any, e: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    """The record of a refused request: no deployment of ``big`` served it, and it says what was refused."""
    rid = e.value.response.headers["x-gateway-request-id"]
    rec = agw.record(rid)
    assert rec["model_served"] != "acc-big"
    assert "big" in [r["to"] for r in rec["flags"]["reroute_refused"]]
    return rec


def test_fallback_after_an_upstream_error(agw):
    directive = "hi [[sim:fail=500@acc-small]]"
    assert chat(agw.openai(KEY_A), "small", directive).headers["x-gateway-model"] == "acc-big"
    with pytest.raises(openai.APIStatusError) as e:
        chat(agw.openai(KEY_SMALL), "small", directive)
    assert e.value.status_code >= 500
    refused(agw, e)


def test_fallback_of_a_stream(agw):
    directive = "hi [[sim:fail=500@acc-small-stream]]"
    assert (
        chat(agw.openai(KEY_A), "small-stream", directive, stream=True).headers["x-gateway-model"]
        == "acc-big"
    )
    with pytest.raises(openai.APIStatusError) as e:
        chat(agw.openai(KEY_SMALL), "small-stream", directive, stream=True)
    refused(agw, e)


def test_fallback_on_the_messages_endpoint(agw):
    directive = [{"role": "user", "content": "hi [[sim:fail=500@acc-small-msgs]]"}]
    ok = agw.anthropic(KEY_A).messages.with_raw_response.create(
        model="small-msgs", max_tokens=16, messages=directive
    )
    assert ok.headers["x-gateway-model"] == "acc-big"
    with pytest.raises(anthropic.APIStatusError) as e:
        agw.anthropic(KEY_SMALL).messages.create(model="small-msgs", max_tokens=16, messages=directive)
    refused(agw, e)


def test_context_fallback(agw):
    long = "word " * 200
    assert chat(agw.openai(KEY_A), "small-ctx", long).headers["x-gateway-model"] == "acc-big"
    with pytest.raises(openai.APIStatusError) as e:
        chat(agw.openai(KEY_SMALL), "small-ctx", long)
    refused(agw, e)


def test_a_group_cooling_down_does_not_send_plain_requests_to_its_fallback(agw):
    with pytest.raises(openai.RateLimitError):  # the upstream's 429 cools acc-cool down for 60 s
        chat(agw.openai(KEY_SMALL), "small-cool", "hi [[sim:fail=429@acc-cool]] [[sim:retry_after=60]]")
    assert chat(agw.openai(KEY_A), "small-cool", "plain").headers["x-gateway-model"] == "acc-big"
    with pytest.raises(openai.APIStatusError) as e:
        chat(agw.openai(KEY_SMALL), "small-cool", "plain")
    assert e.value.status_code == 503
    refused(agw, e)


def test_downgrade_when_unavailable(agw):
    directive = "hi [[sim:fail=503@acc-deg]]"
    assert chat(agw.openai(KEY_A), "small-deg", directive).headers["x-gateway-model"] == "acc-big"
    with pytest.raises(openai.APIStatusError) as e:
        chat(agw.openai(KEY_SMALL), "small-deg", directive)
    rec = refused(agw, e)
    assert "degraded_to" not in rec["flags"]


def test_rate_limit_fallback(agw):
    chat(agw.openai(KEY_SMALL), "small-rl", "first")  # uses the group's one request per hour
    assert chat(agw.openai(KEY_A), "small-rl", "second").headers["x-gateway-model"] == "acc-big"
    with pytest.raises(openai.RateLimitError) as e:
        chat(agw.openai(KEY_SMALL), "small-rl", "third")
    assert e.value.code == "rate_limited"
    rec = refused(agw, e)
    assert "rate_limit_fallback" not in rec["flags"]


def test_budget_downgrade_respects_the_allow_list(agw):
    with pytest.raises(openai.RateLimitError) as e:
        chat(agw.openai(KEY_SMALL_BUDGET), "small-bud", "over budget")
    assert e.value.code == "budget_exceeded"
    rec = refused(agw, e)
    assert "budget_downgraded" not in rec["flags"]


def test_budget_downgrade_respects_residency(agw):
    # the eu-only key may use every group, but "big" has no deployment in the eu: refuse the downgrade rather
    # than move the request to a group that can only serve it outside its regions
    with pytest.raises(openai.RateLimitError) as e:
        chat(agw.openai(KEY_EU), "small-bud", "over budget")
    assert e.value.code == "budget_exceeded"
    refused(agw, e)
