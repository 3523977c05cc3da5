"""Canonical ⇄ Bedrock Converse translation, the SigV4 signer and the event-stream codec (no network)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.config import AwsCredentials, Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import bedrock as br
from gateway.providers import sigv4
from gateway.providers.eventstream import EventStreamDecoder, EventStreamError, encode_event, encode_exception
from gateway.simulate.bedrock import check_auth
from gateway.types import ChatChunk, ChatRequest, FunctionDef, Message, Tool, Usage

AWS = AwsCredentials(
    access_key_id="AKIDEXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)
DEP = Deployment(
    id="br-1", model="anthropic.claude-x-v2:0", provider="bedrock", api_base="http://sim", aws=AWS
)
PNG = "iVBORw0KGgo="


def _req(messages: list[Message], **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, **kw)


# ---------------------------------------------------------------- request


def test_request():
    req = _req(
        [
            Message(
                role="system",
                content=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
            ),
            Message(
                role="user",
                content=[
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            ),
            Message(
                role="assistant",
                content=None,
                reasoning="r",
                extra={"reasoning_signature": "s"},
                tool_calls=[
                    {"id": "t1", "type": "function", "function": {"name": "w", "arguments": '{"c": 1}'}}
                ],
            ),
            Message(role="tool", tool_call_id="t1", content="ok", extra={"is_error": True}),
            Message(role="user", content="  "),  # blank text: Bedrock would reject it
        ],
        tools=[Tool(function=FunctionDef(name="w", description="d", parameters={"type": "object"}))],
        tool_choice="required",
        max_tokens=10,
        temperature=0.3,
        stop="Z",
        user="u-9",
        extra={"top_k": 3},
    )
    wire = br.request_to_wire(req, DEP)
    assert wire["system"] == [{"text": "Rules."}, {"cachePoint": {"type": "default"}}]
    assert wire["messages"] == [
        {"role": "user", "content": [{"text": "Look"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]},
        {"role": "assistant", "content": [{"reasoningContent": {"reasoningText": {"text": "r", "signature": "s"}}},
                                          {"toolUse": {"toolUseId": "t1", "name": "w", "input": {"c": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "ok"}], "status": "error"}}]},
    ]  # fmt: skip
    assert wire["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object"}}, "description": "d"}}
        ],
        "toolChoice": {"any": {}},
    }
    assert wire["inferenceConfig"] == {"maxTokens": 10, "temperature": 0.3, "stopSequences": ["Z"]}
    assert wire["additionalModelRequestFields"] == {"top_k": 3}
    assert wire["requestMetadata"] == {"user": "u-9"}


def test_tool_choice_none():
    tools = [Tool(function=FunctionDef(name="w"))]
    fresh = br.request_to_wire(
        _req([Message(role="user", content="x")], tools=tools, tool_choice="none"), DEP
    )
    assert "toolConfig" not in fresh  # no tools offered = none chosen
    history = [
        Message(role="user", content="x"),
        Message(
            role="assistant",
            tool_calls=[{"id": "a", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        ),
        Message(role="tool", tool_call_id="a", content="1"),
    ]
    with pytest.raises(GatewayError) as ei:
        br.request_to_wire(_req(history, tools=tools, tool_choice="none"), DEP)
    assert ei.value.code == "unsupported_feature"


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 2},
        {"response_format": {"type": "json_object"}},
        {"parallel_tool_calls": False},
        {"extra": {"logprobs": True}},
    ],
)
def test_refusals(kw):
    with pytest.raises(GatewayError) as ei:
        br.request_to_wire(_req([Message(role="user", content="x")], **kw), DEP)
    assert ei.value.code == "unsupported_feature" and "br-1" in ei.value.message


def test_urls_and_region():
    assert br.model_url(DEP, "converse") == "http://sim/model/anthropic.claude-x-v2%3A0/converse"
    arn = Deployment(
        id="b",
        model="arn:aws:bedrock:eu-west-1:1:inference-profile/eu.x",
        provider="bedrock",
        aws=AWS,
        region="eu-west-1",
    )
    assert br.model_url(arn, "converse-stream") == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
        "arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Ainference-profile%2Feu.x/converse-stream"
    )
    host = Deployment(
        id="b",
        model="m",
        provider="bedrock",
        aws=AWS,
        api_base="https://bedrock-runtime.ap-south-1.amazonaws.com",
    )
    assert br.aws_region(host) == "ap-south-1"
    assert (
        br.aws_region(Deployment(id="b", model="m", provider="bedrock", aws=AWS, region="eu")) == "us-east-1"
    )


# ---------------------------------------------------------------- response


def test_response():
    body = orjson.dumps({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sg"}}},
            {"text": "Sure."},
            {"toolUse": {"toolUseId": "tu1", "name": "w", "input": {"c": "x"}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 60, "cacheReadInputTokens": 40,
                  "cacheWriteInputTokens": 2},
    })  # fmt: skip
    resp = br.response_from_wire(body, "rid", "model-x")
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "Sure." and c.message.reasoning == "hm"
    assert c.message.tool_calls == [
        {"id": "tu1", "type": "function", "function": {"name": "w", "arguments": '{"c":"x"}'}}
    ]
    assert resp.usage == Usage(input_tokens=53, output_tokens=7, cached_tokens=40, cache_creation_tokens=2)
    assert resp.id == "rid" and resp.model == "model-x"


def test_stop_sequence_from_additional_fields():
    body = orjson.dumps(
        {
            "output": {"message": {"content": [{"text": "a"}]}},
            "stopReason": "stop_sequence",
            "additionalModelResponseFields": {"stop_sequence": "END"},
        }
    )
    c = br.response_from_wire(body, "", "m").choices[0]
    assert c.finish_reason == "stop" and c.stop_sequence == "END"


# ---------------------------------------------------------------- stream


def _frames() -> bytes:
    return b"".join(
        [
            encode_event("messageStart", b'{"role":"assistant"}'),
            encode_event("contentBlockDelta", b'{"delta":{"text":"Hi"},"contentBlockIndex":0}'),
            encode_event("contentBlockStop", b'{"contentBlockIndex":0}'),
            encode_event("contentBlockStart",
                         b'{"start":{"toolUse":{"toolUseId":"tu","name":"w"}},"contentBlockIndex":1}'),
            encode_event("contentBlockDelta", b'{"delta":{"toolUse":{"input":"{\\"c\\":"}},"contentBlockIndex":1}'),
            encode_event("contentBlockDelta", b'{"delta":{"toolUse":{"input":"1}"}},"contentBlockIndex":1}'),
            encode_event("contentBlockStop", b'{"contentBlockIndex":1}'),
            encode_event("messageStop", b'{"stopReason":"tool_use"}'),
            encode_event("metadata", b'{"usage":{"inputTokens":5,"outputTokens":9,"totalTokens":14},"metrics":{}}'),
        ]
    )  # fmt: skip


def test_stream_translation_fed_byte_by_byte_in_random_pieces():
    data = _frames()
    rng = random.Random(7)
    dec = EventStreamDecoder()
    tr = br.StreamTranslator("rid", "m")
    chunks: list[ChatChunk] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 40)
        for headers, payload in dec.feed(data[i : i + n]):
            chunks += tr.feed(headers, payload)
        i += n
    dec.close()
    tr.finish()
    d = [c.choices[0] if c.choices else None for c in chunks]
    assert d[0].role == "assistant" and d[1].content == "Hi"
    assert d[2].tool_calls == [
        {"index": 0, "id": "tu", "type": "function", "function": {"name": "w", "arguments": ""}}
    ]
    assert "".join(x.tool_calls[0]["function"]["arguments"] for x in d[3:5]) == '{"c":1}'
    assert d[5].finish_reason == "tool_calls"
    assert d[6] is None and chunks[6].usage == Usage(input_tokens=5, output_tokens=9)


def test_stream_exception_frame():
    dec = EventStreamDecoder()
    tr = br.StreamTranslator("rid", "m")
    [(headers, payload)] = dec.feed(encode_exception("throttlingException", b'{"message":"slow down"}'))
    with pytest.raises(UpstreamError) as ei:
        tr.feed(headers, payload)
    assert ei.value.status == 429 and "slow down" in ei.value.message


def test_stream_without_message_stop_is_an_error():
    tr = br.StreamTranslator("rid", "m")
    with pytest.raises(UpstreamError):
        tr.finish()


def test_corrupt_frame_is_detected():
    frame = bytearray(encode_event("contentBlockDelta", b'{"delta":{"text":"x"}}'))
    frame[-1] ^= 0xFF
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(frame))


# ---------------------------------------------------------------- SigV4


def test_sigv4_matches_the_aws_documentation_vector():
    """https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html (IAM ListUsers example)."""
    headers = sigv4.sign(
        "GET",
        "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        b"",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        service="iam",
        when=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


def _bedrock_signature(session_token: str | None = None) -> tuple[str, bytes, dict[str, str]]:
    url = br.model_url(
        Deployment(
            id="b",
            model="anthropic.claude-3-5-sonnet-20241022-v2:0",
            provider="bedrock",
            aws=AWS,
            region="us-west-2",
        ),
        "converse",
    )
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    signed = sigv4.sign(
        "POST",
        url,
        {"content-type": "application/json"},
        body,
        access_key=AWS.access_key_id,
        secret_key=AWS.secret_access_key,
        region="us-west-2",
        service="bedrock",
        session_token=session_token,
        when=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return url, body, signed


def test_sigv4_bedrock_request_verifies_with_the_simulators_checker():
    _url, body, signed = _bedrock_signature()
    headers = {
        "host": "bedrock-runtime.us-west-2.amazonaws.com",
        "content-type": "application/json",
        **signed,
    }
    bad = check_auth(
        signed["authorization"],
        headers,
        "POST",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "converse",
        "",
        body,
        AWS.secret_access_key,
        AWS.access_key_id,
    )
    assert bad is None


def test_sigv4_matches_botocore():
    """Cross-check with botocore's SigV4Auth; botocore isn't a runtime dependency, so it runs in any interpreter
    on the machine that has it (skipped if none does)."""
    url, body, signed = _bedrock_signature(session_token="tok/en==")
    script = f"""
