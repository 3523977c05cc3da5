"""Provider breadth end to end: the official ``openai`` SDK → the gateway → Anthropic, Gemini, Bedrock and Azure
OpenAI deployments on the simulator. The SDK sees OpenAI's shapes whatever answers behind the gateway."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import PY, ROOT, Sim, base_config, free_port, stop, wait_http

AWS = {
    "access_key_id": "AKIDSIMULATOR0000001",
    "secret_access_key": "sim/secret+key/0000000000000000000000000",
}
PROVIDERS = ["anthropic", "gemini", "bedrock", "azure"]
UPSTREAM = {
    "anthropic": "claude-3-5-sonnet-20241022",
    "gemini": "gemini-2.5-flash",
    "bedrock": "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "azure": "gpt-4o-azure-dep",
}
USER = [{"role": "user", "content": "Say hello."}]
TOOLS = [
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
FAULTS = ["429", "400", "drop", "malformed"]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def deployment(provider: str, model: str, url: str, dep_id: str, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"id": dep_id, "provider": provider, "model": model, "api_base": url, **kw}
    if provider == "bedrock":
        d.setdefault("aws", AWS)
        d.setdefault("region", "us-east-1")
    else:
        d.setdefault("api_key", f"sim-{provider}-key")
    if provider == "azure":
        d.setdefault("api_version", "2024-10-21")
    return d


@pytest.fixture(scope="module")
def pgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    for p in PROVIDERS:
        cfg["models"][p] = {"deployments": [deployment(p, UPSTREAM[p], simulator.url, f"{p}-1")]}
        for fault in FAULTS:  # one group per fault, so a cooldown after one never leaks into another test
            cfg["models"][f"{p}-{fault}"] = {
                "max_attempts": 1,
                "deployments": [deployment(p, f"{p}-{fault}-model", simulator.url, f"{p}-{fault}")],
            }
    return start_gateway(cfg)


def last_upstream(simulator: Sim, model: str) -> dict[str, Any]:
    return simulator.get(f"/_sim/last?model={model}")


# ---------------------------------------------------------------- chat, streams, tools


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_stream(pgw, provider):
    raw = pgw.openai().chat.completions.with_raw_response.create(model=provider, messages=USER)
    resp = raw.parse()
    assert isinstance(resp, openai.types.chat.ChatCompletion)
    msg = resp.choices[0].message
    assert msg.role == "assistant" and msg.content and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert raw.headers["x-gateway-provider"] == provider
    rec = pgw.record(raw.headers["x-gateway-request-id"])
    assert rec["provider"] == provider and rec["upstream_model"] == UPSTREAM[provider]
    assert (
        rec["input_tokens"] == resp.usage.prompt_tokens
        and rec["output_tokens"] == resp.usage.completion_tokens
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_matches_non_stream(pgw, provider):
    client = pgw.openai()
    msgs = [{"role": "user", "content": "Exactly this. [[sim:output=alpha beta gamma delta epsilon]]"}]
    whole = client.chat.completions.create(model=provider, messages=msgs)
    chunks = list(
        client.chat.completions.create(
            model=provider, messages=msgs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == "alpha beta gamma delta epsilon"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_without_usage_request(pgw, provider):
    raw = pgw.openai().chat.completions.with_raw_response.create(model=provider, messages=USER, stream=True)
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    rec = pgw.record(raw.headers["x-gateway-request-id"])
    assert rec["stream"] is True and rec["output_tokens"] > 0 and rec["usage_estimated"] is False


@pytest.mark.parametrize("provider", ["gemini", "bedrock", "azure"])  # Anthropic streams always carry usage
def test_stream_without_upstream_usage_is_counted(pgw, provider):
    raw = pgw.openai().chat.completions.with_raw_response.create(
        model=provider,
        messages=[{"role": "user", "content": "Count me. [[sim:no_usage]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    rec = pgw.record(raw.headers["x-gateway-request-id"])
    assert rec["usage_estimated"] is True and rec["input_tokens"] > 0 and rec["output_tokens"] > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools(pgw, provider):
    client = pgw.openai()
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Paris? Use the tool."}]
    resp = client.chat.completions.create(model=provider, messages=msgs, tools=TOOLS, tool_choice="required")
    assert resp.choices[0].finish_reason == "tool_calls"
    call = resp.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)

    chunks = list(
        client.chat.completions.create(
            model=provider,
            messages=msgs,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert "city" in json.loads("".join(d.function.arguments or "" for d in deltas))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]

    follow = client.chat.completions.create(
        model=provider,
        messages=[
            *msgs,
            resp.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
        tools=TOOLS,
    )
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content


def test_sdk_stream_helper_accumulates_tool_calls(pgw):
    """openai's ``chat.completions.stream`` helper rebuilds the final message from our deltas (Bedrock's framing)."""
    with pgw.openai().chat.completions.stream(
        model="bedrock",
        messages=[{"role": "user", "content": "Weather in Rome? Use the tool."}],
        tools=TOOLS,
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)


# ---------------------------------------------------------------- what each upstream receives


def test_azure_url_version_and_key(pgw, simulator):
    pgw.openai().chat.completions.create(model="azure", messages=USER)
    last = last_upstream(simulator, UPSTREAM["azure"])
    assert last["path"] == f"/openai/deployments/{UPSTREAM['azure']}/chat/completions"
    assert "api-version=2024-10-21" in last["query"]
    assert last["headers"]["api-key"] == "sim-azure-key" and "authorization" not in last["headers"]


def test_anthropic_wire(pgw, simulator):
    pgw.openai().chat.completions.create(
        model="anthropic",
        messages=[{"role": "system", "content": "Be brief."}, *USER],
        stop="END",
        user="u-1",
        parallel_tool_calls=False,
        tools=TOOLS,
    )
    last = last_upstream(simulator, UPSTREAM["anthropic"])
    h, body = last["headers"], last["body"]
    assert h["x-api-key"] == "sim-anthropic-key" and h["anthropic-version"] == "2023-06-01"
    assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": "Say hello."}]
    assert body["max_tokens"] == 4096  # Anthropic needs one; the documented default
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u-1"}
    assert body["tools"][0]["input_schema"]["required"] == ["city"]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_gemini_wire_and_structured_output(pgw, simulator):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    resp = pgw.openai().chat.completions.create(
        model="gemini",
        messages=[
            {"role": "system", "content": "Answer in JSON."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Who?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
        max_tokens=100,
        temperature=0.2,
        seed=3,
    )
    doc = json.loads(resp.choices[0].message.content)
    assert set(doc) == {"name", "age"}
    last = last_upstream(simulator, UPSTREAM["gemini"])
    body = last["body"]
    assert last["headers"]["x-goog-api-key"] == "sim-gemini-key"
    assert last["path"] == f"/v1beta/models/{UPSTREAM['gemini']}:generateContent"
    assert body["systemInstruction"] == {"parts": [{"text": "Answer in JSON."}]}
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    gen = body["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and gen["responseJsonSchema"] == schema
    assert gen["maxOutputTokens"] == 100 and gen["temperature"] == 0.2 and gen["seed"] == 3


def test_gemini_n_candidates(pgw):
    resp = pgw.openai().chat.completions.create(model="gemini", messages=USER, n=2)
    assert [c.index for c in resp.choices] == [0, 1]
    chunks = list(pgw.openai().chat.completions.create(model="gemini", messages=USER, n=2, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_bedrock_wire_is_sigv4_signed(pgw, simulator):
    pgw.openai().chat.completions.create(
        model="bedrock",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
        max_tokens=77,
    )
    last = last_upstream(simulator, UPSTREAM["bedrock"])
    h, body = last["headers"], last["body"]
    assert h["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS['access_key_id']}/")
    assert "/us-east-1/bedrock/aws4_request" in h["authorization"] and h["x-amz-date"].endswith("Z")
    assert AWS["secret_access_key"] not in json.dumps(last)
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert body["inferenceConfig"] == {"maxTokens": 77}


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "azure"])
def test_n_above_one_is_refused_where_unsupported(pgw, provider):
    if provider == "azure":
        assert len(pgw.openai().chat.completions.create(model=provider, messages=USER, n=2).choices) == 2
        return
    with pytest.raises(openai.BadRequestError) as ei:
        pgw.openai().chat.completions.create(model=provider, messages=USER, n=2)
    assert ei.value.body["code"] == "unsupported_feature" and f"{provider}-1" in ei.value.body["message"]


def test_unknown_extra_is_refused_not_dropped(pgw):
    with pytest.raises(openai.BadRequestError) as ei:
        pgw.openai().chat.completions.create(model="anthropic", messages=USER, logit_bias={"50256": -100})
    assert ei.value.body["code"] == "unsupported_feature" and "logit_bias" in ei.value.body["message"]


def test_bedrock_refuses_image_urls(pgw):
    with pytest.raises(openai.BadRequestError) as ei:
        pgw.openai().chat.completions.create(
            model="bedrock",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
            ],
        )
    assert ei.value.body["code"] == "unsupported_feature"


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_429_is_rate_limit(pgw, provider):
    with pytest.raises(openai.RateLimitError) as ei:
        pgw.openai().chat.completions.create(
            model=f"{provider}-429", messages=[{"role": "user", "content": "hi [[sim:fail=429]]"}]
        )
    assert ei.value.body["code"] == "upstream_rate_limited"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_400_passes_through(pgw, provider):
    with pytest.raises(openai.BadRequestError) as ei:
        pgw.openai().chat.completions.create(
            model=f"{provider}-400", messages=[{"role": "user", "content": "hi [[sim:fail=400]]"}]
        )
    assert ei.value.body["code"] == "invalid_request"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_broken_after_first_chunk(pgw, provider):
    # Paced (tps) so the first chunks are read before the cut: a body cut at once can reach aiohttp together with
    # the reset, which then fails the stream before its first chunk (and the router would fail over instead).
    msgs = [
        {
            "role": "user",
            "content": "Long. [[sim:fail=drop]] [[sim:drop_after=3]] [[sim:tps=100]] [[sim:output_tokens=200]]",
        }
    ]
    got: list[Any] = []
    with pytest.raises(openai.APIError):
        for c in pgw.openai().chat.completions.create(model=f"{provider}-drop", messages=msgs, stream=True):
            got.append(c)
    assert got  # the failure came after the first chunk, so it arrived as the stream's last event


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_stream_is_an_error(pgw, provider):
    msgs = [{"role": "user", "content": "hi [[sim:fail=malformed]]"}]
    with pytest.raises(openai.APIError):
        list(pgw.openai().chat.completions.create(model=f"{provider}-malformed", messages=msgs, stream=True))


# ---------------------------------------------------------------- SigV4 verified by the simulator


@pytest.fixture(scope="module")
def verifying_sim(tmp_path_factory) -> Iterator[Sim]:
    """A simulator that checks every Bedrock signature with the secret (the default one only checks its shape)."""
    profile = tmp_path_factory.mktemp("sim") / "profile.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "bedrock": {
                    "verify_secret_key": AWS["secret_access_key"],
                    "access_key_id": AWS["access_key_id"],
                }
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "simulate", "--port", str(port), "--profile", str(profile)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    yield Sim(url, proc)
    stop(proc)


def test_sigv4_signature_verified(verifying_sim, start_gateway, tmp_path_factory):
    cfg = base_config(verifying_sim.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["models"]["signed"] = {
        "deployments": [deployment("bedrock", "amazon.nova-pro-v1:0", verifying_sim.url, "signed-1")]
    }
    wrong = {**AWS, "secret_access_key": "not-the-secret"}
    cfg["models"]["badly-signed"] = {
        "max_attempts": 1,
        "deployments": [
            deployment("bedrock", "amazon.nova-lite-v1:0", verifying_sim.url, "bad-1", aws=wrong)
        ],
    }
    gw = start_gateway(cfg)
    client = gw.openai()
    assert client.chat.completions.create(model="signed", messages=USER).choices[0].message.content
    assert "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="signed", messages=USER, stream=True)
        if c.choices
    )
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model="badly-signed", messages=USER)
    assert ei.value.status_code == 502 and "credentials" in ei.value.body["message"]
    assert "not-the-secret" not in json.dumps(ei.value.body)
