"""Canonical ⇄ Gemini generateContent translation (pure functions, no network)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import gemini as gm
from gateway.types import ChatChunk, ChatRequest, FunctionDef, Message, Tool, Usage

DEP = Deployment(id="gem-1", model="gemini-x", provider="gemini", api_base="http://sim", api_key="k")
PNG = "iVBORw0KGgo="
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def _req(messages: list[Message], **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, **kw)


def test_request_contents_and_config():
    req = _req(
        [
            Message(role="system", content="Be brief."),
            Message(
                role="user",
                content=[
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.jpg?s=1"}},
                ],
            ),
            Message(
                role="assistant",
                content="Calling.",
                tool_calls=[
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city": "Oslo"}'},
                        "extra_content": {"google": {"thought_signature": "ts"}},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city": "Rome"}'},
                    },
                ],
            ),
            Message(role="tool", tool_call_id="c1", content='{"temp": 3}'),
            Message(role="tool", tool_call_id="c2", content="sunny"),
            Message(role="user", content="Compare."),
        ],
        tools=[Tool(function=FunctionDef(name="w", description="weather", parameters=SCHEMA))],
        tool_choice={"type": "function", "function": {"name": "w"}},
        max_completion_tokens=50,
        temperature=0.1,
        top_p=0.5,
        stop=["END"],
        n=2,
        seed=9,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
        extra={"top_k": 4, "thinking": {"type": "enabled", "budget_tokens": 256}},
    )
    wire = gm.request_to_wire(req, DEP)
    assert wire["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert wire["contents"] == [
        {"role": "user", "parts": [{"text": "Look"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
                                   {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/cat.jpg?s=1"}}]},
        {"role": "model", "parts": [{"text": "Calling."},
                                    {"functionCall": {"name": "w", "args": {"city": "Oslo"}}, "thoughtSignature": "ts"},
                                    {"functionCall": {"name": "w", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"temp": 3}}},
                                   {"functionResponse": {"name": "w", "response": {"result": "sunny"}}},
                                   {"text": "Compare."}]},
    ]  # fmt: skip
    assert wire["tools"] == [
        {"functionDeclarations": [{"name": "w", "description": "weather", "parametersJsonSchema": SCHEMA}]}
    ]
    assert wire["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}}
    assert wire["generationConfig"] == {
        "maxOutputTokens": 50, "temperature": 0.1, "topP": 0.5, "stopSequences": ["END"], "candidateCount": 2,
        "seed": 9, "responseMimeType": "application/json", "responseJsonSchema": SCHEMA, "topK": 4,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 256},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "cfg"),
    [("auto", None), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"})],
)
def test_tool_choice(choice, cfg):
    req = _req(
        [Message(role="user", content="x")], tools=[Tool(function=FunctionDef(name="w"))], tool_choice=choice
    )
    wire = gm.request_to_wire(req, DEP)
    assert wire.get("toolConfig") == ({"functionCallingConfig": cfg} if cfg else None)


def test_tool_result_for_unknown_call_is_a_clear_error():
    req = _req([Message(role="user", content="x"), Message(role="tool", tool_call_id="nope", content="1")])
    with pytest.raises(GatewayError) as ei:
        gm.request_to_wire(req, DEP)
    assert ei.value.code == "invalid_request" and "nope" in ei.value.message


def test_refusals():
    with pytest.raises(GatewayError) as ei:
        gm.request_to_wire(_req([Message(role="user", content="x")], extra={"logit_bias": {}}), DEP)
    assert ei.value.code == "unsupported_feature" and "logit_bias" in ei.value.message
    with pytest.raises(GatewayError) as ei:
        gm.request_to_wire(
            _req([Message(role="user", content=[{"type": "input_audio", "input_audio": {}}])]), DEP
        )
    assert ei.value.code == "unsupported_feature"


def test_urls():
    assert gm.base_url(DEP) == "http://sim/v1beta"
    assert (
        gm.base_url(Deployment(id="g", model="m", provider="gemini"))
        == "https://generativelanguage.googleapis.com/v1beta"
    )
    assert (
        gm.base_url(Deployment(id="g", model="m", provider="gemini", api_base="https://x/v1"))
        == "https://x/v1"
    )
    assert gm.auth_headers(DEP)["x-goog-api-key"] == "k"


def test_response():
    body = orjson.dumps({
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "plan", "thought": True}, {"text": "Hi"}]},
             "finishReason": "STOP", "index": 0},
            {"content": {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"a": 1}},
                                                     "thoughtSignature": "sig"}]},
             "finishReason": "STOP", "index": 1},
            {"content": {"role": "model", "parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS", "index": 2},
        ],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 10, "thoughtsTokenCount": 6,
                          "cachedContentTokenCount": 30, "toolUsePromptTokenCount": 2, "totalTokenCount": 58},
        "modelVersion": "gemini-x", "responseId": "r1",
    })  # fmt: skip
    resp = gm.response_from_wire(body)
    c0, c1, c2 = resp.choices
    assert c0.message.content == "Hi" and c0.message.reasoning == "plan" and c0.finish_reason == "stop"
    call = c1.message.tool_calls[0]
    assert c1.finish_reason == "tool_calls" and c1.message.content is None
    assert call["id"].startswith("call_") and call["function"] == {"name": "w", "arguments": '{"a":1}'}
    assert call["extra_content"] == {"google": {"thought_signature": "sig"}}
    assert c2.finish_reason == "length"
    assert resp.usage == Usage(input_tokens=42, output_tokens=16, cached_tokens=30, reasoning_tokens=6)
    assert resp.id == "r1" and resp.model == "gemini-x"


def test_blocked_prompt():
    resp = gm.response_from_wire(orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert resp.choices[0].finish_reason == "content_filter"


def _feed(tr: gm.StreamTranslator, *events: dict[str, Any]) -> list[ChatChunk]:
    out: list[ChatChunk] = []
    for e in events:
        out += tr.feed(orjson.dumps(e))
    return out


def test_stream_translation():
    tr = gm.StreamTranslator()
    usage = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}
    chunks = _feed(
        tr,
        {
            "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 9},
            "responseId": "r",
            "modelVersion": "g",
        },
        {"candidates": [{"content": {"parts": [{"text": "lo"}], "role": "model"}, "index": 0}]},
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": {"name": "w", "args": {}}}], "role": "model"},
                    "index": 0,
                }
            ]
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": usage,
        },
    )
    chunks += tr.finish()
    d = [c.choices[0] if c.choices else None for c in chunks]
    assert d[0].role == "assistant" and d[0].content == "Hel" and chunks[0].id == "r"
    assert d[1].content == "lo" and d[1].role is None
    assert d[2].tool_calls[0]["index"] == 0 and d[2].tool_calls[0]["function"]["name"] == "w"
    assert d[3].finish_reason == "tool_calls"
    assert d[4] is None and chunks[4].usage == Usage(input_tokens=9, output_tokens=4)


def test_stream_without_usage_has_no_usage_chunk():
    tr = gm.StreamTranslator()
    _feed(tr, {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP", "index": 0}]})
    tail = tr.finish()
    assert len(tail) == 1 and tail[0].usage is None


def test_stream_cut_before_finish_is_an_error():
    tr = gm.StreamTranslator()
    _feed(tr, {"candidates": [{"content": {"parts": [{"text": "x"}]}, "index": 0}]})
    with pytest.raises(UpstreamError) as ei:
        tr.finish()
    assert ei.value.status == 502
