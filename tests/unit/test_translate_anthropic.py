"""Anthropic ⇄ canonical translation, both edges: the dialect (Anthropic in, Anthropic out) and the provider
adapter (canonical in, Anthropic on the wire). Pure functions, no network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.anthropic_wire import usage_to_wire
from gateway.config import Deployment
from gateway.dialects import anthropic as dialect
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import anthropic as prov
from gateway.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    Delta,
    FunctionDef,
    Message,
    Tool,
    Usage,
)

DEP = Deployment(id="anth-1", model="claude-x", provider="anthropic", api_base="http://sim", api_key="k")
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = "iVBORw0KGgo="


def parse(body: dict[str, Any]) -> ChatRequest:
    return dialect.parse_chat(orjson.dumps(body))


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """SSE bytes → [(event name, data)]."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


# ---------------------------------------------------------------- dialect: Anthropic request → canonical

RICH = {
    "model": "claude-sim",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "Weather in Paris?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "err"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Summarise."},
            ],
        },
    ],
    "tools": [WEATHER],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u-1"},
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 7,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stream": True,
}


def test_parse_rich_request():
    req = parse(RICH)
    assert req.model == "claude-sim" and req.max_tokens == 300 and req.stream is True
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert req.messages[0].content == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert req.messages[1].content == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "Weather in Paris?"},
    ]
    a = req.messages[2]
    assert (
        a.content == "Checking."
        and a.reasoning == "Use the tool."
        and a.extra == {"reasoning_signature": "sig-1"}
    )
    assert a.tool_calls[1] == {
        "id": "toolu_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
    }
    assert req.messages[3].tool_call_id == "toolu_1" and req.messages[3].content == "21C"
    assert req.messages[4].extra == {"is_error": True}
    assert req.messages[5].content == [{"type": "text", "text": "Summarise."}]
    assert req.tools[0].function.parameters == WEATHER["input_schema"]
    assert req.tool_choice == "auto" and req.parallel_tool_calls is False
    assert req.stop == ["END"] and req.user == "u-1" and req.temperature == 0.5 and req.top_p == 0.9
    assert req.extra == {"top_k": 7, "thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_dialect_then_provider_round_trips_the_request():
    """Anthropic in → canonical → Anthropic out: the upstream receives what the caller sent."""
    wire = prov.request_to_wire(parse(RICH), DEP, stream=True)
    expected = {k: v for k, v in RICH.items() if k != "model"}
    assert wire.pop("model") == "claude-x"
    assert wire == expected


@pytest.mark.parametrize(
    ("choice", "canonical"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice, canonical):
    req = parse(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER],
            "tool_choice": choice,
        }
    )
    assert req.tool_choice == canonical
    assert prov.request_to_wire(req, DEP)["tool_choice"] == choice


def test_structured_output_and_effort():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    req = parse(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
        }
    )
    assert req.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert prov.request_to_wire(req, DEP)["output_config"] == {
        "format": {"type": "json_schema", "schema": schema},
        "effort": "low",
    }


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "invalid_request",
            "max_tokens: Field required",
        ),
        (
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "invalid_request",
            "max_tokens",
        ),
        ({"model": "m", "max_tokens": 5, "messages": []}, "invalid_request", "messages"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "invalid_request",
            "role",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "temperature": 1.5,
                "messages": [{"role": "user", "content": "x"}],
            },
            "invalid_request",
            "temperature",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "metadata": {"x": 1},
                "messages": [{"role": "user", "content": "x"}],
            },
            "invalid_request",
            "metadata.x",
        ),
        (
            {"model": "m", "max_tokens": 5, "container": "c", "messages": [{"role": "user", "content": "x"}]},
            "unsupported_feature",
            "container",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            },
            "unsupported_feature",
            "document",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "tools": [{"type": "bash_20250124", "name": "bash"}],
                "messages": [{"role": "user", "content": "x"}],
            },
            "unsupported_feature",
            "bash_20250124",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ],
            },
            "unsupported_feature",
            "file",
        ),
    ],
)
def test_parse_errors(body, code, fragment):
    with pytest.raises(GatewayError) as ei:
        parse(body)
    assert ei.value.code == code and fragment in ei.value.message
    assert ei.value.status == 400


def test_count_tokens_parse_does_not_need_max_tokens():
    req = dialect.request_from_anthropic(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}, require_max_tokens=False
    )
    assert req.max_tokens is None


