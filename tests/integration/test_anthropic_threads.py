"""Anthropic message threads end to end: the anthropic SDK's ``beta.messages.tool_runner`` (which threads by
default) and ``beta.messages.thread`` → the gateway → the simulator, on an Anthropic and an OpenAI upstream."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import pytest
from anthropic import beta_tool

from tests.conftest import KEY_A, KEY_B, base_config

UPSTREAMS = ["anthropic", "openai"]
CALLS: list[str] = []


@beta_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    CALLS.append(city)
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def tgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["models"]["anthropic"] = {
        "deployments": [
            {
                "id": "an-1",
                "provider": "anthropic",
                "model": "claude-x",
                "api_base": simulator.url,
                "api_key": "k",
            }
        ]
    }
    cfg["models"]["openai"] = {
        "deployments": [
            {"id": "oa-1", "model": "gpt-4o-mini", "api_base": simulator.url + "/v1", "api_key": "k"}
        ]
    }
    return start_gateway(cfg)


def post(gw: Any, body: dict[str, Any], key: str = KEY_A) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        gw.url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_tool_runner_with_its_defaults(tgw, model):
    CALLS.clear()
    client = tgw.anthropic()
    runner = client.beta.messages.tool_runner(
        model=model,
        max_tokens=256,
        tools=[get_weather],
        messages=[{"role": "user", "content": "Use get_weather for Paris, then answer."}],
    )
    final = runner.until_done()
    assert CALLS, "the model never called the tool"
    assert final.stop_reason == "end_turn" and any(b.type == "text" for b in final.content)
    assert final._request_id


@pytest.mark.parametrize("model", UPSTREAMS)
def test_continue_sends_only_the_new_turn(tgw, model):
    first = {
        "model": model,
        "max_tokens": 64,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "My name is Ada. " * 20}],
        "thread": {"type": "create"},
    }
    status, one, h1 = post(tgw, first)
    assert status == 200, one
    status, two, h2 = post(
        tgw,
        {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "What is my name?"}],
            "thread": {"type": "continue", "previous_message_id": one["id"]},
        },
    )
    assert status == 200, two
    # the upstream saw the whole conversation: the first turn's prompt and answer are in the second's prompt
    r1, r2 = tgw.record(h1["request-id"]), tgw.record(h2["request-id"])
    assert r2["input_tokens"] > r1["input_tokens"] + r1["output_tokens"]


def test_unknown_and_foreign_threads_are_not_found(tgw):
    status, one, _ = post(
        tgw,
        {
            "model": "anthropic",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
            "thread": {"type": "create"},
        },
    )
    assert status == 200
    for mid, key in (("msg_unknown", KEY_A), (one["id"], KEY_B)):
        status, err, _ = post(
            tgw,
            {
                "model": "anthropic",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "again"}],
                "thread": {"type": "continue", "previous_message_id": mid},
            },
            key,
        )
        assert status == 404 and err["type"] == "error"
        assert err["error"]["details"] == {"error_code": "thread_not_found"}


def test_a_bad_thread_is_a_clear_400(tgw):
    status, err, _ = post(
        tgw,
        {
            "model": "anthropic",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "x"}],
            "thread": {},
        },
    )
    assert status == 400 and "thread" in err["error"]["message"]


def test_thread_helper_keeps_the_conversation(tgw):
    client = tgw.anthropic()
    thread = client.beta.messages.thread(model="anthropic", max_tokens=64, system="Be brief.")
    a = thread.send({"role": "user", "content": "Hello there."})
    b = thread.send({"role": "user", "content": "And again."})
    assert a.id != b.id and thread.previous_message_id == b.id
    assert isinstance(b, anthropic.types.beta.BetaMessage)


def test_anthropic_beta_is_forwarded_to_anthropic_and_refused_elsewhere(tgw, simulator):
    client = tgw.anthropic()
    msg = client.beta.messages.create(
        model="anthropic",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14", "message-threads-2026-08-12"],
    )
    assert msg.content
    seen = simulator.get("/_sim/last?model=claude-x")["headers"]
    assert (
        seen.get("anthropic-beta") == "interleaved-thinking-2025-05-14"
    )  # the gateway serves threads itself
    with pytest.raises(anthropic.BadRequestError) as e:  # cannot be honoured by an OpenAI-compatible upstream
        client.beta.messages.create(
            model="openai",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            betas=["interleaved-thinking-2025-05-14"],
        )
    assert "interleaved-thinking-2025-05-14" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:  # not on this gateway's allow-list
        client.beta.messages.create(
            model="anthropic",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            betas=["made-up-2099"],
        )
    assert "server.anthropic_betas" in e.value.message
    # betas the gateway serves itself work on any upstream
    ok = client.beta.messages.create(
        model="openai",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        betas=["structured-outputs-2025-11-13"],
    )
    assert ok.content
