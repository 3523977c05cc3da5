"""Simulator: Gemini and Bedrock over real HTTP (aiohttp / urllib), the AWS event-stream codec, and the
wire-format independent engine (directives, JSON-schema instances, text pieces)."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import uuid
import zlib
from collections.abc import Iterator

import aiohttp
import jsonschema
import pytest

from gateway.providers.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    decode_all,
    encode_event,
    encode_exception,
    encode_message,
)
from gateway.simulate import bedrock as br
from gateway.simulate.engine import (
    instance_for_schema,
    lorem_pieces,
    parse_directives,
    split_pieces,
)
from gateway.simulate.profiles import ProfileError, Profiles

from .test_simulator import PROFILE, http, start_simulator, stop_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_simulator(tmp_path_factory.mktemp("simf"), PROFILE)
    yield url
    stop_simulator(proc)


# ------------------------------------------------------------------------------------------------ Gemini

GKEY = {"x-goog-api-key": "g-key"}
GUSER = {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}


def sse_objects(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]


def test_gemini_generate(sim: str) -> None:
    status, headers, body = http("POST", sim + "/v1beta/models/gemini-2.5-flash:generateContent", GUSER, GKEY)
    assert status == 200 and headers["content-type"].startswith("application/json")
    r = json.loads(body)
    cand = r["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["content"]["parts"][0]["text"]
    assert cand["finishReason"] == "STOP"
    u = r["usageMetadata"]
    assert u["candidatesTokenCount"] == 20 and u["totalTokenCount"] == u["promptTokenCount"] + 20
    assert r["modelVersion"] == "gemini-2.5-flash"
    # key in the query string, system instruction, max tokens, stop sequences
    req = {
        **GUSER,
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 4, "temperature": 0.1},
    }
    status, _, body = http("POST", sim + "/v1beta/models/gemini-2.5-flash:generateContent?key=abc", req)
    r2 = json.loads(body)
    assert status == 200 and r2["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert r2["usageMetadata"]["candidatesTokenCount"] == 4
    assert r2["usageMetadata"]["promptTokenCount"] > u["promptTokenCount"]
    req = {
        "contents": [{"role": "user", "parts": [{"text": "[[sim:output=a b STOP c]]"}]}],
        "generationConfig": {"stopSequences": ["STOP"]},
    }
    r3 = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", req, GKEY)[2])
    assert r3["candidates"][0]["content"]["parts"][0]["text"] == "a b "


def test_gemini_stream_sse_and_array(sim: str) -> None:
    full = json.loads(http("POST", sim + "/v1beta/models/gemini-2.5-flash:generateContent", GUSER, GKEY)[2])
    status, headers, body = http(
        "POST", sim + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GUSER, GKEY
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    objs = sse_objects(body)
    assert len(objs) > 2
    text = "".join(p.get("text", "") for o in objs for p in o["candidates"][0]["content"]["parts"])
    assert text == full["candidates"][0]["content"]["parts"][0]["text"]
    assert objs[-1]["candidates"][0]["finishReason"] == "STOP"
    assert objs[-1]["usageMetadata"] == full["usageMetadata"]
    assert all("usageMetadata" not in o for o in objs[:-1])
    # without alt=sse: one JSON array streamed
    status, _, body = http("POST", sim + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", GUSER, GKEY)
    arr = json.loads(body)
    assert isinstance(arr, list) and arr[-1]["usageMetadata"] == full["usageMetadata"]
    # no usage when told so
    req = {"contents": [{"role": "user", "parts": [{"text": "hi [[sim:no_usage]]"}]}]}
    objs = sse_objects(http("POST", sim + "/v1beta/models/g:streamGenerateContent?alt=sse", req, GKEY)[2])
    assert all("usageMetadata" not in o for o in objs)


def test_gemini_function_call_and_json_schema(sim: str) -> None:
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "weather",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                        "required": ["city", "days"],
                    },
                }
            ]
        }
    ]
    req = {"contents": [{"role": "user", "parts": [{"text": "weather in Rome?"}]}], "tools": tools}
    r = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", req, GKEY)[2])
    fc = r["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert (
        fc["name"] == "get_weather"
        and isinstance(fc["args"]["city"], str)
        and isinstance(fc["args"]["days"], int)
    )
    objs = sse_objects(http("POST", sim + "/v1beta/models/g:streamGenerateContent?alt=sse", req, GKEY)[2])
    calls = [
        p["functionCall"] for o in objs for p in o["candidates"][0]["content"]["parts"] if "functionCall" in p
    ]
    assert calls == [fc]
    # the function response goes back: text answer
    follow = {
        "contents": [
            *req["contents"],
            {"role": "model", "parts": [{"functionCall": fc}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]},
        ],
        "tools": tools,
    }
    r = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", follow, GKEY)[2])
    assert "text" in r["candidates"][0]["content"]["parts"][0]
    # forced with mode ANY
    forced = {**GUSER, "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}
    r = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", forced, GKEY)[2])
    assert "functionCall" in r["candidates"][0]["content"]["parts"][0]
    schema = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING"},
            "n": {"type": "NUMBER"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        },
        "required": ["name", "n", "tags"],
    }
    req = {**GUSER, "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}
    r = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", req, GKEY)[2])
    doc = json.loads(r["candidates"][0]["content"]["parts"][0]["text"])
    assert (
        isinstance(doc["name"], str) and isinstance(doc["n"], int | float) and isinstance(doc["tags"], list)
    )


def test_gemini_count_and_errors(sim: str) -> None:
    n = json.loads(http("POST", sim + "/v1beta/models/g:countTokens", GUSER, GKEY)[2])
    full = json.loads(http("POST", sim + "/v1beta/models/g:generateContent", GUSER, GKEY)[2])
    assert n["totalTokens"] == full["usageMetadata"]["promptTokenCount"]
    status, headers, body = http(
        "POST",
        sim + "/v1beta/models/g:generateContent",
        GUSER,
        {**GKEY, "x-sim-fail": "429", "x-sim-retry-after": "2"},
    )
    err = json.loads(body)["error"]
    assert status == 429 and err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    assert err["details"][0]["retryDelay"] == "2s" and headers["retry-after"] == "2"
    status, _, body = http("POST", sim + "/v1beta/models/g:generateContent", GUSER)
    assert status == 403 and json.loads(body)["error"]["status"] == "PERMISSION_DENIED"
    status, _, body = http("POST", sim + "/v1beta/models/g:generateContent", {"contents": []}, GKEY)
    assert status == 400 and json.loads(body)["error"]["status"] == "INVALID_ARGUMENT"
    status, _, body = http(
        "POST", sim + "/v1beta/models/g:generateContent", GUSER, {**GKEY, "x-sim-fail": "503"}
    )
    assert status == 503 and json.loads(body)["error"]["status"] == "UNAVAILABLE"


def test_gemini_with_aiohttp_stream(sim: str) -> None:
    async def run() -> str:
        async with aiohttp.ClientSession() as s:
            url = sim + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
            async with s.post(url, json=GUSER, headers=GKEY) as r:
                assert r.status == 200
                text = ""
                async for line in r.content:
                    if line.startswith(b"data: "):
                        obj = json.loads(line[6:])
                        text += "".join(p.get("text", "") for p in obj["candidates"][0]["content"]["parts"])
                return text

    assert len(asyncio.run(run()).split()) == 20


# ------------------------------------------------------------------------------------------------ Bedrock

BR_USER = {"messages": [{"role": "user", "content": [{"text": "Say hello."}]}]}
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def br_post(
    sim: str,
    model: str,
    op: str,
    body: dict,
    extra: dict[str, str] | None = None,
    secret: str = "sim-test-secret",
):
    raw = json.dumps(body).encode()
    host = sim.split("//", 1)[1]
    headers = br.sign_request("POST", host, model, op, raw, "AKIDSIMTEST", secret)
    return http("POST", f"{sim}/model/{model}/{op}", raw=raw, headers={**headers, **(extra or {})})


def test_bedrock_converse(sim: str) -> None:
    req = {
        **BR_USER,
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.2},
    }
    status, _, body = br_post(sim, MODEL_ID, "converse", req)
    assert status == 200, body
    r = json.loads(body)
    assert r["output"]["message"]["role"] == "assistant" and r["output"]["message"]["content"][0]["text"]
    assert r["stopReason"] == "end_turn"
    u = r["usage"]
    assert u["outputTokens"] == 20 and u["totalTokens"] == u["inputTokens"] + 20
    assert isinstance(r["metrics"]["latencyMs"], int)
    r = json.loads(br_post(sim, MODEL_ID, "converse", {**BR_USER, "inferenceConfig": {"maxTokens": 2}})[2])
    assert r["stopReason"] == "max_tokens" and r["usage"]["outputTokens"] == 2
    r = json.loads(
        br_post(
            sim,
            MODEL_ID,
            "converse",
            {
                "messages": [{"role": "user", "content": [{"text": "[[sim:output=x y STOP z]]"}]}],
                "inferenceConfig": {"stopSequences": ["STOP"]},
            },
        )[2]
    )
    assert r["stopReason"] == "stop_sequence" and r["output"]["message"]["content"][0]["text"] == "x y "


def decode_stream(body: bytes, piece: int = 7) -> list[tuple[dict, dict]]:
    dec = EventStreamDecoder()
    out = []
    for i in range(0, len(body), piece):  # feed in awkward pieces: the decoder is incremental
        for headers, payload in dec.feed(body[i : i + piece]):
            out.append((headers, json.loads(payload)))
    dec.close()
    return out


def test_bedrock_converse_stream(sim: str) -> None:
    full = json.loads(br_post(sim, MODEL_ID, "converse", BR_USER)[2])
    status, headers, body = br_post(sim, MODEL_ID, "converse-stream", BR_USER)
    assert status == 200 and headers["content-type"] == "application/vnd.amazon.eventstream"
    events = decode_stream(body)
    kinds = [h[":event-type"] for h, _ in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in events)
    text = "".join(p["delta"]["text"] for h, p in events if h[":event-type"] == "contentBlockDelta")
    assert text == full["output"]["message"]["content"][0]["text"]
    assert events[-2][1] == {"stopReason": "end_turn"}
    assert events[-1][1]["usage"] == full["usage"] and "latencyMs" in events[-1][1]["metrics"]


def test_bedrock_tool_use(sim: str) -> None:
    tool_cfg = {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "weather",
                    "inputSchema": {
                        "json": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        }
                    },
                }
            }
        ]
    }
    req = {"messages": [{"role": "user", "content": [{"text": "weather in Oslo"}]}], "toolConfig": tool_cfg}
    r = json.loads(br_post(sim, MODEL_ID, "converse", req)[2])
    assert r["stopReason"] == "tool_use"
    tu = r["output"]["message"]["content"][0]["toolUse"]
    assert tu["name"] == "get_weather" and tu["input"] == {"city": "sim_city"} and tu["toolUseId"]
    events = decode_stream(br_post(sim, MODEL_ID, "converse-stream", req)[2])
    kinds = [h[":event-type"] for h, _ in events]
    assert kinds[:2] == ["messageStart", "contentBlockStart"]
    start = events[1][1]["start"]["toolUse"]
    assert start == {"toolUseId": tu["toolUseId"], "name": "get_weather"}
    args = "".join(
        p["delta"]["toolUse"]["input"] for h, p in events if h[":event-type"] == "contentBlockDelta"
    )
    assert json.loads(args) == tu["input"]
    assert events[-2][1]["stopReason"] == "tool_use"
    follow = {
        "messages": [
            *req["messages"],
            {"role": "assistant", "content": [{"toolUse": tu}]},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": tu["toolUseId"], "content": [{"json": {"t": 3}}]}}],
            },
        ],
        "toolConfig": tool_cfg,
    }
    r = json.loads(br_post(sim, MODEL_ID, "converse", follow)[2])
    assert r["stopReason"] == "end_turn" and "text" in r["output"]["message"]["content"][0]


def test_bedrock_auth_and_errors(sim: str) -> None:
    url = f"{sim}/model/{MODEL_ID}/converse"
    status, headers, body = http("POST", url, BR_USER)
    assert status == 403 and json.loads(body) == {"message": "Missing Authentication Token"}
    assert headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    status, headers, body = br_post(sim, MODEL_ID, "converse", BR_USER, secret="wrong-secret")
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    bad_service = {
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDSIMTEST/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
    }
    status, headers, _ = http("POST", url, BR_USER, bad_service)
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    status, headers, _ = http("POST", url, BR_USER, {"authorization": "AWS4-HMAC-SHA256 garbage"})
    assert status == 403 and headers["x-amzn-errortype"].startswith("IncompleteSignatureException")
    status, headers, body = br_post(sim, MODEL_ID, "converse", BR_USER, {"x-sim-fail": "429"})
    assert (
        status == 429
        and headers["x-amzn-errortype"].startswith("ThrottlingException")
        and "message" in json.loads(body)
    )
    status, headers, _ = br_post(sim, MODEL_ID, "converse", {"messages": []})
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException")
    # Bedrock API keys (bearer) are accepted
    assert http("POST", url, BR_USER, {"authorization": "Bearer ABSKsim"})[0] == 200
    # malformed stream -> a frame with a bad CRC
    status, _, body = br_post(sim, MODEL_ID, "converse-stream", BR_USER, {"x-sim-fail": "malformed"})
    with pytest.raises(EventStreamError):
        decode_stream(body)


# ------------------------------------------------------------------------------------------------ event stream codec


def test_eventstream_roundtrip_and_header_types() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {"s": "str", "t": True, "f": False, "i": -5, "b": b"\x00\x01", "u": u}
    msg = encode_message(headers, b'{"x":1}')
    ((h, p),) = decode_all(msg)
    assert h == headers and p == b'{"x":1}'
    # byte/short/long/timestamp header types (not produced by the encoder) decode too
    raw = (
        bytes([1])
        + b"a"
        + b"\x02"
        + struct.pack(">b", -1)
        + bytes([1])
        + b"b"
        + b"\x03"
        + struct.pack(">h", 300)
        + bytes([1])
        + b"c"
        + b"\x05"
        + struct.pack(">q", 1 << 40)
        + bytes([1])
        + b"d"
        + b"\x08"
        + struct.pack(">q", 1700000000000)
    )
    total = 16 + len(raw) + 3
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + b"abc"
    body += struct.pack(">I", zlib.crc32(body))
    ((h, p),) = decode_all(body)
    assert h == {"a": -1, "b": 300, "c": 1 << 40, "d": 1700000000000} and p == b"abc"
    ev = decode_all(
        encode_event("messageStop", b"{}") + encode_exception("throttlingException", b'{"message":"x"}')
    )
    assert ev[0][0] == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert ev[1][0][":message-type"] == "exception" and ev[1][0][":exception-type"] == "throttlingException"


def test_eventstream_incremental_and_corruption() -> None:
    msgs = [
        encode_event("contentBlockDelta", json.dumps({"delta": {"text": f"t{i}"}}).encode())
        for i in range(50)
    ]
    blob = b"".join(msgs)
    rng = random.Random(3)
    dec = EventStreamDecoder()
    got = []
    i = 0
    while i < len(blob):
        n = rng.randint(1, 40)
        got += dec.feed(blob[i : i + n])
        i += n
    assert [json.loads(p)["delta"]["text"] for _, p in got] == [f"t{i}" for i in range(50)]
    assert dec.pending == 0
    dec.close()
    # a flipped payload byte -> message CRC mismatch; a flipped length -> prelude CRC mismatch
    bad = bytearray(msgs[0])
    bad[-6] ^= 0x01
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(bad))
    bad = bytearray(msgs[0])
    bad[2] ^= 0x01
    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(bytes(bad))
    dec = EventStreamDecoder()
    assert dec.feed(msgs[0][:-3]) == []
    with pytest.raises(EventStreamError):
        dec.close()


# ------------------------------------------------------------------------------------------------ engine


def test_directives() -> None:
    d = parse_directives("hi [[sim:fail=429]] [[sim:retry_after=2]] [[sim:no_usage]]", "m")
    assert d == {"fail": "429", "retry_after": "2", "no_usage": ""}
    assert parse_directives("[[sim:fail=429@other]]", "m") is None
    assert parse_directives("[[sim:fail=429@m]]", "m") == {"fail": "429"}
    assert parse_directives("[[sim:fail=500@eu-*]]", "eu-west") == {"fail": "500"}
    assert parse_directives("[[sim:fail=500@claude@2024]]", "claude@2024") == {"fail": "500"}
    assert parse_directives("[[sim@m:output=mail a@b.com]]", "m") == {"output": "mail a@b.com"}
    assert parse_directives("[[sim@x:output=nope]]", "m") is None
    assert parse_directives("[[sim:output=a@b.com]]", "m") == {"output": "a@b.com"}
    assert parse_directives('[[sim:json={"k": [[1, 2]], "s": "]]"}]]', "m") == {
        "json": '{"k": [[1, 2]], "s": "]]"}'
    }
    assert parse_directives("no directives [[sim broken", "m") is None


def test_schema_instances_validate() -> None:
    schemas = [
        {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}, "required": ["a"]},
        {"type": "array", "items": {"type": "integer", "minimum": 5, "maximum": 9}, "minItems": 3},
        {"type": ["string", "null"], "minLength": 12},
        {"type": "number", "exclusiveMinimum": 10, "exclusiveMaximum": 11},
        {"type": "integer", "multipleOf": 5, "minimum": 7},
        {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "properties": {"x": {"const": 3}}, "required": ["x"]},
            ]
        },
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string", "enum": ["q", "r"]}}, "required": ["b"]},
            ]
        },
        {
            "$defs": {"n": {"type": "object", "properties": {"child": {"$ref": "#/$defs/n"}}}},
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/n"}},
            "required": ["root"],
        },
        {
            "type": "object",
            "properties": {
                "when": {"type": "string", "format": "date-time"},
                "id": {"type": "string", "format": "uuid"},
            },
            "required": ["when", "id"],
            "additionalProperties": False,
        },
    ]
    for s in schemas:
        jsonschema.validate(instance_for_schema(s), s, format_checker=jsonschema.FormatChecker())
    assert instance_for_schema({}) == {}


def test_pieces_and_lorem() -> None:
    for text in ["", "one", "  lead", "a b  c\n d ", "trailing   "]:
        assert "".join(split_pieces(text)) == text
    p = lorem_pieces("k", 30)
    assert len(p) == 30 and p == lorem_pieces("k", 30) and p != lorem_pieces("k2", 30)
    assert p[0][0].isupper() and p[-1].endswith(".")


def test_profiles_resolution_and_validation() -> None:
    prof = Profiles(
        {
            "seed": 1,
            "default": {"output_tokens": 5},
            "models": {
                "gpt-*": {"ttft_ms": 100},
                "gpt-4o": {"ttft_ms": 200, "error_rate": {"429": 0.5, "timeout": 0.1}},
            },
        }
    )
    assert prof.get("other").output_tokens == 5 and prof.get("other").ttft_ms == 0
    assert prof.get("gpt-3").ttft_ms == 100 and prof.get("gpt-4o").ttft_ms == 200
    assert [k for _, k in prof.get("gpt-4o").faults] == ["429", "timeout"]
    prof.patch("gpt-*", {"output_tokens": 9})
    assert prof.get("gpt-4o").output_tokens == 9 and prof.get("other").output_tokens == 5
    a = [prof.rng("x").random() for _ in range(3)]
    prof.reset()
    assert [prof.rng("x").random() for _ in range(3)] == a  # reseeded: repeatable
    assert prof.get("gpt-4o").output_tokens == 5
    for bad in (
        {"models": {"m": {"nope": 1}}},
        {"models": {"m": {"rate_429": 3}}},
        {"whatever": 1},
        {"models": {"m": {"rate_abc": 0.1}}},
    ):
        with pytest.raises(ProfileError):
            Profiles(bad)


def test_tool_call_decision() -> None:
    from gateway.simulate.engine import Req, wants_tool_calls

    def req(text: str, choice: str | None = None) -> Req:
        r = Req("m")
        r.last_user = text
        r.tools = [("get_weather", {}), ("lookup", {})]
        r.tool_choice = choice
        return r

    assert [t[0] for t in wants_tool_calls(req("weather?"), None)] == ["get_weather"]
    assert [t[0] for t in wants_tool_calls(req("please lookup"), None)] == ["lookup"]
    assert wants_tool_calls(req("hello"), None) == []
    assert wants_tool_calls(req("hello [[sim:fail=429@tool-model]]"), None) == []  # directives are not hints
    assert wants_tool_calls(req("weather [[sim:output=x]]"), {"output": "x"}) == []  # exact output wins
    assert [t[0] for t in wants_tool_calls(req("hello", "required"), None)] == ["get_weather"]
    assert [t[0] for t in wants_tool_calls(req("weather", "tool:lookup"), None)] == ["lookup"]
    assert wants_tool_calls(req("weather", "none"), None) == []


def test_bedrock_stream_drop(sim: str) -> None:
    import http.client

    with pytest.raises(http.client.IncompleteRead) as e:
        br_post(
            sim, MODEL_ID, "converse-stream", BR_USER, {"x-sim-fail": "drop", "x-sim-fail-after-chunks": "4"}
        )
    dec = EventStreamDecoder()
    msgs = dec.feed(e.value.partial)
    assert [h[":event-type"] for h, _ in msgs] == ["messageStart"] + ["contentBlockDelta"] * 3
    with pytest.raises(EventStreamError):
        dec.close()  # the connection closed inside a frame