import json, datetime
from unittest import mock
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
req = AWSRequest(method="POST", url={url!r}, data={body!r}, headers={{"content-type": "application/json"}})
import botocore.auth
fixed = datetime.datetime(2025, 1, 2, 3, 4, 5)
if hasattr(botocore.auth, "get_current_datetime"):  # botocore >= 1.34
    clock = mock.patch("botocore.auth.get_current_datetime", return_value=fixed)
else:
    clock = mock.patch("botocore.auth.datetime.datetime", **{{"utcnow.return_value": fixed}})
with clock:
    SigV4Auth(Credentials({AWS.access_key_id!r}, {AWS.secret_access_key!r}, "tok/en=="), "bedrock", "us-west-2").add_auth(req)
print(json.dumps(dict(req.headers.items())))
"""
    for exe in ("python3", "/usr/bin/python3"):
        path = shutil.which(exe)
        if path is None:
            continue
        proc = subprocess.run([path, "-c", script], capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            theirs = {k.lower(): v for k, v in json.loads(proc.stdout).items()}
            assert theirs["x-amz-date"] == signed["x-amz-date"] == "20250102T030405Z"
            assert theirs["x-amz-security-token"] == signed["x-amz-security-token"]
            assert theirs["authorization"] == signed["authorization"]
            return
    pytest.skip("no interpreter on this machine has botocore")
