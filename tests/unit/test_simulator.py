"""The provider simulator over real HTTP: a subprocess (``python -m gateway.simulate``) hit with the official
``openai`` and ``anthropic`` SDKs. Behaviour only, no timing assertions."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.procs import free_port, stop

try:  # newer SDKs ship their own httpx fork
    import httpx2

    DROP_ERRORS: tuple[type[BaseException], ...] = (
        httpx.HTTPError,
        httpx2.HTTPError,
        openai.APIError,
        anthropic.APIError,
    )
except ImportError:  # pragma: no cover
    DROP_ERRORS = (httpx.HTTPError, openai.APIError, anthropic.APIError)

ROOT = Path(__file__).resolve().parents[2]
PYDIR = ROOT / "python"

PROFILE = """
seed: 7
bedrock:
  verify_secret_key: sim-test-secret
  access_key_id: AKIDSIMTEST
models:
  "paced-*": {ttft_ms: 2, tokens_per_s: 5000}
  quality-model: {quality: {code: 0.9, math: 0.5}}
  usage-model: {cached_tokens: 5, reasoning_tokens: 3}
  emb-small: {embedding_dim: 64}
  flaky: {rate_500: 1.0}
  echo-model: {echo: true}
  tiny-context: {context_window: 10}
  long-model: {output_tokens: 60}