# ---------------------------------------------------------------- dialect: canonical response → Anthropic


def _resp(
    message: Message, finish: str | None, usage: Usage, stop_sequence: str | None = None
) -> ChatResponse:
    choice = Choice(index=0, message=message, finish_reason=finish, stop_sequence=stop_sequence)
    return ChatResponse(id="chatcmpl-1", model="gpt-x", choices=[choice], usage=usage)


@pytest.mark.parametrize(
    ("finish", "stop_seq", "reason"),
    [
        ("stop", None, "end_turn"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
        ("stop", "END", "stop_sequence"),
        (None, None, "end_turn"),
    ],
)
def test_stop_reason_mapping(finish, stop_seq, reason):
    out = dialect.response_dict(_resp(Message(role="assistant", content="hi"), finish, Usage(), stop_seq))
    assert out["stop_reason"] == reason and out["stop_sequence"] == stop_seq


def test_response_blocks_and_usage():
    msg = Message(
        role="assistant",
        content="Let me check.",
        reasoning="hmm",
        extra={"reasoning_signature": "sig"},
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    )
    usage = Usage(input_tokens=100, output_tokens=20, cached_tokens=30, cache_creation_tokens=10)
    out = dialect.response_dict(_resp(msg, "tool_calls", usage))
    assert out["id"] == "msg_chatcmpl-1" and out["type"] == "message" and out["role"] == "assistant"
    assert out["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
    ]
    # Anthropic's input_tokens excludes cache reads and writes
    assert out["usage"] == {
        "input_tokens": 60,
        "output_tokens": 20,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 10,
    }


def test_tool_only_response_has_no_empty_text_block():
    msg = Message(
        role="assistant",
        content=None,
        tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    assert [b["type"] for b in dialect.response_dict(_resp(msg, "tool_calls", Usage()))["content"]] == [
        "tool_use"
    ]


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
        (504, "timeout_error"),
        (405, "invalid_request_error"),
    ],
)
def test_error_types(status, etype):
    err = GatewayError("upstream_error", "boom", status=status)
    body = orjson.loads(dialect.error_body(err))
    assert body == {"type": "error", "error": {"type": etype, "message": "boom", "code": "upstream_error"}}


# ---------------------------------------------------------------- dialect: stream renderer


def _chunk(*deltas: Delta, usage: Usage | None = None) -> ChatChunk:
    return ChatChunk(id="chatcmpl-9", model="gpt-x", choices=list(deltas), usage=usage)


