"""Anthropic Messages wire format: /v1/messages (JSON and event stream), count_tokens, models, errors."""

from __future__ import annotations

from typing import Any

import orjson

from .engine import Req, RequestError, Result, ceil_int, short_hash, tool_arg_pieces, uid
from .profiles import ModelProfile

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_calls": "tool_use",
}


def new_id(prefix: str = "msg_") -> str:
    return prefix + "sim" + uid(14)


def _block_text(block: Any, texts: list[str], user_texts: list[str] | None) -> bool:
    """Append the text a content block carries; returns True for tool_result blocks."""
    if isinstance(block, str):
        texts.append(block)
        if user_texts is not None:
            user_texts.append(block)
        return False
    if not isinstance(block, dict):
        return False
    btype = block.get("type")
    if btype == "text":
        t = block.get("text")
        if isinstance(t, str):
            texts.append(t)
            if user_texts is not None:
                user_texts.append(t)
    elif btype == "tool_use":
        texts.append(orjson.dumps(block.get("input") or {}).decode())
    elif btype == "tool_result":
        c = block.get("content")
        if isinstance(c, str):
            texts.append(c)
        elif isinstance(c, list):
            for sub in c:
                _block_text(sub, texts, None)
        return True
    elif btype == "thinking":
        t = block.get("thinking")
        if isinstance(t, str):
            texts.append(t)
    return False


