"""The OpenAI dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models`` in and out.

Parsing happens once (orjson → msgspec, which names the bad field). Rendering relays the upstream's bytes
untouched when it already speaks OpenAI and no stage changed the response.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson

from gateway.errors import GatewayError
from gateway.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage

CHAT_FIELDS = frozenset(ChatRequest.__struct_fields__) - {"extra"}
EMBED_FIELDS = frozenset(EmbeddingRequest.__struct_fields__) - {"extra"}
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")

SSE_DONE = b"data: [DONE]\n\n"


# How deeply a request body may nest. The gateway re-encodes what it forwards, and its encoder stops at 253
# levels (the decoder at 1024): a deeper body is refused here, as the caller's error, not found out later.
MAX_DEPTH = 128


def load_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object, with errors a caller can act on."""
    if not body:
        raise GatewayError("invalid_json", "The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise GatewayError(
            "invalid_json", f"The request body is not valid JSON: {e}. Send a JSON object."
        ) from None
    if not isinstance(data, dict):
        raise GatewayError("invalid_json", "The request body must be a JSON object.")
    # fewer brackets than the limit can't nest past it: most bodies skip the walk
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and too_deep(data, MAX_DEPTH):
        raise GatewayError(
            "invalid_json",
            f"The request body nests JSON more than {MAX_DEPTH} levels deep; flatten it.",
        )
    return data


def too_deep(data: Any, limit: int) -> bool:
    """Whether ``data`` nests containers more than ``limit`` levels (iterative: no recursion to run out of)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def convert(data: dict[str, Any], typ: type[Any], fields: frozenset[str]) -> Any:
    """Split ``data`` into typed fields and pass-through extras, and validate the typed part."""
    known = {k: v for k, v in data.items() if k in fields}
    try:
        obj = msgspec.convert(known, typ)
    except msgspec.ValidationError as e:
        text = str(e)
        m = _AT_PATH.search(text)
        param = m.group(1) if m else None
        detail = _AT_PATH.sub("", text)
        where = f" at `{param}`" if param else ""
        raise GatewayError("invalid_request", f"Invalid request{where}: {detail}.", param=param) from None
    if len(known) != len(data):
        obj.extra = {k: v for k, v in data.items() if k not in fields}
    return obj


ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_chat(body: bytes) -> ChatRequest:
    req: ChatRequest = convert(load_json_object(body), ChatRequest, CHAT_FIELDS)
    check_messages(req)
    return req


def check_messages(req: ChatRequest) -> None:
    """What the types leave open: a role OpenAI knows, and content parts that say their ``type`` (a part
    without one would be forwarded unscanned by the PII stage, which reads parts by type)."""
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise GatewayError(
                "invalid_request",
                f"Invalid value for messages[{i}].role: {m.role[:40]!r}; one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if not isinstance(part.get("type"), str):
                    raise GatewayError(
                        "invalid_request",
                        f"messages[{i}].content[{j}] needs a string 'type' (text, image_url, input_audio, file).",
                        param=f"messages[{i}].content[{j}].type",
                    )


def parse_embeddings(body: bytes) -> EmbeddingRequest:
    return convert(load_json_object(body), EmbeddingRequest, EMBED_FIELDS)


# ---------------------------------------------------------------- rendering


def usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def response_dict(resp: ChatResponse) -> dict[str, Any]:
    choices = []
    for c in resp.choices:
        m = c.message
        msg: dict[str, Any] = {"role": "assistant", "content": m.content, "refusal": None}
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        if m.reasoning:
            msg["reasoning_content"] = m.reasoning
        choices.append({"index": c.index, "message": msg, "finish_reason": c.finish_reason, "logprobs": None})
    out: dict[str, Any] = {
        "id": resp.id,
        "object": "chat.completion",
        "created": resp.created,
        "model": resp.model,
        "choices": choices,
        "usage": usage_dict(resp.usage),
    }
    if resp.system_fingerprint:
        out["system_fingerprint"] = resp.system_fingerprint
    return out


def render_response(resp: ChatResponse) -> bytes:
    return resp.raw if resp.raw is not None else orjson.dumps(response_dict(resp))


def chunk_dict(chunk: ChatChunk) -> dict[str, Any]:
    choices = []
    for d in chunk.choices:
        delta: dict[str, Any] = {}
        if d.role:
            delta["role"] = d.role
        if d.content is not None:
            delta["content"] = d.content
        if d.tool_calls:
            delta["tool_calls"] = d.tool_calls
        if d.reasoning is not None:
            delta["reasoning_content"] = d.reasoning
        choices.append({"index": d.index, "delta": delta, "finish_reason": d.finish_reason, "logprobs": None})
    out: dict[str, Any] = {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
        "choices": choices,
    }
    if chunk.usage is not None:
        out["usage"] = usage_dict(chunk.usage)
    return out


def render_chunk(chunk: ChatChunk) -> bytes:
    body = chunk.raw if chunk.raw is not None else orjson.dumps(chunk_dict(chunk))
    return b"data: " + body + b"\n\n"


def render_stream_end() -> bytes:
    return SSE_DONE


def render_embeddings(resp: EmbeddingResponse) -> bytes:
    if resp.raw is not None:
        return resp.raw
    return orjson.dumps(
        {
            "object": "list",
            "model": resp.model,
            "data": [{"object": "embedding", "index": e.index, "embedding": e.embedding} for e in resp.data],
            "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.input_tokens},
        }
    )


def render_models(names: list[str], created: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "gateway"} for n in names],
        }
    )


def error_body(err: GatewayError) -> bytes:
    e: dict[str, Any] = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    if err.details:
        e["details"] = err.details
    return orjson.dumps({"error": e})


def render_stream_error(err: GatewayError) -> bytes:
    """An error after the first byte of a stream: a final SSE event in OpenAI's error shape."""
    return b"data: " + error_body(err) + b"\n\n"


class OpenAIStream:
    """Frames canonical chunks as OpenAI SSE. Drops the usage-only chunk the gateway asked upstream for when the
    caller did not ask for it, and adds one (with the gateway's own count) when the caller asked but the upstream
    sent none."""

    __slots__ = ("model", "usage_sent", "want_usage")

    counts_prompt = False  # the prompt's tokens are reported with the final usage only

    def __init__(self, req: ChatRequest) -> None:
        self.want_usage = req.wants_usage_in_stream
        self.usage_sent = False
        self.model = req.model

    def chunk(self, c: ChatChunk) -> bytes | None:
        if c.usage is not None:
            if not self.want_usage:
                if not c.choices:
                    return None
                c = ChatChunk(id=c.id, model=c.model, created=c.created, choices=c.choices)
            else:
                self.usage_sent = True
        return render_chunk(c)

    def end(self, usage: Usage, last: ChatChunk | None) -> bytes:
        if self.want_usage and not self.usage_sent:
            tail = ChatChunk(
                id=last.id if last else "",
                model=last.model if last else self.model,
                created=last.created if last else 0,
                choices=[],
                usage=usage,
            )
            return render_chunk(tail) + SSE_DONE
        return SSE_DONE

    def error(self, err: GatewayError) -> bytes:
        return render_stream_error(err)


class OpenAIDialect:
    name = "openai"
    parse_chat = staticmethod(parse_chat)
    render_response = staticmethod(render_response)
    error_body = staticmethod(error_body)
    stream = OpenAIStream
    stream_content_type = "text/event-stream"