def test_stream_renderer_event_sequence():
    r = dialect.AnthropicStream(
        parse({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    )
    out = b""
    for c in [
        _chunk(Delta(role="assistant", content="")),
        _chunk(Delta(content="Hel")),
        _chunk(Delta(content="lo")),
        _chunk(
            Delta(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            )
        ),
        _chunk(Delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a"'}}])),
        _chunk(Delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}])),
        _chunk(
            Delta(
                tool_calls=[
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{}"},
                    }
                ]
            )
        ),
        _chunk(Delta(finish_reason="tool_calls")),
        _chunk(usage=Usage(input_tokens=50, output_tokens=9, cached_tokens=10)),
    ]:
        out += r.chunk(c) or b""
    out += r.end(Usage(input_tokens=50, output_tokens=9, cached_tokens=10), None)
    ev = events(out)
    assert [e for e, _ in ev] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    start = ev[0][1]["message"]
    assert start["id"] == "msg_chatcmpl-9" and start["role"] == "assistant" and start["content"] == []
    assert ev[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert ev[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert ev[6][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert [ev[i][1]["delta"]["partial_json"] for i in (7, 8)] == ['{"a"', ": 1}"]
    assert ev[10][1]["index"] == 2 and ev[11][1]["delta"]["partial_json"] == "{}"
    assert ev[13][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 40,
            "output_tokens": 9,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 0,
        },
    }


def test_stream_renderer_thinking_and_stop_sequence():
    r = dialect.AnthropicStream(
        parse({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    )
    out = r.chunk(_chunk(Delta(role="assistant", content="")))
    out += r.chunk(_chunk(Delta(reasoning="think")))
    out += r.chunk(_chunk(Delta(extra={"reasoning_signature": "sig"})))
    out += r.chunk(_chunk(Delta(content="ok")))
    assert r.chunk(_chunk(Delta(finish_reason="stop", stop_sequence="END"))) is None  # said at the end
    out += r.end(Usage(input_tokens=3, output_tokens=2), None)
    ev = events(out)
    assert ev[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert ev[3][1]["delta"] == {"type": "thinking_delta", "thinking": "think"}
    assert ev[4][1]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert ev[5][0] == "content_block_stop" and ev[6][1]["content_block"]["type"] == "text"
    assert ev[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_stream_renderer_empty_stream_and_error():
    r = dialect.AnthropicStream(
        parse({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    )
    ev = events(r.end(Usage(input_tokens=1), None))
    assert [e for e, _ in ev] == ["message_start", "ping", "message_delta", "message_stop"]
    err = events(r.error(GatewayError("upstream_error", "gone", status=502)))
    assert err == [
        (
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "gone", "code": "upstream_error"}},
        )
    ]


# ---------------------------------------------------------------- provider: canonical → wire


def _req(messages: list[Message], **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, **kw)


def test_provider_request_from_openai_shapes():
    req = _req(
        [
            Message(role="system", content="A."),
            Message(role="developer", content="B."),
            Message(role="user", content="Hi"),
            Message(
                role="assistant",
                content=None,
                tool_calls=[
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                ],
            ),
            Message(role="tool", tool_call_id="c1", content="42"),
            Message(role="user", content="Thanks"),
            Message(role="assistant", content="", reasoning="no signature, not resent"),
        ],
        tools=[Tool(function=FunctionDef(name="f", parameters={"type": "object"}))],
        tool_choice="required",
        stop="X",
        user="u",
    )
    wire = prov.request_to_wire(req, DEP)
    assert wire["system"] == [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]
    assert wire["max_tokens"] == 4096
    assert wire["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert wire["tool_choice"] == {"type": "any"} and wire["stop_sequences"] == ["X"]
    assert wire["metadata"] == {"user_id": "u"}


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"n": 2}, "`n` > 1"),
        ({"temperature": 1.5}, "temperature"),
        ({"extra": {"logprobs": True}}, "logprobs"),
    ],
)
def test_provider_refuses_what_anthropic_cannot_express(kw, fragment):
    with pytest.raises(GatewayError) as ei:
        prov.request_to_wire(_req([Message(role="user", content="x")], **kw), DEP)
    assert (
        ei.value.code == "unsupported_feature"
        and fragment in ei.value.message
        and "anth-1" in ei.value.message
    )


def test_provider_ignores_openai_only_storage_hints():
    wire = prov.request_to_wire(_req([Message(role="user", content="x")], extra={"store": False}), DEP)
    assert "store" not in wire


def test_endpoint_and_headers():
    assert prov.endpoint(DEP) == "http://sim/v1/messages"
    assert (
        prov.endpoint(Deployment(id="a", model="m", provider="anthropic", api_base="https://x/v1"))
        == "https://x/v1/messages"
    )
    default = Deployment(id="a", model="m", provider="anthropic")
    assert prov.endpoint(default) == "https://api.anthropic.com/v1/messages"
    h = prov.auth_headers(
        Deployment(id="a", model="m", provider="anthropic", api_key="sk", api_version="2024-01-01")
    )
    assert h["x-api-key"] == "sk" and h["anthropic-version"] == "2024-01-01" and "authorization" not in h
    assert prov.auth_headers(DEP)["anthropic-version"] == "2023-06-01"


# ---------------------------------------------------------------- provider: wire → canonical


def test_provider_response():
    body = orjson.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "text", "text": "Hi "},
            {"type": "text", "text": "there"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 7},
    })  # fmt: skip
    resp = prov.response_from_wire(body)
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "Hi there" and c.message.reasoning == "t"
    assert c.message.extra == {"reasoning_signature": "s"}
    assert c.message.tool_calls == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}
    ]
    assert resp.usage == Usage(input_tokens=117, output_tokens=5, cached_tokens=100, cache_creation_tokens=7)


def test_provider_tool_only_response_has_no_content():
    body = orjson.dumps({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
    })  # fmt: skip
    m = prov.response_from_wire(body).choices[0].message
    assert m.content is None and m.reasoning is None and m.extra is None and m.tool_calls is not None


def _sse(*evs: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(e) for e in evs]


