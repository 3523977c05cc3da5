"""Our OpenAI-dialect responses against OpenAI's own OpenAPI spec, whatever provider answers behind the gateway.

Bodies are taken raw off the wire (not through an SDK, which would forgive) and validated with ``jsonschema``
against ``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse`` (every SSE chunk),
``CreateEmbeddingResponse`` and ``ErrorResponse`` from ``shared/corpora/openai-openapi/openapi.yaml``.

Spec quirks handled (the file says OpenAPI 3.1 but is not pure JSON Schema 2020-12):
- ``nullable: true`` (an OpenAPI 3.0 keyword) still appears 111 times, also next to ``enum`` and ``$ref``
  (``finish_reason``, ``usage`` on stream chunks); JSON Schema ignores it, which would reject the ``null`` values
  OpenAI itself sends. Every such node becomes ``anyOf: [node, {type: null}]``.
- ``$ref`` points into ``#/components/schemas``; the whole spec is registered as one resource so the references
  resolve inside it, with ``$ref`` siblings evaluated as 2020-12 does.
- ``x-*`` extensions, ``discriminator`` and ``format: unixtime`` are annotations to a validator and are ignored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from functools import cache
from typing import Any

import pytest
import yaml

from tests.conftest import CORPORA, KEY_A, base_config

SPEC_PATH = CORPORA / "openai-openapi" / "openapi.yaml"
PROVIDERS = ["openai", "azure", "anthropic", "gemini", "bedrock"]
# Responses calls also to an OpenAI-compatible deployment reached through its own /v1/responses
RESPONSES_PROVIDERS = [*PROVIDERS, "openai-native"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.exists(),
    reason=f"OpenAI spec not found at {SPEC_PATH} (shared/corpora/openai-openapi is absent)",
)


def _fix_nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_fix_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _fix_nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _load_spec()
    registry = Registry().with_resource("urn:openai-spec", Resource(contents=spec, specification=DRAFT202012))
    schema = {"$ref": f"urn:openai-spec#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _load_spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as f:
        return _fix_nullable(yaml.load(f, Loader=loader))


@cache
def event_schemas() -> dict[str, str]:
    """Responses stream event type → the name of its schema (the members of ``ResponseStreamEvent``)."""
    spec = _load_spec()["components"]["schemas"]
    out = {}
    for ref in spec["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        for kind in spec[name]["properties"]["type"].get("enum", ()):
            out[kind] = name
    return out


def check_event(event: dict[str, Any]) -> None:
    """One Responses stream event against its own schema (the union's error would not say what is wrong)."""
    name = event_schemas().get(event.get("type", ""))
    assert name is not None, f"{event.get('type')!r} is not a Responses stream event type"
    check(name, event)


def check(name: str, instance: Any) -> None:
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


# ---------------------------------------------------------------- rig


@pytest.fixture(scope="module")
def cgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    for p in RESPONSES_PROVIDERS:
        dep: dict[str, Any] = {
            "id": f"{p}-1",
            "provider": p,
            "model": f"spec-{p}",
            "api_base": simulator.url,
            "api_key": "k",
        }
        if p == "openai-native":
            dep["provider"], dep["responses_api"] = "openai", "native"
        if dep["provider"] == "openai":
            dep["api_base"] = simulator.url + "/v1"
        if p == "bedrock":
            dep["aws"] = {"access_key_id": "AKIDSPEC", "secret_access_key": "spec-secret"}
        cfg["models"][p] = {"deployments": [dep]}
        # one 429 group per dialect under test: a 429 cools its deployment down for the rest of the module
        for g in (f"{p}-429", f"{p}-429-responses"):
            cfg["models"][g] = {"max_attempts": 1, "deployments": [{**dep, "id": g, "model": f"spec-{g}"}]}
        cfg["models"][f"{p}-drop"] = {
            "max_attempts": 1,
            "deployments": [{**dep, "id": f"{p}-drop", "model": f"spec-{p}-drop"}],
        }
    return start_gateway(cfg)


def post(url: str, body: dict[str, Any], key: str = KEY_A) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sse_data(raw: bytes) -> list[Any]:
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


# ---------------------------------------------------------------- responses


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_chat_completion(cgw, provider, tools):
    body: dict[str, Any] = {
        "model": provider,
        "messages": [{"role": "user", "content": "Weather in Paris? Use the tool."}],
    }
    if tools:
        body.update(tools=TOOLS, tool_choice="required")
    status, raw = post(cgw.base_url + "/chat/completions", body)
    assert status == 200, raw
    doc = json.loads(raw)
    check("CreateChatCompletionResponse", doc)
    assert (doc["choices"][0]["message"].get("tool_calls") is not None) == tools


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_stream_chunks(cgw, provider, tools):
    body: dict[str, Any] = {
        "model": provider,
        "messages": [{"role": "user", "content": "Weather in Paris? Use the tool."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body.update(tools=TOOLS, tool_choice="required")
    status, raw = post(cgw.base_url + "/chat/completions", body)
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    chunks = sse_data(raw)
    assert len(chunks) >= 3
    for c in chunks:
        check("CreateChatCompletionStreamResponse", c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_embeddings(cgw):
    status, raw = post(cgw.base_url + "/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]})
    assert status == 200
    check("CreateEmbeddingResponse", json.loads(raw))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("path", "body", "key", "status"),
    [
        (
            "/chat/completions",
            {"model": "openai", "messages": [{"role": "user", "content": "x"}]},
            "gw-wrong",
            401,
        ),
        ("/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, KEY_A, 404),
        ("/chat/completions", {"model": "openai", "messages": []}, KEY_A, 400),
        (
            "/chat/completions",
            {"model": "anthropic", "messages": [{"role": "user", "content": "x"}], "n": 3},
            KEY_A,
            400,
        ),
        ("/embeddings", {"model": "anthropic", "input": "x"}, KEY_A, 400),
    ],
)
def test_gateway_errors(cgw, path, body, key, status):
    got, raw = post(cgw.base_url + path, body, key)
    assert got == status
    check("ErrorResponse", json.loads(raw))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_errors(cgw, provider):
    body = {"model": f"{provider}-429", "messages": [{"role": "user", "content": "x [[sim:fail=429]]"}]}
    status, raw = post(cgw.base_url + "/chat/completions", body)
    assert status == 429
    check("ErrorResponse", json.loads(raw))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_inside_a_stream(cgw, provider):
    body = {
        "model": f"{provider}-drop",
        "messages": [
            {
                "role": "user",
                "content": "x [[sim:fail=drop]] [[sim:drop_after=3]] [[sim:tps=100]] [[sim:output_tokens=100]]",
            }
        ],
        "stream": True,
    }
    status, raw = post(cgw.base_url + "/chat/completions", body)
    assert status == 200
    events = sse_data(raw)
    *chunks, last = events
    assert chunks and "error" in last
    for c in chunks:
        check("CreateChatCompletionStreamResponse", c)
    check("ErrorResponse", last)


def test_the_harness_rejects_what_openai_would_not_send():
    """Guard against a vacuous validator (a $ref that resolves to nothing accepts everything)."""
    good = {
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "hi", "refusal": None}}],
    }  # fmt: skip
    check("CreateChatCompletionResponse", good)
    bad_finish = {**good, "choices": [{**good["choices"][0], "finish_reason": "done"}]}
    missing_object = {k: v for k, v in good.items() if k != "object"}
    for bad in (bad_finish, missing_object):
        assert list(validator("CreateChatCompletionResponse").iter_errors(bad))
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "usage": None,
        "choices": [{"index": 0, "delta": {}, "finish_reason": None}],
    }
    check("CreateChatCompletionStreamResponse", chunk)  # the nullable fix: null usage and finish_reason pass
    assert list(validator("ErrorResponse").iter_errors({"error": {"message": "m"}}))


# ---------------------------------------------------------------- the Responses API

RESPONSE_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        **{k: v for k, v in TOOLS[0]["function"].items() if k != "name"},
        "strict": False,
    }
]