def parse_messages(data: Any, require_max_tokens: bool = True) -> Req:
    if not isinstance(data, dict):
        raise RequestError("Request body must be a JSON object")
    model = data.get("model")
    if not model or not isinstance(model, str):
        raise RequestError("model: Field required", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise RequestError("messages: Field required", param="messages")
    mt = data.get("max_tokens")
    if require_max_tokens:
        if mt is None:
            raise RequestError("max_tokens: Field required", param="max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise RequestError("max_tokens: Input should be greater than or equal to 1", param="max_tokens")
    req = Req(model)
    texts = req.texts
    system = data.get("system")
    n_msgs = 0
    if system:
        n_msgs += 1
        if isinstance(system, str):
            texts.append(system)
        elif isinstance(system, list):
            for b in system:
                _block_text(b, texts, None)
    last_user = ""
    last_tool_result = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise RequestError(
                f"messages.{i}.role: Input should be 'user' or 'assistant'", param=f"messages.{i}.role"
            )
        content = m.get("content")
        is_user = m["role"] == "user"
        user_texts: list[str] | None = [] if is_user else None
        has_result = False
        if isinstance(content, str):
            _block_text(content, texts, user_texts)
        elif isinstance(content, list):
            for b in content:
                has_result |= _block_text(b, texts, user_texts)
        if is_user:
            if user_texts:
                last_user = "".join(user_texts)
            last_tool_result = has_result
        else:
            last_tool_result = False
    n_msgs += len(messages)
    req.n_messages = n_msgs
    req.last_user = last_user
    req.last_is_tool_result = last_tool_result
    if messages and messages[-1].get("role") == "assistant":
        req.last_is_tool_result = False
    tools = data.get("tools")
    if isinstance(tools, list) and tools:
        for t in tools:
            if isinstance(t, dict) and t.get("name") and "input_schema" in t:
                req.tools.append((t["name"], t.get("input_schema") or {}))
        req.tools_chars = len(orjson.dumps(tools))
    tc = data.get("tool_choice")
    if isinstance(tc, dict):
        kind = tc.get("type")
        if kind == "tool" and tc.get("name"):
            req.tool_choice = "tool:" + tc["name"]
        elif kind == "any":
            req.tool_choice = "required"
        elif kind == "none":
            req.tool_choice = "none"
    if mt is not None and isinstance(mt, int):
        req.max_tokens = mt
    ss = data.get("stop_sequences")
    if isinstance(ss, list):
        req.stop = [s for s in ss if isinstance(s, str)]
    req.stream = bool(data.get("stream"))
    th = data.get("thinking")
    if isinstance(th, dict) and th.get("type") in ("enabled", "adaptive"):
        req.thinking_budget = int(th.get("budget_tokens") or 1024)
    oc = data.get("output_config")
    of = (
        oc.get("format") if isinstance(oc, dict) else data.get("output_format")
    )  # current field, then the beta one
    if isinstance(of, dict) and of.get("type") == "json_schema":
        req.json_mode = True
        req.json_schema = of.get("schema") if isinstance(of.get("schema"), dict) else {"type": "object"}
    return req


# --------------------------------------------------------------------------------------------- rendering


def usage_dict(res: Result, output_tokens: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": res.prompt_tokens - res.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": res.cached_tokens,
        "output_tokens": res.completion_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _signature(res: Result) -> str:
    return "sim_sig_" + short_hash(res.thinking, size=16)


def render_message(req: Req, res: Result, prof: ModelProfile) -> bytes:
    ch = res.choices[0]
    content: list[dict[str, Any]] = []
    if res.thinking:
        content.append({"type": "thinking", "thinking": res.thinking, "signature": _signature(res)})
    if not ch.tool_calls:
        content.append({"type": "text", "text": ch.text})
    for cid, name, args in ch.tool_calls:
        content.append({"type": "tool_use", "id": "toolu_" + cid, "name": name, "input": orjson.loads(args)})
    return orjson.dumps(
        {
            "id": new_id(),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": _STOP[ch.finish],
            "stop_sequence": ch.stop_seq if ch.finish == "stop_sequence" else None,
            "usage": usage_dict(res),
        }
    )


def _ev(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def stream_message(req: Req, res: Result, prof: ModelProfile, usage: bool) -> list[tuple[bytes, int]]:
    ch = res.choices[0]
    out: list[tuple[bytes, int]] = []
    start_msg = {
        "id": new_id(),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_dict(res, output_tokens=1),
    }
    out.append((_ev(b"message_start", {"type": "message_start", "message": start_msg}), 0))
    idx = 0
    pinged = False

    def block_start(block: dict[str, Any]) -> None:
        nonlocal pinged
        out.append(
            (
                _ev(
                    b"content_block_start",
                    {"type": "content_block_start", "index": idx, "content_block": block},
                ),
                0,
            )
        )
        if not pinged:
            out.append((_PING, 0))
            pinged = True

    def block_stop() -> None:
        out.append(
            (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % idx, 0)
        )

    if res.thinking:
        block_start({"type": "thinking", "thinking": "", "signature": ""})
        for piece in _words(res.thinking):
            delta = {
                "type": "content_block_delta",
                "index": idx,
                "delta": {"type": "thinking_delta", "thinking": piece},
            }
            out.append((_ev(b"content_block_delta", delta), 1))
        sig = {
            "type": "content_block_delta",
            "index": idx,
            "delta": {"type": "signature_delta", "signature": _signature(res)},
        }
        out.append((_ev(b"content_block_delta", sig), 0))
        block_stop()
        idx += 1
    if not ch.tool_calls:
        block_start({"type": "text", "text": ""})
        pre = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
            % idx
        )
        for piece in ch.pieces:
            out.append((pre + orjson.dumps(piece) + b"}}\n\n", 1))
        block_stop()
        idx += 1
    for cid, name, args in ch.tool_calls:
        block_start({"type": "tool_use", "id": "toolu_" + cid, "name": name, "input": {}})
        for frag in ["", *tool_arg_pieces(args)]:
            delta = {
                "type": "content_block_delta",
                "index": idx,
                "delta": {"type": "input_json_delta", "partial_json": frag},
            }
            out.append((_ev(b"content_block_delta", delta), 1 if frag else 0))
        block_stop()
        idx += 1
    md = {
        "type": "message_delta",
        "delta": {
            "stop_reason": _STOP[ch.finish],
            "stop_sequence": ch.stop_seq if ch.finish == "stop_sequence" else None,
        },
        "usage": {"output_tokens": res.completion_tokens},
    }
    out.append((_ev(b"message_delta", md), 0))
    out.append((b'event: message_stop\ndata: {"type":"message_stop"}\n\n', 0))
    return out


def _words(text: str) -> list[str]:
    from .engine import split_pieces

    return split_pieces(text)


def malformed_body(req: Req) -> bytes:
    return b'{"id":"' + new_id().encode() + b'","type":"message","role":"assistant","content":[{"type":"te'


def malformed_chunk() -> bytes:
    return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n'


def render_count(req: Req) -> bytes:
    from .engine import count_tokens

    return orjson.dumps({"input_tokens": count_tokens(req)})


def render_models(names: list[str]) -> bytes:
    data = [
        {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"} for n in names
    ]
    return orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    )


# --------------------------------------------------------------------------------------------- errors

_ERR = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def error(
    status: int,
    model: str = "",
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    etype, default = _ERR.get(status, ("api_error" if status >= 500 else "invalid_request_error", "Error"))
    rid = new_id("req_")
    body = orjson.dumps(
        {
            "type": "error",
            "error": {"type": etype, "message": message or default.format(model=model)},
            "request_id": rid,
        }
    )
    headers = [("content-type", "application/json"), ("request-id", rid)]
    if status == 429 or (status >= 500 and retry_after is not None):
        headers.append(("retry-after", str(ceil_int(retry_after if retry_after is not None else 1.0))))
    if status in (429, 500, 503, 529):
        headers.append(("x-should-retry", "true"))
    return status, headers, body