def test_provider_stream_translation():
    tr = prov.StreamTranslator()
    chunks: list[ChatChunk] = []
    for data in _sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude-x",
                "content": [],
                "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 17},
        },
        {"type": "message_stop"},
    ):
        chunks += tr.feed(data)
    assert tr.done
    assert (
        chunks[0].choices[0].role == "assistant" and chunks[0].id == "msg_1" and chunks[0].model == "claude-x"
    )
    assert chunks[1].choices[0].content == "Hi"
    assert chunks[2].choices[0].tool_calls == [
        {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    assert [c.choices[0].tool_calls[0]["function"]["arguments"] for c in chunks[3:5]] == ['{"a":', "1}"]
    assert chunks[5].choices[0].finish_reason == "tool_calls" and chunks[5].usage is None
    assert chunks[6].choices == [] and chunks[6].usage == Usage(
        input_tokens=15, output_tokens=17, cached_tokens=3
    )


def test_provider_stream_error_event():
    tr = prov.StreamTranslator()
    with pytest.raises(UpstreamError) as ei:
        tr.feed(
            orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        )
    assert ei.value.status == 529 and ei.value.retryable


def test_message_delta_usage_is_cumulative():
    tr = prov.StreamTranslator()
    tr.feed(
        orjson.dumps(
            {
                "type": "message_start",
                "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}},
            }
        )
    )
    tr.feed(
        orjson.dumps(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"input_tokens": 8, "output_tokens": 4, "cache_creation_input_tokens": 2},
            }
        )
    )
    tail = tr.feed(orjson.dumps({"type": "message_stop"}))[-1]
    assert tail.usage == Usage(input_tokens=10, output_tokens=4, cache_creation_tokens=2)


# ---------------------------------------------------------------- the usage rule


@given(
    fresh=st.integers(0, 10**7),
    read=st.integers(0, 10**7),
    created=st.integers(0, 10**7),
    out=st.integers(0, 10**7),
)
def test_usage_rule_round_trips(fresh, read, created, out):
    wire = prov.WireUsage(
        input_tokens=fresh,
        output_tokens=out,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=created,
    )
    u = prov.usage_from_wire(wire)
    assert u.input_tokens == fresh + read + created  # canonical input is the whole prompt
    assert usage_to_wire(u) == {
        "input_tokens": fresh,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": created,
    }


def test_cost_bills_cache_reads_and_writes_once():
    """Anthropic bills fresh input, cache reads and cache writes at three rates; the canonical total must not
    bill the writes twice."""
    from gateway.config import Price
    from gateway.pricing import cost

    wire = prov.WireUsage(
        input_tokens=1000, output_tokens=100, cache_read_input_tokens=4000, cache_creation_input_tokens=2000
    )
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_creation=3.75)
    expected = (1000 * 3.0 + 4000 * 0.3 + 2000 * 3.75 + 100 * 15.0) / 1e6
    assert cost(prov.usage_from_wire(wire), price) == pytest.approx(expected)


def test_tool_cache_control_and_context_management_reach_an_anthropic_upstream_only():
    from gateway.providers import openai as oai_prov

    cm = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    req = parse(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}],
            "context_management": cm,
        }
    )
    wire = prov.request_to_wire(req, DEP)
    assert wire["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert wire["context_management"] == cm
    with pytest.raises(GatewayError) as e:
        oai_prov.request_to_wire(req, "gpt-x")
    assert e.value.code == "unsupported_feature" and "context_management" in e.value.message
    del req.extra["context_management"]
    body = oai_prov.request_to_wire(req, "gpt-x")
    assert "cache_control" not in body["tools"][0]["function"]


def test_message_start_carries_the_prompt_usage_of_the_first_chunk():
    """An Anthropic upstream's message_start usage survives translation (provider → canonical → dialect), cache
    reads and writes apart, as Anthropic reports them; without one message_start shows zeros."""
    t = prov.StreamTranslator()
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "usage": {
                "input_tokens": 12,
                "output_tokens": 1,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 5,
            },
        },
    }
    first = t.feed(orjson.dumps(start))
    assert first[0].prompt == Usage(
        input_tokens=47, output_tokens=1, cached_tokens=30, cache_creation_tokens=5
    )
    req = parse({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    name, data = events(dialect.AnthropicStream(req).chunk(first[0]) or b"")[0]
    assert name == "message_start"
    assert data["message"]["usage"] == {
        "input_tokens": 12,
        "output_tokens": 1,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 30,
    }
    plain = dialect.AnthropicStream(req).chunk(_chunk(Delta(role="assistant", content=""))) or b""
    _, bare = events(plain)[0]
    assert bare["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
