"""Responses ⇄ canonical translation: requests in, Response objects and event sequences out. Pure functions.
The events and objects are also validated against OpenAI's spec here (tests/conformance has the wire version)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects import responses as rd
from gateway.errors import GatewayError
from gateway.types import ChatChunk, ChatResponse, Choice, Delta, Message, Usage
from tests.conformance.test_openai_spec import SPEC_PATH, check, check_event

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
spec = pytest.mark.skipif(not SPEC_PATH.exists(), reason=f"OpenAI spec not found at {SPEC_PATH}")


def parse(body: dict[str, Any]) -> rd.Call:
    call = rd.parse(orjson.dumps(body))
    call.response_id = "resp_abc"
    return call


def test_string_input_and_instructions():
    call = parse({"model": "m", "input": "Hi", "instructions": "Be brief."})
    msgs = call.req.messages
    assert [(m.role, m.content) for m in msgs] == [("system", "Be brief."), ("user", "Hi")]
    assert call.store is True and call.input_messages == msgs[1:]


def test_items_round_trip_a_function_call():
    call = parse(
        {
            "model": "m",
            "tools": [WEATHER],
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Paris?"}]},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
        }
    )
    m = call.req.messages
    assert [x.role for x in m] == ["system", "user", "assistant", "tool"]
    assert m[2].tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]
    assert m[3].tool_call_id == "c1" and m[3].content == "sunny"
    tool = call.req.tools[0].function
    assert tool.name == "get_weather" and tool.strict is True and tool.parameters == WEATHER["parameters"]


def test_assistant_text_then_calls_is_one_message_and_reasoning_attaches():
    call = parse(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "q"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
                 "encrypted_content": "sig"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            ],
        }
    )  # fmt: skip
    a = call.req.messages[1]
    assert a.role == "assistant" and a.content == "Let me" and len(a.tool_calls) == 2
    assert a.reasoning == "think" and a.extra == {"reasoning_signature": "sig"}


def test_options_map_to_canonical():
    call = parse(
        {
            "model": "m",
            "input": "x",
            "max_output_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "name": "get_weather"},
            "tools": [WEATHER],
            "text": {
                "format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}, "strict": True}
            },
            "reasoning": {"effort": "low", "summary": "auto"},
            "metadata": {"session_id": "s1"},
            "store": False,
            "truncation": "auto",
            "user": "u1",
        }
    )
    r = call.req
    assert r.max_completion_tokens == 50 and r.temperature == 0.5 and r.top_p == 0.9
    assert r.parallel_tool_calls is False and r.user == "u1" and r.metadata == {"session_id": "s1"}
    assert r.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert r.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": True},
    }
    # Responses-only fields ride along for a native Responses upstream (every other adapter ignores them)
    native = {"reasoning": {"effort": "low", "summary": "auto"}, "truncation": "auto"}
    assert r.extra == {"reasoning_effort": "low", "responses": native} and call.store is False


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "unsupported_feature", "web_search"),
        ({"model": "m", "input": "x", "background": True}, "unsupported_feature", "background"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "unsupported_feature", "previous_response_id"),
        ({"model": "m", "input": "x", "bogus": 1}, "unsupported_feature", "bogus"),
        ({"model": "m", "input": [{"type": "web_search_call", "id": "w"}]}, "unsupported_feature", "web_search_call"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "unsupported_feature", "input_file"),
        ({"input": "x"}, "invalid_request", "model"),
        ({"model": "m"}, "invalid_request", "input"),
        ({"model": "m", "input": "x", "temperature": 3}, "invalid_request", "temperature"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "invalid_request", "max_output_tokens"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "invalid_request", "call_id"),
    ],
)  # fmt: skip
def test_refusals_are_clear(body, code, words):
    with pytest.raises(GatewayError) as e:
        rd.parse(orjson.dumps(body))
    assert e.value.code == code and words in e.value.message


def test_history_goes_between_instructions_and_input():
    call = parse({"model": "m", "input": "again", "instructions": "sys", "previous_response_id": "resp_1"})
    rd.with_history(call, [Message(role="user", content="first"), Message(role="assistant", content="ok")])
    assert [m.content for m in call.req.messages] == ["sys", "first", "ok", "again"]
    only_prev = parse({"model": "m", "previous_response_id": "resp_1"})
    rd.with_history(only_prev, [Message(role="user", content="first")])
    assert [m.content for m in only_prev.req.messages] == ["first"]


def _response(
    content: str | None, calls: list[dict[str, Any]] | None = None, finish: str = "stop"
) -> ChatResponse:
    msg = Message(role="assistant", content=content, tool_calls=calls, reasoning="hmm")
    return ChatResponse(
        id="up1",
        model="m-1",
        choices=[Choice(index=0, message=msg, finish_reason=finish)],
        usage=Usage(input_tokens=10, output_tokens=5, cached_tokens=2, reasoning_tokens=1),
    )


@spec
def test_response_object_matches_the_spec():
    call = parse({"model": "m", "input": "x", "tools": [WEATHER], "metadata": {"a": "b"}})
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    obj = rd.response_dict(call, _response("Sure", calls))
    check("Response", obj)
    assert [i["type"] for i in obj["output"]] == ["reasoning", "message", "function_call"]
    assert obj["output"][2]["call_id"] == "call_1" and obj["status"] == "completed"
    assert obj["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 15,
    }
    cut = rd.response_dict(call, _response("Su", finish="length"))
    check("Response", cut)
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    back = rd.output_message(obj)
    assert back.content == "Sure" and back.tool_calls[0]["id"] == "call_1"


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = block.strip().split("\n")
        if len(lines) == 2:
            assert lines[0] == "event: " + orjson.loads(lines[1][6:])["type"]
            out.append(orjson.loads(lines[1][6:]))
    return out


@spec
@pytest.mark.parametrize("summary", [False, True])
def test_stream_event_sequence_matches_the_spec(summary):
    body: dict[str, Any] = {"model": "m", "input": "x", "stream": True, "tools": [WEATHER]}
    if summary:
        body["reasoning"] = {"summary": "auto"}
    call = parse(body)
    s = rd.ResponsesStream(call)
    raw = b""
    for d in [
        Delta(role="assistant", reasoning="think"),
        Delta(content="Hel"),
        Delta(content="lo"),
        Delta(
            tool_calls=[{"index": 0, "id": "call_9", "function": {"name": "get_weather", "arguments": ""}}]
        ),
        Delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
        Delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        Delta(finish_reason="tool_calls"),
    ]:
        raw += s.chunk(ChatChunk(id="c", model="m-1", choices=[d])) or b""
    raw += s.end(Usage(input_tokens=3, output_tokens=4), None)
    events = _events(raw)
    for e in events:
        check_event(e)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    assert ("response.reasoning_summary_text.delta" in kinds) == summary
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city":"Paris"}'
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 7 and s.final == final


@spec
def test_stream_error_and_empty_stream():
    call = parse({"model": "m", "input": "x", "stream": True})
    s = rd.ResponsesStream(call)
    raw = s.chunk(ChatChunk(id="c", model="m", choices=[Delta(content="a")])) or b""
    raw += s.error(GatewayError("upstream_rate_limited", "slow down"))
    events = _events(raw)
    for e in events:
        check_event(e)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    empty = rd.ResponsesStream(parse({"model": "m", "input": "x", "stream": True, "max_output_tokens": 5}))
    events = _events(empty.end(Usage(), None))
    for e in events:
        check_event(e)
    assert events[-1]["type"] == "response.completed"