def sse_events(raw: bytes) -> list[Any]:
    """Responses SSE: every block is ``event: <type>`` + ``data: <json>`` with the same type."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event = json.loads(lines[1][6:])
        assert lines[0][7:] == event["type"]
        out.append(event)
    return out


@pytest.mark.parametrize("provider", RESPONSES_PROVIDERS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_response_object(cgw, provider, tools):
    body: dict[str, Any] = {
        "model": provider,
        "input": "Weather in Paris? Use the tool.",
        "instructions": "x",
    }
    if tools:
        body.update(tools=RESPONSE_TOOLS, tool_choice="required")
    status, raw = post(cgw.base_url + "/responses", body)
    assert status == 200, raw
    doc = json.loads(raw)
    check("Response", doc)
    assert any(i["type"] == "function_call" for i in doc["output"]) == tools


@pytest.mark.parametrize("provider", RESPONSES_PROVIDERS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_response_stream_events(cgw, provider, tools):
    body: dict[str, Any] = {"model": provider, "input": "Weather in Paris? Use the tool.", "stream": True}
    if tools:
        body.update(tools=RESPONSE_TOOLS, tool_choice="required")
    status, raw = post(cgw.base_url + "/responses", body)
    assert status == 200
    events = sse_events(raw)
    for e in events:
        check_event(e)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("provider", RESPONSES_PROVIDERS)
def test_response_errors(cgw, provider):
    status, raw = post(
        cgw.base_url + "/responses", {"model": f"{provider}-429-responses", "input": "x [[sim:fail=429]]"}
    )
    assert status == 429
    check("ErrorResponse", json.loads(raw))
    body = {
        "model": f"{provider}-drop",
        "input": "x [[sim:fail=drop]] [[sim:drop_after=3]] [[sim:tps=100]] [[sim:output_tokens=100]]",
        "stream": True,
    }
    status, raw = post(cgw.base_url + "/responses", body)
    assert status == 200
    events = sse_events(raw)
    for e in events:
        check_event(e)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["message"]


def test_response_gateway_errors(cgw):
    for body, want in (
        ({"model": "openai", "input": "x", "tools": [{"type": "file_search"}]}, 400),
        ({"model": "nope", "input": "x"}, 404),
        ({"model": "openai", "input": "x", "previous_response_id": "resp_unknown"}, 404),
    ):
        status, raw = post(cgw.base_url + "/responses", body)
        assert status == want
        check("ErrorResponse", json.loads(raw))