"""


def start_simulator(tmp: Path, profile: str | None = None, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "gateway.simulate", "--port", str(port), "--workers", str(workers)]
    if profile is not None:
        p = tmp / "sim-profile.yaml"
        p.write_text(profile)
        cmd += ["--profile", str(p)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PYDIR), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    return proc, url


def stop_simulator(proc: subprocess.Popen) -> None:
    stop(proc)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_simulator(tmp_path_factory.mktemp("sim"), PROFILE)
    yield url
    stop_simulator(proc)


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def oai(sim: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim + "/v1", api_key="sk-sim", max_retries=0, **kw)


def ant(sim: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim, api_key="sk-ant-sim", max_retries=0, **kw)


USER = [{"role": "user", "content": "Say hello."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 3},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
                "hours": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                "optional_note": {"type": "string"},
            },
            "required": ["city", "days", "unit", "detailed", "hours"],
        },
    },
}


# ------------------------------------------------------------------------------------------------ OpenAI


def test_chat_non_stream_shape_and_determinism(sim: str) -> None:
    c = oai(sim)
    r1 = c.chat.completions.create(model="gpt-4o-mini", messages=USER)
    r2 = c.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert isinstance(r1, openai.types.chat.ChatCompletion)
    assert r1.object == "chat.completion" and r1.model == "gpt-4o-mini"
    msg = r1.choices[0].message
    assert msg.role == "assistant" and msg.content and r1.choices[0].finish_reason == "stop"
    assert msg.content == r2.choices[0].message.content  # deterministic
    assert r1.id != r2.id
    u = r1.usage
    assert u is not None and u.prompt_tokens > 0 and u.completion_tokens == 20
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 0 and u.completion_tokens_details.reasoning_tokens == 0
    # the seed and the message change the output
    r3 = c.chat.completions.create(model="gpt-4o-mini", messages=USER, seed=42)
    assert r3.choices[0].message.content != msg.content
    r4 = c.chat.completions.create(model="gpt-4o-mini", messages=USER, seed=42)
    assert r4.choices[0].message.content == r3.choices[0].message.content


def test_chat_usage_profile_and_token_counting(sim: str) -> None:
    c = oai(sim)
    r = c.chat.completions.create(model="usage-model", messages=USER)
    assert r.usage.prompt_tokens_details.cached_tokens == 5
    assert r.usage.completion_tokens_details.reasoning_tokens == 3
    assert r.usage.completion_tokens == 20 + 3
    short = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "xxxx"}])
    long = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x" * 404}])
    assert long.usage.prompt_tokens - short.usage.prompt_tokens == 100  # ceil(chars / 4)


def test_chat_stream_with_include_usage(sim: str) -> None:
    c = oai(sim)
    full = c.chat.completions.create(model="gpt-4o", messages=USER)
    chunks = list(
        c.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_stream_without_usage_and_no_usage_override(sim: str) -> None:
    c = oai(sim)
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert all(ch.usage is None for ch in chunks) and chunks[-1].choices
    # asked for usage, but the simulator is told to omit it (header, then message directive)
    for kw in (
        {"extra_headers": {"x-sim-usage": "0"}, "messages": USER},
        {"messages": [{"role": "user", "content": "hello [[sim:no_usage]]"}]},
    ):
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o", stream=True, stream_options={"include_usage": True}, **kw
            )
        )
        assert all(ch.usage is None for ch in chunks)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def test_chat_stream_paced(sim: str) -> None:
    c = oai(sim)
    chunks = list(c.chat.completions.create(model="paced-model", messages=USER, stream=True))
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) == 20


def test_tool_call_non_stream_matches_schema(sim: str) -> None:
    c = oai(sim)
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    (call,) = ch.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])
    assert args["unit"] == "celsius" and "optional_note" not in args
    # no hint -> plain text; tool_choice="none" -> text; forced -> tool call
    plain = c.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content
    none = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None
    forced = c.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    # the tool result goes back: the model answers with text
    follow = c.chat.completions.create(
        model="gpt-4o",
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What's the weather in Paris?"},
            ch.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
    )
    assert follow.choices[0].message.content and follow.choices[0].finish_reason == "stop"


def test_tool_call_stream_deltas(sim: str) -> None:
    c = oai(sim)
    msgs = [{"role": "user", "content": "weather please"}]
    full = c.chat.completions.create(model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL])
    stream = c.chat.completions.create(model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL], stream=True)
    name, cid, args, finish = None, None, "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            assert tc.index == 0
            if tc.id:
                cid = tc.id
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    expected = full.choices[0].message.tool_calls[0]
    assert (name, cid, args) == (expected.function.name, expected.id, expected.function.arguments)
    assert finish == "tool_calls"
    # the SDK's stream helper reassembles the same call
    with c.chat.completions.stream(model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL]) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == expected.function.arguments


def test_tool_directive_and_parallel_calls(sim: str) -> None:
    c = oai(sim)
    other = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "go [[sim:tool=lookup]]"}],
        tools=[WEATHER_TOOL, other],
    )
    assert [t.function.name for t in r.choices[0].message.tool_calls] == ["lookup"]
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "call get_weather and lookup"}],
        tools=[WEATHER_TOOL, other],
    )
    assert [t.function.name for t in r.choices[0].message.tool_calls] == ["get_weather", "lookup"]


def test_n_choices_stop_and_max_tokens(sim: str) -> None:
    c = oai(sim)
    r = c.chat.completions.create(model="gpt-4o", messages=USER, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert len({ch.message.content for ch in r.choices}) == 3
    assert r.usage.completion_tokens == 60
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=USER, n=2, stream=True))
    texts = ["", ""]
    for ch in chunks:
        for choice in ch.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [r.choices[0].message.content, r.choices[1].message.content]
    # stop sequences are honoured (on an exact reply)
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "[[sim:output=alpha beta END gamma]]"}],
        stop=["END"],
    )
    assert r.choices[0].message.content == "alpha beta " and r.choices[0].finish_reason == "stop"
    # max_tokens clips -> finish_reason length
    r = c.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    r = c.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4


def test_response_format_json(sim: str) -> None:
    c = oai(sim)
    r = c.chat.completions.create(model="gpt-4o", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "score": {"type": "number", "exclusiveMaximum": 1, "exclusiveMinimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "address": {"$ref": "#/$defs/address"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
        },
        "required": ["name", "age", "score", "tags", "kind", "address", "maybe"],
        "additionalProperties": False,
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
                "required": ["street", "zip"],
                "additionalProperties": False,
            }
        },
    }
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    doc = json.loads(r.choices[0].message.content)
    jsonschema.validate(doc, schema)
    # [[sim:json=...]] replies with exactly that JSON (brackets inside are fine)
    r = c.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": 'x [[sim:json={"a": [[1]], "b": "]]"}]] y'}]
    )
    assert json.loads(r.choices[0].message.content) == {"a": [[1]], "b": "]]"}


def test_output_and_echo(sim: str) -> None:
    c = oai(sim)
    r = c.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers={"x-sim-output": "exactly this"}
    )
    assert r.choices[0].message.content == "exactly this"
    r = c.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a [[sim:output=hello <PERSON_1> there]]"}]
    )
    assert r.choices[0].message.content == "hello <PERSON_1> there"
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "#echo my name is <NAME_1>"},
    ]
    r = c.chat.completions.create(model="gpt-4o", messages=msgs)
    assert r.choices[0].message.content == "be brief\n#echo my name is <NAME_1>"
    r = c.chat.completions.create(
        model="echo-model", messages=[{"role": "user", "content": [{"type": "text", "text": "part one"}]}]
    )
    assert r.choices[0].message.content == "part one"
    chunks = list(c.chat.completions.create(model="echo-model", messages=USER, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Say hello."


def test_embeddings(sim: str) -> None:
    c = oai(sim)
    r = c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # SDK asks for base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 1536
    assert math.isclose(sum(x * x for x in r.data[0].embedding), 1.0, rel_tol=1e-4)
    assert r.data[0].embedding != r.data[1].embedding
    f = c.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, rel=1e-6)
    d = c.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8)
    assert len(d.data[0].embedding) == 8
    assert (
        c.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8).data[0].embedding
        == d.data[0].embedding
    )
    assert len(c.embeddings.create(model="emb-small", input="a").data[0].embedding) == 64
    t = c.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(t.data) == 2 and t.usage.prompt_tokens == 5


def test_models_endpoint(sim: str) -> None:
    ids = {m.id for m in oai(sim).models.list()}
    assert "quality-model" in ids and "flaky" in ids
    page = ant(sim).models.list()
    assert "quality-model" in {m.id for m in page.data}


def test_azure_url_form(sim: str) -> None:
    az = openai.AzureOpenAI(azure_endpoint=sim, api_key="az-key", api_version="2024-10-21", max_retries=0)
    r = az.chat.completions.create(model="my-deployment", messages=USER)
    assert r.model == "my-deployment" and r.choices[0].message.content
    e = az.embeddings.create(model="my-embed", input="hi", dimensions=4)
    assert len(e.data[0].embedding) == 4
    last = json.loads(http("GET", sim + "/_sim/last?model=my-embed")[2])
    assert last["headers"]["api-key"] == "az-key" and "api-version=2024-10-21" in last["query"]


def test_openai_errors(sim: str) -> None:
    c = oai(sim)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi [[sim:fail=429]] [[sim:retry_after=3]]"}],
        )
    assert e.value.response.headers["retry-after"] == "3" and e.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-sim-fail": "429"})
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-sim-fail": "500"})
    assert e.value.status_code == 500 and e.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-sim-fail": "503"})
    assert e.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[sim:fail=400]]"}])
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="flaky", messages=USER)  # profile rate_500: 1.0
    status, _, body = http("POST", sim + "/v1/chat/completions", {"model": "gpt-4o", "messages": USER})
    assert status == 401 and json.loads(body)["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-context", messages=[{"role": "user", "content": "x" * 200}])
    assert e.value.code == "context_length_exceeded"


def test_scoped_directives_and_fail_times(sim: str) -> None:
    c = oai(sim)
    msg = [{"role": "user", "content": "hi [[sim:fail=429@dep-a]] [[sim@dep-b:output=from b]]"}]
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="dep-a", messages=msg)
    r = c.chat.completions.create(model="dep-b", messages=msg)
    assert r.choices[0].message.content == "from b"
    r = c.chat.completions.create(model="dep-c", messages=msg)
    assert r.choices[0].message.content != "from b"
    # glob scope
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(
            model="eu-west-1", messages=[{"role": "user", "content": "[[sim:fail=500@eu-*]]"}]
        )
    # fail only the first N identical requests (so a retry succeeds)
    msg = [{"role": "user", "content": "retry me [[sim:fail=503]] [[sim:fail_times=2]]"}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="retry-model", messages=msg)
    assert c.chat.completions.create(model="retry-model", messages=msg).choices[0].message.content


def test_malformed_drop_timeout(sim: str) -> None:
    c = oai(sim)
    status, _, body = http(
        "POST",
        sim + "/v1/chat/completions",
        {"model": "gpt-4o", "messages": USER},
        {"authorization": "Bearer k", "x-sim-fail": "malformed"},
    )
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        list(
            c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "[[sim:fail=malformed]]"}], stream=True
            )
        )
    # drop: the connection closes after 3 chunks
    received = []
    with pytest.raises(DROP_ERRORS):
        for ch in c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "[[sim:fail=drop]] [[sim:drop_after=3]]"}],
            stream=True,
        ):
            received.append(ch)
    assert len(received) == 3
    with pytest.raises(DROP_ERRORS):
        c.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-sim-fail": "drop"})
    # timeout: hangs for timeout_s (patched small), then closes
    http("POST", sim + "/_sim/models/slowfail", {"timeout_s": 0.2})
    with pytest.raises(DROP_ERRORS):
        c.chat.completions.create(model="slowfail", messages=USER, extra_headers={"x-sim-fail": "timeout"})
    with pytest.raises(openai.APITimeoutError):
        oai(sim, timeout=0.1).chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"x-sim-latency-ms": "2000"}
        )


def test_quality_header(sim: str) -> None:
    raw = oai(sim).chat.completions.with_raw_response.create(model="quality-model", messages=USER)
    assert raw.headers["x-sim-quality"] == "code=0.9,math=0.5"


# ------------------------------------------------------------------------------------------------ control


def test_control_endpoints(sim: str) -> None:
    c = oai(sim)
    assert http("POST", sim + "/_sim/reset")[0] == 200
    c.chat.completions.create(
        model="ctl-a",
        messages=[{"role": "user", "content": "secret <EMAIL_1>"}],
        extra_headers={"x-test": "1"},
    )
    c.chat.completions.create(model="ctl-a", messages=USER)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="ctl-b", messages=USER, extra_headers={"x-sim-fail": "429"})
    stats = json.loads(http("GET", sim + "/_sim/stats")[2])
    assert stats["total"] == 3
    assert stats["by_model"]["ctl-a"]["by_status"] == {"200": 2}
    assert stats["by_model"]["ctl-b"]["by_status"] == {"429": 1}
    assert stats["by_model"]["ctl-b"]["faults"] == {"429": 1}
    assert stats["by_status"] == {"200": 2, "429": 1}
    assert stats["by_model"]["ctl-a"]["completion_tokens"] == 40
    status, _, body = http("GET", sim + "/_sim/last?model=ctl-a")
    last = json.loads(body)
    assert status == 200 and last["body"]["messages"] == USER and last["path"] == "/v1/chat/completions"
    assert json.loads(last["raw"]) == last["body"]
    reqs = json.loads(http("GET", sim + "/_sim/requests?model=ctl-a")[2])["requests"]
    assert (
        reqs[0]["body"]["messages"][0]["content"] == "secret <EMAIL_1>"
        and reqs[0]["headers"]["x-test"] == "1"
    )
    assert http("GET", sim + "/_sim/last?model=never-seen")[0] == 404
    # runtime patch: make a model fail, then restore it
    status, _, body = http("POST", sim + "/_sim/models/ctl-a", {"rate_429": 1.0, "retry_after_s": 2})
    assert status == 200 and json.loads(body)["profile"]["rate_429"] == 1.0
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="ctl-a", messages=USER)
    assert e.value.response.headers["retry-after"] == "2"
    assert json.loads(http("GET", sim + "/_sim/models/ctl-a")[2])["profile"]["rate_429"] == 1.0
    assert http("DELETE", sim + "/_sim/models/ctl-a")[0] == 200
    c.chat.completions.create(model="ctl-a", messages=USER)
    # glob patches and bad patches
    http("POST", sim + "/_sim/models/ctl-*", {"output_tokens": 3})
    assert c.chat.completions.create(model="ctl-z", messages=USER).usage.completion_tokens == 3
    assert http("POST", sim + "/_sim/models/ctl-a", {"no_such_setting": 1})[0] == 400
    assert http("POST", sim + "/_sim/models/ctl-a", {"rate_429": 2})[0] == 400
    http("POST", sim + "/_sim/reset")
    assert json.loads(http("GET", sim + "/_sim/stats")[2])["total"] == 0
    assert c.chat.completions.create(model="ctl-z", messages=USER).usage.completion_tokens == 20
    assert json.loads(http("GET", sim + "/healthz")[2]) == {"status": "ok"}


# ------------------------------------------------------------------------------------------------ Anthropic

TOOL = {
    "name": "get_weather",
    "description": "Weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


def test_anthropic_messages(sim: str) -> None:
    c = ant(sim)
    m = c.messages.create(model="claude-sim-1", max_tokens=100, system="be nice", messages=USER)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.content[0].type == "text" and m.content[0].text
    assert m.usage.input_tokens > 0 and m.usage.output_tokens == 20
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0
    clipped = c.messages.create(model="claude-sim-1", max_tokens=3, messages=USER)
    assert clipped.stop_reason == "max_tokens" and clipped.usage.output_tokens == 3
    stopped = c.messages.create(
        model="claude-sim-1",
        max_tokens=100,
        stop_sequences=["STOP"],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "[[sim:output=one two STOP three]]"}]}
        ],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP"
    assert stopped.content[0].text == "one two "
    cached = c.messages.create(model="usage-model", max_tokens=50, messages=USER)
    assert cached.usage.cache_read_input_tokens == 5


def test_anthropic_stream(sim: str) -> None:
    c = ant(sim)
    full = c.messages.create(model="claude-sim-1", max_tokens=100, messages=USER)
    with c.messages.stream(model="claude-sim-1", max_tokens=100, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == full.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 20
    assert final.usage.input_tokens == full.usage.input_tokens
    # raw event sequence
    status, headers, body = http(
        "POST",
        sim + "/v1/messages",
        {"model": "m", "max_tokens": 5, "stream": True, "messages": USER},
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in body.decode().split("\n") if line.startswith("event: ")]
    assert events == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 5 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(line[6:]) for line in body.decode().split("\n") if line.startswith("data: ")]
    assert datas[0]["message"]["usage"]["output_tokens"] == 1
    assert datas[-2]["delta"]["stop_reason"] == "max_tokens" and datas[-2]["usage"]["output_tokens"] == 5


def test_anthropic_tools(sim: str) -> None:
    c = ant(sim)
    msgs = [{"role": "user", "content": "what is the weather in Oslo?"}]
    m = c.messages.create(model="claude-sim-1", max_tokens=200, tools=[TOOL], messages=msgs)
    assert m.stop_reason == "tool_use"
    (block,) = [b for b in m.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, TOOL["input_schema"])
    with c.messages.stream(model="claude-sim-1", max_tokens=200, tools=[TOOL], messages=msgs) as s:
        final = s.get_final_message()
    (sblock,) = [b for b in final.content if b.type == "tool_use"]
    assert sblock.input == block.input and sblock.id == block.id and final.stop_reason == "tool_use"
    forced = c.messages.create(
        model="claude-sim-1",
        max_tokens=200,
        tools=[TOOL],
        messages=USER,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert forced.content[-1].type == "tool_use"
    follow = c.messages.create(
        model="claude-sim-1",
        max_tokens=200,
        tools=[TOOL],
        messages=[
            *msgs,
            {"role": "assistant", "content": [b.model_dump() for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "21C"}]},
        ],
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"


def test_anthropic_thinking_and_count_tokens(sim: str) -> None:
    c = ant(sim)
    m = c.messages.create(
        model="claude-sim-1",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=USER,
    )
    assert [b.type for b in m.content] == ["thinking", "text"] and m.content[0].signature
    with c.messages.stream(
        model="claude-sim-1",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=USER,
    ) as s:
        final = s.get_final_message()
    assert final.content[0].thinking == m.content[0].thinking
    n = c.messages.count_tokens(model="claude-sim-1", messages=USER, system="be nice")
    created = c.messages.create(model="claude-sim-1", max_tokens=10, system="be nice", messages=USER)
    assert n.input_tokens == created.usage.input_tokens


def test_anthropic_errors(sim: str) -> None:
    c = ant(sim)
    status, _, body = http(
        "POST",
        sim + "/v1/messages",
        {"model": "m", "messages": USER},
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert status == 400
    assert (
        json.loads(body)["type"] == "error" and json.loads(body)["error"]["type"] == "invalid_request_error"
    )
    assert "max_tokens" in json.loads(body)["error"]["message"]
    status, _, body = http(
        "POST",
        sim + "/v1/messages",
        {"model": "m", "max_tokens": 5, "messages": USER},
        {"anthropic-version": "2023-06-01"},
    )
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    status, _, body = http(
        "POST", sim + "/v1/messages", {"model": "m", "max_tokens": 5, "messages": USER}, {"x-api-key": "k"}
    )
    assert status == 400
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "[[sim:fail=429]]"}])
    assert (
        e.value.response.headers["retry-after"] == "1" and e.value.body["error"]["type"] == "rate_limit_error"
    )
    with pytest.raises(anthropic.InternalServerError) as e:
        c.messages.create(model="m", max_tokens=5, messages=USER, extra_headers={"x-sim-fail": "529"})
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"
    with (
        pytest.raises(DROP_ERRORS),
        c.messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "[[sim:fail=drop]]"}]
        ) as s,
    ):
        "".join(s.text_stream)
