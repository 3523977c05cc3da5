"""The Responses API end to end: the official ``openai`` SDK → the gateway (real Granian) → the simulator, on an
OpenAI-compatible and on an Anthropic upstream (translated through the canonical types), and on an OpenAI-compatible
upstream reached through its own /v1/responses (``responses_api: native``)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.conformance.test_openai_spec import SPEC_PATH, check, check_event
from tests.conftest import KEY_A, KEY_B, base_config

UPSTREAMS = ["openai", "anthropic", "native"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
spec = pytest.mark.skipif(not SPEC_PATH.exists(), reason=f"OpenAI spec not found at {SPEC_PATH}")


@pytest.fixture(scope="module")
def rgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["models"]["openai"] = {
        "deployments": [
            {
                "id": "oa-1",
                "model": "gpt-4o-mini",
                "api_base": simulator.url + "/v1",
                "api_key": "k",
                "price": {"input": 0.15, "output": 0.6},
            }
        ]
    }
    cfg["models"]["anthropic"] = {
        "deployments": [
            {
                "id": "an-1",
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "api_base": simulator.url,
                "api_key": "k",
                "price": {"input": 3.0, "output": 15.0},
            }
        ]
    }
    native = {
        "model": "gpt-4.1-native",
        "api_base": simulator.url + "/v1",
        "api_key": "k",
        "responses_api": "native",
    }
    cfg["models"]["native"] = {
        "deployments": [{"id": "nat-1", **native, "price": {"input": 2.0, "output": 8.0}}]
    }
    return start_gateway(cfg)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_string_input(rgw, model):
    client = rgw.openai()
    raw = client.responses.with_raw_response.create(model=model, input="Say hello.")
    resp = raw.parse()
    assert isinstance(resp, openai.types.responses.Response)
    assert resp.status == "completed" and resp.output_text
    assert resp.id.startswith("resp_") and resp._request_id == raw.headers["x-gateway-request-id"]
    u = resp.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    rec = rgw.record(raw.headers["x-gateway-request-id"])
    assert rec["endpoint"] == "responses" and rec["status"] == 200
    assert (rec["input_tokens"], rec["output_tokens"]) == (u.input_tokens, u.output_tokens)
    price = {"openai": (0.15, 0.6), "anthropic": (3.0, 15.0), "native": (2.0, 8.0)}[model]
    assert rec["cost_usd"] == pytest.approx((u.input_tokens * price[0] + u.output_tokens * price[1]) / 1e6)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_messages_with_instructions(rgw, model):
    resp = rgw.openai().responses.create(
        model=model,
        instructions="You are terse.",
        input=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "input_text", "text": "And now?"}]},
        ],
        max_output_tokens=64,
        temperature=0.2,
        metadata={"team": "x"},
    )
    assert resp.output_text and resp.instructions == "You are terse."
    assert resp.max_output_tokens == 64 and resp.metadata == {"team": "x"}


@pytest.mark.parametrize("model", UPSTREAMS)
def test_function_tool_round_trip(rgw, model):
    client = rgw.openai()
    first = client.responses.create(
        model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="required", store=False
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    follow = client.responses.create(
        model=model,
        tools=[WEATHER],
        store=False,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            *[c.model_dump(exclude_none=True) for c in calls],
            *[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny, 21C"} for c in calls],
        ],
    )
    assert follow.status == "completed" and follow.output_text


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("model", UPSTREAMS)
def test_parse_with_a_pydantic_model(rgw, model):
    resp = rgw.openai().responses.parse(model=model, input="A city, as JSON.", text_format=City)
    assert isinstance(resp.output_parsed, City)


@spec
@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_stream_events_follow_the_spec(rgw, model, tools):
    kw: dict[str, Any] = {"tools": [WEATHER], "tool_choice": "required"} if tools else {}
    events = list(rgw.openai().responses.create(model=model, input="Weather in Paris?", stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    delta = "response.function_call_arguments.delta" if tools else "response.output_text.delta"
    assert delta in kinds and "response.output_item.added" in kinds and "response.output_item.done" in kinds
    for e in events:
        check_event(e.model_dump(mode="json", exclude_unset=True))
    final = events[-1].response
    assert final.usage is not None and final.usage.output_tokens > 0
    stored = rgw.openai().responses.retrieve(final.id)
    assert stored.output == final.output and stored.usage == final.usage


@pytest.mark.parametrize("model", UPSTREAMS)
def test_stream_helper_collects_text(rgw, model):
    with rgw.openai().responses.stream(model=model, input="Say hello.") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text


@pytest.mark.parametrize("model", UPSTREAMS)
def test_previous_response_id_continues(rgw, model):
    client = rgw.openai()
    first = client.responses.create(model=model, input="My name is Ada. Remember it.")
    second = client.responses.with_raw_response.create(
        model=model, input="What is my name?", previous_response_id=first.id
    )
    resp = second.parse()
    assert resp.previous_response_id == first.id and resp.output_text
    # the second turn's prompt holds the first turn and its answer: more input tokens than the first
    assert resp.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    items = client.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"]


@pytest.mark.parametrize("model", UPSTREAMS)
def test_retrieve_and_delete(rgw, model):
    client = rgw.openai()
    made = client.responses.create(model=model, input="Say hello.")
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_unknown_and_foreign_ids_are_not_found(rgw):
    client = rgw.openai()
    made = client.responses.create(model="openai", input="Say hello.")
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="openai", input="x", previous_response_id="resp_nope")
    assert e.value.body["code"] == "not_found" and e.value.body["param"] == "previous_response_id"
    other = rgw.openai(key=KEY_B)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="openai", input="x", previous_response_id=made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    assert client.responses.retrieve(made.id).id == made.id  # still there for its owner


def test_store_false_is_not_kept(rgw):
    client = rgw.openai()
    made = client.responses.create(model="openai", input="Say hello.", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_built_in_tools_are_refused(rgw):
    with pytest.raises(openai.BadRequestError) as e:
        rgw.openai().responses.create(model="openai", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["code"] == "unsupported_feature" and "web_search" in e.value.body["message"]


def test_cancel_says_why(rgw):
    client = rgw.openai()
    made = client.responses.create(model="openai", input="Say hello.")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.cancel(made.id)
    assert "background" in e.value.body["message"]


@spec
def test_objects_follow_the_spec(rgw):
    import urllib.request

    client = rgw.openai()
    made = client.responses.create(model="openai", input=[{"role": "user", "content": "Hi"}])

    def get(path: str) -> Any:
        req = urllib.request.Request(rgw.base_url + path, headers={"authorization": f"Bearer {KEY_A}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    check("Response", get(f"/responses/{made.id}"))
    check("ResponseItemList", get(f"/responses/{made.id}/input_items"))
