"""The OpenAI dialect end to end: the official ``openai`` SDK → the gateway (real Granian process) → the simulator."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.conftest import KEY_A, KEY_LIMITED, base_config

USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def egw(simulator, start_gateway, tmp_path_factory):
    """A gateway with one-deployment groups for each upstream failure (so a cooldown never leaks across tests)."""
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    v1 = simulator.url + "/v1"
    for name in ("err-429", "err-500", "err-503", "err-malformed", "err-timeout", "err-400", "err-echo"):
        cfg["models"][name] = {
            "max_attempts": 1,
            "deployments": [
                {"id": name, "model": name, "api_base": v1, "api_key": "sim-secret-zzz", "timeout_s": 1.0}
            ],
        }
    return start_gateway(cfg)


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


# ---------------------------------------------------------------- success paths


def test_chat_non_stream(gw):
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    resp = raw.parse()
    assert isinstance(resp, openai.types.chat.ChatCompletion)
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    h = raw.headers
    assert h["x-gateway-model"] == "mini-a"
    assert h["x-gateway-provider"] == "openai"
    assert h["x-gateway-cache"] == "off"
    assert int(h["x-gateway-tokens-input"]) == resp.usage.prompt_tokens
    assert int(h["x-gateway-tokens-output"]) == resp.usage.completion_tokens
    expected_cost = (resp.usage.prompt_tokens * 0.15 + resp.usage.completion_tokens * 0.6) / 1e6
    assert float(h["x-gateway-cost-usd"]) == pytest.approx(expected_cost, rel=1e-6)
    assert float(h["x-gateway-overhead-ms"]) >= 0 and float(h["x-gateway-upstream-ms"]) > 0
    rec = gw.record(h["x-gateway-request-id"])
    assert rec["status"] == 200 and rec["tenant"] == "tenant-a" and rec["team"] == "team-1"
    assert rec["model_requested"] == "gpt-4o-mini" and rec["model_served"] == "mini-a"
    assert rec["input_tokens"] == resp.usage.prompt_tokens
    assert rec["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)


def test_chat_stream_with_usage(gw):
    client = gw.openai()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.usage is not None) == 1
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_chat_stream_without_usage_request_gets_no_usage_chunk(gw):
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER, stream=True)
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    # ... but the record still has the usage the gateway asked the upstream for
    rid = raw.headers["x-gateway-request-id"]
    rec = gw.record(rid)
    assert rec["stream"] is True and rec["output_tokens"] > 0 and rec["usage_estimated"] is False


def test_stream_without_upstream_usage_is_counted(gw):
    client = gw.openai()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Count me. [[sim:no_usage]]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_tools_non_stream_and_stream(gw):
    client = gw.openai()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    msgs = [{"role": "user", "content": "What's the weather in Paris? Use the tool."}]
    resp = client.chat.completions.create(
        model="gpt-4o-mini", messages=msgs, tools=tools, tool_choice="required"
    )
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=msgs, tools=tools, tool_choice="required", stream=True
        )
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
    )
    assert "city" in json.loads(args)

    # a tool result goes back in and the model answers
    follow = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            *msgs,
            resp.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
        tools=tools,
    )
    assert follow.choices[0].message.content


def test_request_options_pass_through(gw, simulator):
    client = gw.openai()
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        n=2,
        stop=["\n\n"],
        seed=7,
        user="u-42",
        temperature=0.3,
        response_format={"type": "json_object"},
        extra_body={"top_k": 5},
    )
    last = simulator.get("/_sim/last?model=gpt-4o-mini")
    body = last.get("body", last)
    assert body["n"] == 2 and body["seed"] == 7 and body["user"] == "u-42" and body["top_k"] == 5
    assert body["stop"] == ["\n\n"] and body["response_format"] == {"type": "json_object"}
    assert body["model"] == "gpt-4o-mini"


def test_alias_resolves_to_group(gw):
    resp = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-2024-08-06", messages=USER)
    assert resp.headers["x-gateway-model"] == "4o-a"


def test_embeddings(gw):
    client = gw.openai()
    resp = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=8)
    assert isinstance(resp, openai.types.CreateEmbeddingResponse)
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 8
    assert resp.usage.prompt_tokens > 0
    again = client.embeddings.create(model="text-embedding-3-small", input=["a"], dimensions=8)
    assert again.data[0].embedding == resp.data[0].embedding  # deterministic upstream, passed through exactly


def test_models_lists_only_allowed(gw):
    all_models = {m.id for m in gw.openai().models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= all_models
    limited = {m.id for m in gw.openai(KEY_LIMITED).models.list()}
    assert limited == {"gpt-4o-mini"}


def test_health_endpoints(gw):
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(gw.url + path, timeout=5) as r:
            assert r.status == 200


# ---------------------------------------------------------------- errors in OpenAI's shape


def test_invalid_json(gw):
    status, _, body = raw_post(
        gw.base_url + "/chat/completions",
        b'{"model": "gpt-4o-mini", "messages": [',
        {"authorization": f"Bearer {KEY_A}"},
    )
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert body["error"]["type"] == "invalid_request_error"


def test_schema_violation_names_the_field(gw):
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens="lots")  # type: ignore[arg-type]
    assert e.value.code == "invalid_request" and e.value.param == "max_tokens"
    assert "max_tokens" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"content": "no role"}])  # type: ignore[list-item]
    assert e.value.param == "messages[0]"
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[])
    assert e.value.param == "messages"


def test_body_too_large(gw):
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 1_200_000}]
        )
    assert e.value.status_code == 413 and e.value.code == "body_too_large"


def test_missing_and_bad_key(gw):
    status, _, body = raw_post(
        gw.base_url + "/chat/completions", json.dumps({"model": "gpt-4o-mini"}).encode()
    )
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai("gw-not-a-real-key").chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert e.value.code == "invalid_api_key"


def test_model_not_allowed_and_unknown(gw):
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai(KEY_LIMITED).chat.completions.create(model="gpt-4o", messages=USER)
    assert e.value.code == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as e:
        gw.openai().chat.completions.create(model="no-such-model", messages=USER)
    assert e.value.code == "model_not_found" and "/v1/models" in e.value.message


@pytest.mark.parametrize(
    ("model", "directive", "exc", "status", "code"),
    [
        (
            "err-429",
            "[[sim:fail=429]] [[sim:retry_after=7]]",
            openai.RateLimitError,
            429,
            "upstream_rate_limited",
        ),
        ("err-500", "[[sim:fail=500]]", openai.InternalServerError, 502, "upstream_error"),
        ("err-503", "[[sim:fail=503]]", openai.InternalServerError, 503, "upstream_unavailable"),
        ("err-malformed", "[[sim:fail=malformed]]", openai.InternalServerError, 502, "upstream_bad_response"),
        ("err-timeout", "[[sim:latency_ms=3000]]", openai.InternalServerError, 504, "upstream_timeout"),
    ],
)
def test_upstream_errors_are_mapped(egw, model, directive, exc, status, code):
    with pytest.raises(exc) as e:
        egw.openai().chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"hi {directive}"}]
        )
    assert e.value.status_code == status and e.value.code == code
    assert "sim-secret" not in e.value.message  # provider credentials never leak
    if status == 429:
        assert e.value.response.headers["retry-after"] == "7"
    rec = egw.record(e.value.response.headers["x-gateway-request-id"])
    assert rec["status"] == status and rec["error_code"] == code


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_key_quoted_by_the_upstream_is_scrubbed(egw, stream):
    with pytest.raises(openai.InternalServerError) as e:
        egw.openai().chat.completions.create(
            model="err-echo",
            messages=[{"role": "user", "content": "hi [[sim:fail=500]] [[sim:echo_key]]"}],
            stream=stream,
        )
    assert "Request was made with key ***" in e.value.message  # the upstream did quote it
    assert "sim-secret" not in e.value.message
    rec = egw.record(e.value.response.headers["x-gateway-request-id"])
    assert "sim-secret" not in (rec["error_message"] or "")


def test_upstream_4xx_passes_through_as_caller_error(egw):
    with pytest.raises(openai.BadRequestError) as e:
        egw.openai().chat.completions.create(
            model="err-400", messages=[{"role": "user", "content": "[[sim:fail=400]]"}]
        )
    assert e.value.status_code == 400 and "provider rejected" in e.value.message


def test_unknown_route_is_openai_shaped_404(gw):
    status, _, body = raw_post(gw.url + "/v1/nope", b"{}", {"authorization": f"Bearer {KEY_A}"})
    assert status == 404 and body["error"]["code"] == "not_found"


def test_every_request_has_a_record_even_errors(egw):
    ids = {}
    with pytest.raises(openai.NotFoundError) as e:
        egw.openai().chat.completions.create(model="nope", messages=USER)
    ids[404] = e.value.response.headers["x-gateway-request-id"]
    with pytest.raises(openai.AuthenticationError) as e:
        egw.openai("bad").chat.completions.create(model="gpt-4o-mini", messages=USER)
    ids[401] = e.value.response.headers["x-gateway-request-id"]
    ok = egw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    ids[200] = ok.headers["x-gateway-request-id"]
    for status, rid in ids.items():
        rec = egw.record(rid)
        assert rec["status"] == status
    assert egw.record(ids[401])["key_id"] is None  # a bad key is recorded, never resolved to a caller


def test_aiohttp_upstream_client_serves_the_same(simulator, start_gateway, tmp_path_factory):
    """``server.http_client: aiohttp`` (the pure-asyncio alternative to reqwest) passes the same basics."""
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["server"]["http_client"] = "aiohttp"
    cfg["models"]["err-503"] = {
        "max_attempts": 1,
        "deployments": [{"id": "e", "model": "e", "api_base": simulator.url + "/v1", "api_key": "k"}],
    }
    client = start_gateway(cfg).openai()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=USER).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="err-503", messages=[{"role": "user", "content": "[[sim:fail=503]]"}]
        )
    assert e.value.code == "upstream_unavailable"
