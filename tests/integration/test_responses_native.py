"""``responses_api: native``: /v1/responses calls relayed to an OpenAI-compatible upstream's own /v1/responses (the
simulator's), with every stage still applied: PII masked in the input the upstream sees, usage metered from the
upstream's own numbers, failover to a chat-completions deployment, one record per request. The conversation stays
with the gateway: the upstream gets ``store: false`` and the whole input every turn, never a previous_response_id."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, parse_config
from tests.conftest import base_config

EMAIL = "jane.doe@example.com"
NATIVE = "gpt-native-up"


@pytest.fixture(scope="module")
def ngw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["stages"] = {"pii": {"enabled": True, "default": "mask"}}
    dep = {"api_base": simulator.url + "/v1", "api_key": "k", "responses_api": "native"}
    cfg["models"]["native"] = {
        "deployments": [{"id": "nat-1", "model": NATIVE, **dep, "price": {"input": 2.0, "output": 8.0}}]
    }
    # a native deployment that fails, then a chat one: failover crosses the two wire formats
    cfg["models"]["native-failover"] = {
        "strategy": "priority",
        "deployments": [
            {"id": "nat-bad", "model": "gpt-native-bad", **dep, "priority": 0},
            {"id": "chat-ok", "model": "gpt-chat-ok", **dep, "responses_api": "chat", "priority": 1},
        ],
    }
    return start_gateway(cfg)


def last(simulator: Any, model: str) -> dict[str, Any]:
    return simulator.get(f"/_sim/last?model={model}")


def tokens(simulator: Any, model: str) -> tuple[int, int]:
    e = simulator.get("/_sim/stats")["by_model"].get(model, {})
    return e.get("prompt_tokens", 0), e.get("completion_tokens", 0)


def test_a_responses_call_reaches_the_upstreams_responses_api(ngw, simulator):
    before = tokens(simulator, NATIVE)
    raw = ngw.openai().responses.with_raw_response.create(
        model="native",
        instructions="Be brief.",
        input="Say hello.",
        max_output_tokens=64,
        reasoning={"effort": "low", "summary": "auto"},
        metadata={"team": "x"},
    )
    resp = raw.parse()
    up = last(simulator, NATIVE)
    assert up["path"] == "/v1/responses"
    body = up["body"]
    assert body["store"] is False and "previous_response_id" not in body
    assert body["input"][0] == {"type": "message", "role": "system", "content": "Be brief."}
    assert body["max_output_tokens"] == 64 and body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert resp.status == "completed" and resp.output_text and resp.instructions == "Be brief."
    after = tokens(simulator, NATIVE)
    upstream = (after[0] - before[0], after[1] - before[1])
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == upstream
    rec = ngw.record(raw.headers["x-gateway-request-id"])
    assert rec["endpoint"] == "responses" and rec["status"] == 200 and rec["model_served"] == "nat-1"
    assert (rec["input_tokens"], rec["output_tokens"]) == upstream
    assert rec["cost_usd"] == pytest.approx((upstream[0] * 2.0 + upstream[1] * 8.0) / 1e6)


def test_stream_usage_is_the_upstreams(ngw, simulator):
    before = tokens(simulator, NATIVE)
    events = list(ngw.openai().responses.create(model="native", input="Say hello.", stream=True))
    assert events[-1].type == "response.completed"
    final = events[-1].response
    after = tokens(simulator, NATIVE)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        after[0] - before[0],
        after[1] - before[1],
    )
    assert last(simulator, NATIVE)["body"]["stream"] is True
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == final.output_text


def test_function_calls_round_trip_on_the_native_wire(ngw, simulator):
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    client = ngw.openai()
    first = client.responses.create(
        model="native", input="Weather in Paris?", tools=[tool], tool_choice="required"
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    assert last(simulator, NATIVE)["body"]["tools"][0]["name"] == "get_weather"
    out = [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}]
    follow = client.responses.create(model="native", input=out, tools=[tool], previous_response_id=first.id)
    items = last(simulator, NATIVE)["body"]["input"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == calls[0].call_id
    assert follow.status == "completed" and follow.output_text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_previous_response_id_is_held_by_the_gateway_with_pii_masked(ngw, simulator, stream):
    """Turn 2 names turn 1 by id; the upstream (which keeps nothing and refuses previous_response_id) gets the
    whole conversation, with the e-mail address masked in every turn, and the caller sees it unmasked."""
    client = ngw.openai()
    first = client.responses.create(model="native", input=f"#echo my mail is {EMAIL}")
    assert EMAIL in first.output_text
    kw: dict[str, Any] = {"model": "native", "input": "#echo and again", "previous_response_id": first.id}
    if stream:
        events = list(client.responses.create(stream=True, **kw))
        second = events[-1].response
    else:
        second = client.responses.create(**kw)
    body = last(simulator, NATIVE)["body"]
    assert "previous_response_id" not in body and body["store"] is False
    sent = json.dumps(body["input"])
    assert EMAIL not in sent and sent.count("<EMAIL_ADDRESS_1>") >= 2  # turn 1's input and its echoed answer
    assert [i.get("role") for i in body["input"]] == ["user", "assistant", "user"]
    assert second.previous_response_id == first.id and second.status == "completed"
    assert client.responses.retrieve(second.id).id == second.id  # answered by the gateway's store


def test_failover_from_a_native_deployment_to_a_chat_one(ngw, simulator):
    raw = ngw.openai().responses.with_raw_response.create(
        model="native-failover", input="Hello [[sim:fail=503@gpt-native-bad]]"
    )
    resp = raw.parse()
    assert resp.status == "completed" and resp.output_text
    assert last(simulator, "gpt-native-bad")["path"] == "/v1/responses"
    assert last(simulator, "gpt-chat-ok")["path"] == "/v1/chat/completions"
    assert "responses" not in last(simulator, "gpt-chat-ok")["body"]  # nothing Responses-only leaks to chat
    rec = ngw.record(raw.headers["x-gateway-request-id"])
    assert rec["model_served"] == "chat-ok" and rec["status"] == 200


def test_chat_callers_still_use_chat_completions(ngw, simulator):
    out = ngw.openai().chat.completions.create(model="native", messages=[{"role": "user", "content": "Hi"}])
    assert out.choices[0].message.content
    assert last(simulator, NATIVE)["path"] == "/v1/chat/completions"


def test_upstream_errors_keep_their_meaning(ngw):
    import openai

    with pytest.raises(openai.RateLimitError):
        ngw.openai().responses.create(model="native", input="x [[sim:fail=429]] [[sim:retry_after=0]]")


def test_native_needs_an_openai_compatible_deployment(simulator, tmp_path):
    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["models"]["bad"] = {
        "deployments": [
            {"id": "an", "provider": "anthropic", "model": "c", "api_key": "k", "responses_api": "native"}
        ]
    }
    with pytest.raises(ConfigError, match="responses_api"):
        parse_config(yaml.safe_dump(cfg))
