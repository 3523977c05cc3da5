"""The Anthropic dialect end to end: the official ``anthropic`` SDK → the gateway → (a) an Anthropic deployment and
(b) an OpenAI-compatible deployment on the simulator. Same assertions for both: the SDK must not be able to tell."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import pytest

from tests.conftest import KEY_A, base_config

CLAUDE = "claude-sim"  # an Anthropic deployment
GPT = "gpt-sim"  # an OpenAI-compatible deployment
BOTH = [CLAUDE, GPT]
UPSTREAM = {CLAUDE: "claude-3-5-sonnet-20241022", GPT: "gpt-4o-mini-for-anthropic"}
USER = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


@pytest.fixture(scope="module")
def agw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["models"][CLAUDE] = {
        "deployments": [
            {
                "id": "anth-1",
                "provider": "anthropic",
                "model": UPSTREAM[CLAUDE],
                "api_base": simulator.url,
                "api_key": "sim-anthropic-key",
            }
        ]
    }
    cfg["models"][GPT] = {
        "deployments": [
            {
                "id": "oai-1",
                "model": UPSTREAM[GPT],
                "api_base": simulator.url + "/v1",
                "api_key": "sim-openai-key",
            }
        ]
    }
    cfg["models"]["claude-flaky"] = {
        "max_attempts": 1,
        "deployments": [
            {
                "id": "anth-flaky",
                "provider": "anthropic",
                "model": "claude-flaky",
                "api_base": simulator.url,
                "api_key": "k",
            }
        ],
    }
    return start_gateway(cfg)


def raw_post(url: str, body: dict[str, Any], key: str = KEY_A) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json", "x-api-key": key}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def last_upstream(simulator, model: str) -> dict[str, Any]:
    last = simulator.get(f"/_sim/last?model={model}")
    return last["body"]


# ---------------------------------------------------------------- success paths


@pytest.mark.parametrize("model", BOTH)
def test_create(agw, model):
    raw = agw.anthropic().messages.with_raw_response.create(model=model, max_tokens=64, messages=USER)
    msg = raw.parse()
    assert isinstance(msg, anthropic.types.Message)
    assert msg.role == "assistant" and msg.type == "message" and msg.id.startswith("msg_")
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    rec = agw.record(raw.headers["x-gateway-request-id"])
    assert rec["dialect"] == "anthropic" and rec["status"] == 200
    assert rec["input_tokens"] == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    assert rec["output_tokens"] == msg.usage.output_tokens


@pytest.mark.parametrize("model", BOTH)
def test_stream(agw, model):
    client = agw.anthropic()
    with client.messages.stream(model=model, max_tokens=64, messages=USER) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events and "message_delta" in events
    assert final.content[0].type == "text" and final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def _stream_start_and_final(client: Any, model: str, content: str) -> tuple[Any, Any]:
    with client.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": content}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    return events[0].message.usage, final.usage


def test_message_start_carries_an_anthropic_upstreams_input_tokens(agw, simulator):
    """An Anthropic upstream reports the prompt's tokens in its own message_start: they go through as they are,
    and equal the final usage (which the SDK keeps)."""
    start, final = _stream_start_and_final(agw.anthropic(), CLAUDE, "Say hello, counted.")
    whole = agw.anthropic().messages.create(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Say hello, counted."}]
    )
    assert start.input_tokens > 0
    assert start.input_tokens == final.input_tokens == whole.usage.input_tokens
    assert start.output_tokens <= final.output_tokens


@pytest.mark.parametrize("no_usage", [False, True])
def test_message_start_carries_the_gateways_count_for_other_upstreams(agw, no_usage):
    """An OpenAI-compatible upstream reports usage only at the end: message_start carries the gateway's count
    for the deployment that answers (what count_tokens says); the final usage is the upstream's, or that same
    count when the upstream sent none."""
    client = agw.anthropic()
    content = "Say hello, counted." + (" [[sim:no_usage]]" if no_usage else "")
    start, final = _stream_start_and_final(client, GPT, content)
    counted = client.messages.count_tokens(model=GPT, messages=[{"role": "user", "content": content}])
    assert start.input_tokens == counted.input_tokens > 0
    if no_usage:
        assert final.input_tokens == start.input_tokens
    else:
        assert final.input_tokens > 0  # the upstream's own tokenizer, reported at the end


@pytest.mark.parametrize("model", BOTH)
def test_stream_text_matches_non_stream(agw, model):
    client = agw.anthropic()
    msgs = [{"role": "user", "content": "Deterministic please. [[sim:output=one two three four five]]"}]
    whole = client.messages.create(model=model, max_tokens=64, messages=msgs)
    with client.messages.stream(model=model, max_tokens=64, messages=msgs) as stream:
        text = "".join(stream.text_stream)
    assert text == whole.content[0].text == "one two three four five"


@pytest.mark.parametrize("model", BOTH)
def test_tools_round_trip(agw, model):
    client = agw.anthropic()
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Paris? Use the tool."}]
    msg = client.messages.create(
        model=model, max_tokens=256, messages=msgs, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert isinstance(use, anthropic.types.ToolUseBlock)
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input and use.id
    follow = client.messages.create(
        model=model,
        max_tokens=256,
        tools=[WEATHER],
        messages=[
            *msgs,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"temp_c": 21}'}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"


@pytest.mark.parametrize("model", BOTH)
def test_tools_stream(agw, model):
    client = agw.anthropic()
    with client.messages.stream(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather in Oslo? Use the tool."}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert len(uses) == 1 and uses[0].name == "get_weather" and "city" in uses[0].input


@pytest.mark.parametrize("model", BOTH)
def test_count_tokens(agw, model):
    client = agw.anthropic()
    raw = client.messages.with_raw_response.count_tokens(model=model, messages=USER)
    small = raw.parse()
    big = client.messages.count_tokens(
        model=model,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello. " * 50}],
        tools=[WEATHER],
    )
    assert isinstance(small, anthropic.types.MessageTokensCount)
    assert 0 < small.input_tokens < big.input_tokens
    rec = agw.record(raw.headers["x-gateway-request-id"])
    assert rec["endpoint"] == "count_tokens" and rec["status"] == 200
    assert (
        rec["input_tokens"] == 0 and rec["flags"]["counted_input_tokens"] == small.input_tokens
    )  # not spending


def test_stop_sequence_from_anthropic_upstream(agw):
    msg = agw.anthropic().messages.create(
        model=CLAUDE,
        max_tokens=64,
        stop_sequences=["STOP"],
        messages=[{"role": "user", "content": "Go. [[sim:output=alpha beta STOP gamma]]"}],
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert msg.content[0].text.strip() == "alpha beta"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_from_an_upstream_that_only_says_stop(agw, stream):
    """An OpenAI-compatible upstream reports finish_reason "stop"; the stop string it names (vLLM's
    ``stop_reason``) makes it ``stop_sequence`` for the Anthropic caller."""
    kw: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "stop_sequences": ["STOP"],
        "messages": [{"role": "user", "content": "Go. [[sim:output=alpha beta STOP gamma]]"}],
    }
    if stream:
        with agw.anthropic().messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = agw.anthropic().messages.create(**kw)
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert "gamma" not in msg.content[0].text


@pytest.mark.parametrize("model", BOTH)
def test_max_tokens_stop_reason(agw, model):
    msg = agw.anthropic().messages.create(model=model, max_tokens=3, messages=USER)
    assert msg.stop_reason == "max_tokens"


def test_thinking_round_trips_through_anthropic_upstream(agw, simulator):
    client = agw.anthropic()
    thinking = {"type": "enabled", "budget_tokens": 1024}
    msg = client.messages.create(model=CLAUDE, max_tokens=2048, thinking=thinking, messages=USER)
    block = msg.content[0]
    assert isinstance(block, anthropic.types.ThinkingBlock) and block.thinking and block.signature
    with client.messages.stream(model=CLAUDE, max_tokens=2048, thinking=thinking, messages=USER) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == block.signature
    # the thinking block goes back upstream with its signature intact
    client.messages.create(
        model=CLAUDE,
        max_tokens=2048,
        thinking=thinking,
        messages=[
            *USER,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            {"role": "user", "content": "And again."},
        ],
    )
    sent = last_upstream(simulator, UPSTREAM[CLAUDE])
    assert sent["thinking"] == thinking
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": block.thinking,
        "signature": block.signature,
    }


def test_request_translation_on_the_wire(agw, simulator):
    """What each upstream receives for one Anthropic request: system, images, stop, user, top_k."""
    client = agw.anthropic()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Describe these."},
    ]
    kwargs: dict[str, Any] = {
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": content}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-7"},
        "tools": [WEATHER],
        # this SDK version no longer exposes sampling parameters; the API still accepts them
        "extra_body": {"temperature": 0.5, "top_k": 5},
    }
    client.messages.create(model=CLAUDE, **kwargs)
    a = last_upstream(simulator, UPSTREAM[CLAUDE])
    assert a["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert a["messages"][0]["content"] == content
    assert a["stop_sequences"] == ["END"] and a["metadata"] == {"user_id": "u-7"} and a["top_k"] == 5
    assert a["max_tokens"] == 50 and a["temperature"] == 0.5
    assert a["tools"] == [WEATHER]

    client.messages.create(model=GPT, **kwargs)
    o = last_upstream(simulator, UPSTREAM[GPT])
    assert o["messages"][0]["role"] == "system"
    assert o["messages"][1]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    assert o["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png"},
    }
    assert o["stop"] == ["END"] and o["user"] == "u-7" and o["max_tokens"] == 50
    fn = {
        "name": WEATHER["name"],
        "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"],
    }
    assert o["tools"] == [{"type": "function", "function": fn}]


# ---------------------------------------------------------------- errors in Anthropic's shape


def test_missing_max_tokens_is_anthropics_400(agw):
    status, body = raw_post(agw.url + "/v1/messages", {"model": CLAUDE, "messages": USER})
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert (
        body["error"]["message"] == "max_tokens: Field required"
        and body["error"]["code"] == "invalid_request"
    )


def test_unsupported_feature_is_refused_not_dropped(agw):
    with pytest.raises(anthropic.BadRequestError) as ei:
        agw.anthropic().messages.create(
            model=CLAUDE,
            max_tokens=10,
            messages=USER,
            extra_body={"mcp_servers": [{"type": "url", "url": "x"}]},
        )
    err = ei.value.body["error"]
    assert err["code"] == "unsupported_feature" and "mcp_servers" in err["message"]
    with pytest.raises(anthropic.BadRequestError) as ei:
        agw.anthropic().messages.create(
            model=GPT,
            max_tokens=10,
            messages=USER,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert ei.value.body["error"]["code"] == "unsupported_feature"


def test_auth_and_not_found_errors(agw):
    with pytest.raises(anthropic.AuthenticationError) as ei:
        agw.anthropic(key="gw-wrong").messages.create(model=CLAUDE, max_tokens=10, messages=USER)
    assert ei.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as ei:
        agw.anthropic().messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert ei.value.body["type"] == "error" and ei.value.body["error"]["code"] == "model_not_found"


def test_upstream_rate_limit_maps_to_rate_limit_error(agw):
    with pytest.raises(anthropic.RateLimitError) as ei:
        agw.anthropic().messages.create(
            model="claude-flaky", max_tokens=10, messages=[{"role": "user", "content": "hi [[sim:fail=429]]"}]
        )
    assert ei.value.body["error"]["type"] == "rate_limit_error"
    assert ei.value.response.headers.get("retry-after")


def test_upstream_overload_maps_to_overloaded_error(agw):
    with pytest.raises(anthropic.APIStatusError) as ei:
        agw.anthropic().messages.create(
            model="claude-flaky", max_tokens=10, messages=[{"role": "user", "content": "hi [[sim:fail=503]]"}]
        )
    assert ei.value.status_code == 503 and ei.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("model", BOTH)
def test_stream_broken_after_first_chunk_ends_with_error_event(agw, model):
    client = agw.anthropic()
    msgs = [
        {
            "role": "user",
            "content": "Write a lot. [[sim:fail=drop]] [[sim:drop_after=4]] [[sim:tps=100]] [[sim:output_tokens=200]]",
        }
    ]
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as ei,
        client.messages.stream(model=model, max_tokens=500, messages=msgs) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen and seen[0] == "message_start" and "message_stop" not in seen
    assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == "api_error"


def test_anthropic_only_message_fields_do_not_reach_openai_upstreams(agw, simulator):
    agw.anthropic().messages.create(
        model=GPT,
        max_tokens=50,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "boom",
                                          "is_error": True}]},
        ],
    )  # fmt: skip
    sent = last_upstream(simulator, UPSTREAM[GPT])["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert all("reasoning" not in m and "extra" not in m for m in sent)
    assert sent[1]["tool_calls"][0]["id"] == "toolu_9" and sent[2]["tool_call_id"] == "toolu_9"
