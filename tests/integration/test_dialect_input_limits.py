"""Bad input the gateway once answered with a 500 is a 400 in the caller's dialect (issue 11, defect 8, dialect part):
pass-through fields nested past what the gateway can re-encode, a ``response_format.json_schema`` that is not an
object, an Anthropic ``thinking`` block whose text is not a string."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from tests.conftest import KEY_A


def post(gw: Any, path: str, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        gw.url + path,
        data=body if isinstance(body, bytes) else orjson.dumps(body),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY_A}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def nested(depth: int) -> bytes:
    """JSON text nesting ``depth`` containers (written out: no encoder has to survive it)."""
    opens = [b"[" if i % 2 else b'{"k":' for i in range(depth)]
    closes = [b"]" if i % 2 else b"}" for i in reversed(range(depth))]
    return b"".join(opens) + b'"x"' + b"".join(closes)


def with_field(body: dict[str, Any], field: str, depth: int) -> bytes:
    return orjson.dumps(body)[:-1] + b',"' + field.encode() + b'":' + nested(depth) + b"}"


MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("depth", [200, 254, 600, 1000])
def test_deeply_nested_pass_through_field_is_a_400(gw, depth):
    status, body = post(
        gw, "/v1/chat/completions", with_field({"model": "gpt-4o-mini", "messages": MSG}, "x", depth)
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_json" and "levels deep" in body["error"]["message"]
    anthropic = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": MSG}
    status, body = post(gw, "/v1/messages", with_field(anthropic, "thinking", depth))
    assert status == 400 and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"


def test_nesting_within_the_limit_still_works(gw):
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "x": orjson.loads(nested(60))}},
    }
    status, body = post(
        gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "tools": [tool]}
    )
    assert status == 200, body


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": 5},
        {"type": "json_schema", "json_schema": "s"},
        {"type": "json_schema", "json_schema": [1]},
        {"type": "json_schema", "json_schema": {"name": "n", "schema": 7}},
        {"type": "json_schema", "json_schema": {"name": 7, "schema": {}}},
        {"type": 5},
    ],
)
def test_malformed_response_format_is_a_400(gw, response_format):
    status, body = post(
        gw,
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": MSG, "response_format": response_format},
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request" and "response_format" in body["error"]["message"]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "thinking", "thinking": 5, "signature": "s"},
        {"type": "thinking", "thinking": ["a"], "signature": "s"},
        {"type": "thinking", "thinking": "t", "signature": {"a": 1}},
        {"type": "redacted_thinking", "data": 5},
    ],
)
def test_anthropic_thinking_block_with_a_non_string_is_a_400(gw, block):
    messages = [*MSG, {"role": "assistant", "content": [block, {"type": "text", "text": "ok"}]}, *MSG]
    status, body = post(gw, "/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 5, "messages": messages})
    assert status == 400, body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "content.0" in body["error"]["message"]
