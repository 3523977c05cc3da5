"""The Anthropic dialect: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` in Anthropic's own shapes.

Callers point the official ``anthropic`` SDK at the gateway; the request becomes the canonical (OpenAI-shaped)
ChatRequest, so any provider can answer it, and the answer goes back as an Anthropic Message or event stream.

Mapping (Anthropic → canonical):

- ``system`` (string or text blocks) → one leading ``system`` message (blocks kept as text parts, so their
  ``cache_control`` survives to an Anthropic upstream).
- text / image blocks (base64 or url) → ``text`` / ``image_url`` parts (base64 becomes a data URL).
- ``tool_use`` blocks → the assistant message's ``tool_calls``; ``tool_result`` blocks → ``tool`` messages placed
  before the rest of that user turn (``is_error`` and ``cache_control`` ride in ``Message.extra``).
- ``thinking`` / ``redacted_thinking`` blocks → ``Message.reasoning`` + ``extra`` (signature, redacted data).
- ``tools`` → function tools; ``tool_choice`` auto/any/tool/none → "auto"/"required"/named/"none";
  ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``.
- ``stop_sequences`` → ``stop``; ``metadata.user_id`` → ``user``; ``output_config.format`` (or the beta
  ``output_format``) → ``response_format`` json_schema; ``output_config.effort`` → ``reasoning_effort``.
- ``top_k``, ``thinking``, ``service_tier``, top-level ``cache_control``, ``context_management``: no canonical field, carried in ``extra``
  under their own names; the Anthropic, Gemini and Bedrock adapters translate them, others pass them on or refuse.
- ``thread`` (create / continue): validated here, then taken out of the request by the threads stage, which
  keeps the conversation (see gateway/conversations/threads.py); a continue may send no new message.
- Anything else (``mcp_servers``, ``container``, server tools, documents …) → 400 ``unsupported_feature``.

Usage rule: canonical ``input_tokens`` is the whole prompt; Anthropic's ``input_tokens`` excludes cache reads and
writes, so rendering subtracts them again (``cache_read_input_tokens`` = cached, ``cache_creation_input_tokens``
= cache creation). A same-dialect round trip therefore shows the caller exactly the upstream's numbers.

A ``cache_control`` marker on a tool definition rides on the canonical function definition to an Anthropic
upstream (other upstreams cache without markers or not at all, and never see it). ``context_management`` is
carried for Anthropic upstreams; any other upstream refuses it.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.anthropic_wire import FINISH_TO_STOP, usage_to_wire
from gateway.dialects.openai import load_json_object
from gateway.errors import GatewayError, invalid_request, unsupported_feature
from gateway.types import ChatChunk, ChatRequest, ChatResponse, FunctionDef, Message, Tool, Usage

# Top-level fields with a translation (typed or via ``extra``); anything else is refused, never dropped.
_TYPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
    }
)
_MAPPED = frozenset({"tools", "tool_choice", "output_config", "output_format", "thread"})
_CARRIED = frozenset({"top_k", "thinking", "service_tier", "cache_control", "context_management"})

# Our error status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# ---------------------------------------------------------------- request: Anthropic → canonical


def parse_chat(body: bytes) -> ChatRequest:
    return request_from_anthropic(load_json_object(body))


def request_from_anthropic(data: dict[str, Any], require_max_tokens: bool = True) -> ChatRequest:
    """An Anthropic Messages request as the canonical ChatRequest (Anthropic's own error wording where it has one)."""
    for key in data:
        if key not in _TYPED and key not in _MAPPED and key not in _CARRIED:
            raise unsupported_feature(f"the request field `{key}`")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Field required", "model")
    thread = _thread(data.get("thread"))
    raw_messages = data.get("messages")
    continues = thread is not None and thread["type"] == "continue"
    if not isinstance(raw_messages, list) or not (raw_messages or continues):
        raise invalid_request("messages: Field required (a non-empty list of messages)", "messages")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        if require_max_tokens:
            raise invalid_request("max_tokens: Field required", "max_tokens")
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid_request(
            "max_tokens: Input should be an integer greater than or equal to 1", "max_tokens"
        )
    temperature = data.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
        raise invalid_request("temperature: Input should be a number between 0 and 1", "temperature")
    top_p = data.get("top_p")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 <= top_p <= 1):
        raise invalid_request("top_p: Input should be a number between 0 and 1", "top_p")
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):  # "yes" is not true
        raise invalid_request("stream: Input should be a valid boolean", "stream")

    messages: list[Message] = []
    system = data.get("system")
    if system:
        messages.append(Message(role="system", content=_system_content(system)))
    for i, m in enumerate(raw_messages):
        messages.extend(_message(m, i))

    extra: dict[str, Any] = {k: data[k] for k in _CARRIED if k in data}
    if thread is not None:
        extra["thread"] = thread  # taken out by the threads stage (gateway.conversations.threads)
    req = ChatRequest(
        model=model,
        # a continued thread may add nothing (the kept turn resumes); the threads stage puts the history first
        messages=messages or [Message(role="user", content="")],
        stream=bool(stream),
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        stop=_stop_sequences(data.get("stop_sequences")),
        user=_user(data.get("metadata")),
        extra=extra,
    )
    _tools(data, req)
    _output(data, req)
    return req


def _thread(value: Any) -> dict[str, Any] | None:
    """``thread``: ``{"type": "create"}`` or ``{"type": "continue", "previous_message_id": "msg_…"}``."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "create":
        return {"type": "create"}
    if (
        kind == "continue"
        and isinstance(value.get("previous_message_id"), str)
        and value["previous_message_id"]
    ):
        return {"type": "continue", "previous_message_id": value["previous_message_id"]}
    raise invalid_request(
        "thread: Input should be {type: create} or {type: continue, previous_message_id: <message id>}",
        "thread",
    )


def _system_content(system: Any) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise invalid_request("system: Input should be a string or a list of text blocks", "system")
    parts = []
    for j, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise invalid_request(f"system.{j}: Input should be a text block", f"system.{j}")
        parts.append(_text_part(b))
    return parts


def _text_part(b: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": b["text"]}
    if b.get("cache_control"):
        part["cache_control"] = b["cache_control"]
    return part


def _image_part(b: dict[str, Any], where: str) -> dict[str, Any]:
    raw = b.get("source")
    src: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kind = src.get("type") if isinstance(raw, dict) else None
    if kind == "base64":
        url = f"data:{src.get('media_type') or 'image/png'};base64,{src.get('data') or ''}"
    elif kind == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    elif kind is None:
        raise invalid_request(f"{where}.source: Field required", f"{where}.source")
    else:
        raise unsupported_feature(f"image source type `{kind}` (use base64 or url)")
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if b.get("cache_control"):
        part["cache_control"] = b["cache_control"]
    return part


def _message(m: Any, i: int) -> list[Message]:
    """One Anthropic message → canonical messages (a user turn with tool results becomes several)."""
    where = f"messages.{i}"
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
        raise invalid_request(f"{where}.role: Input should be 'user' or 'assistant'", f"{where}.role")
    role, content = m["role"], m.get("content")
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    if not isinstance(content, list):
        raise invalid_request(
            f"{where}.content: Input should be a string or a list of content blocks", f"{where}.content"
        )
    return _user_blocks(content, where) if role == "user" else [_assistant_blocks(content, where)]


def _user_blocks(blocks: list[Any], where: str) -> list[Message]:
    results: list[Message] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text" and isinstance(b.get("text"), str):
            parts.append(_text_part(b))
        elif kind == "image":
            parts.append(_image_part(b, at))
        elif kind == "tool_result":
            results.append(_tool_result(b, at))
        elif kind is None:
            raise invalid_request(f"{at}: Input should be a content block with a type", at)
        else:
            raise unsupported_feature(f"`{kind}` content blocks")
    out = results
    if parts:
        out.append(Message(role="user", content=parts))
    return out


def _tool_result(b: dict[str, Any], where: str) -> Message:
    call_id = b.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_request(f"{where}.tool_use_id: Field required", f"{where}.tool_use_id")
    raw = b.get("content")
    content: str | list[dict[str, Any]]
    if raw is None:
        content = ""
    elif isinstance(raw, str):
        content = raw
    elif isinstance(raw, list):
        content = []
        for k, sub in enumerate(raw):
            kind = sub.get("type") if isinstance(sub, dict) else None
            if kind == "text" and isinstance(sub.get("text"), str):
                content.append(_text_part(sub))
            elif kind == "image":
                content.append(_image_part(sub, f"{where}.content.{k}"))
            else:
                raise unsupported_feature(f"`{kind}` blocks inside a tool_result")
    else:
        raise invalid_request(
            f"{where}.content: Input should be a string or a list of blocks", f"{where}.content"
        )
    extra: dict[str, Any] = {}
    if b.get("is_error"):
        extra["is_error"] = True
    if b.get("cache_control"):
        extra["cache_control"] = b["cache_control"]
    return Message(role="tool", tool_call_id=call_id, content=content, extra=extra or None)


def _assistant_blocks(blocks: list[Any], where: str) -> Message:
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    extra: dict[str, Any] = {}
    for j, b in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text" and isinstance(b.get("text"), str):
            texts.append(_text_part(b))
        elif kind == "tool_use":
            if not b.get("id") or not b.get("name"):
                raise invalid_request(f"{at}: a tool_use block needs id and name", at)
            calls.append(
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()},
                }
            )
        elif kind == "thinking":
            reasoning.append(_string(b, "thinking", at))
            if b.get("signature"):
                extra["reasoning_signature"] = _string(b, "signature", at)
        elif kind == "redacted_thinking":
            extra.setdefault("redacted_thinking", []).append(_string(b, "data", at))
        elif kind is None:
            raise invalid_request(f"{at}: Input should be a content block with a type", at)
        else:
            raise unsupported_feature(f"`{kind}` content blocks")
    content: str | list[dict[str, Any]] | None = None
    if texts:
        # Plain text joins into a string (what every upstream accepts); cache markers need the parts kept.
        content = texts if any("cache_control" in t for t in texts) else "".join(t["text"] for t in texts)
    return Message(
        role="assistant",
        content=content,
        tool_calls=calls or None,
        reasoning="".join(reasoning) if reasoning else None,
        extra=extra or None,
    )


def _string(block: dict[str, Any], field: str, at: str) -> str:
    """A block's text field: a string (missing or null reads as empty), anything else is the caller's error."""
    value = block.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_request(f"{at}.{field}: Input should be a valid string", f"{at}.{field}")
    return value


def _stop_sequences(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise invalid_request("stop_sequences: Input should be a list of strings", "stop_sequences")
    return value or None


def _user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise invalid_request("metadata: Input should be an object", "metadata")
    for key in metadata:
        if key != "user_id":
            raise invalid_request(f"metadata.{key}: Extra inputs are not permitted", f"metadata.{key}")
    uid = metadata.get("user_id")
    return uid if isinstance(uid, str) else None


def _tools(data: dict[str, Any], req: ChatRequest) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("tools: Input should be a list", "tools")
        out = []
        for j, t in enumerate(tools):
            if not isinstance(t, dict):
                raise invalid_request(f"tools.{j}: Input should be an object", f"tools.{j}")
            kind = t.get("type")
            if kind not in (None, "custom"):
                raise unsupported_feature(f"server tool `{kind}`")
            if not isinstance(t.get("name"), str) or not t["name"]:
                raise invalid_request(f"tools.{j}.name: Field required", f"tools.{j}.name")
            schema = t.get("input_schema")
            if not isinstance(schema, dict):
                raise invalid_request(f"tools.{j}.input_schema: Field required", f"tools.{j}.input_schema")
            out.append(
                Tool(
                    function=FunctionDef(
                        name=t["name"],
                        description=t.get("description"),
                        parameters=schema,
                        strict=t.get("strict"),
                        cache_control=t.get("cache_control"),
                    )
                )
            )
        req.tools = out or None
    choice = data.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        req.tool_choice = "auto"
    elif kind == "any":
        req.tool_choice = "required"
    elif kind == "none":
        req.tool_choice = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        req.tool_choice = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise invalid_request(
            "tool_choice: Input should be auto, any, tool (with a name) or none", "tool_choice"
        )
    if choice.get("disable_parallel_tool_use"):
        req.parallel_tool_calls = False


def _output(data: dict[str, Any], req: ChatRequest) -> None:
    cfg = data.get("output_config")
    fmt = data.get("output_format")
    if cfg is not None:
        if not isinstance(cfg, dict):
            raise invalid_request("output_config: Input should be an object", "output_config")
        for key in cfg:
            if key not in ("format", "effort"):
                raise unsupported_feature(f"`output_config.{key}`")
        if cfg.get("effort") is not None:
            req.extra["reasoning_effort"] = cfg["effort"]
        fmt = cfg.get("format") or fmt
    if fmt is None:
        return
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), dict)
    ):
        raise invalid_request(
            "output format: expected {type: json_schema, schema: {...}}", "output_config.format"
        )
    req.response_format = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
    }


# Betas whose feature the gateway serves itself, for every provider: accepted, never forwarded.
SERVED_BETAS = ("message-threads-", "structured-outputs-")


def betas_into(req: ChatRequest, header: str | None, allowed: list[str]) -> None:
    """``anthropic-beta`` → ``req.extra["anthropic_beta"]`` (the Anthropic adapter sends it on, every other adapter
    refuses it); a beta this gateway does not allow is refused here, never dropped."""
    if not header:
        return
    betas = [b.strip() for b in header.split(",") if b.strip() and not b.strip().startswith(SERVED_BETAS)]
    refused = [b for b in betas if b not in allowed]
    if refused:
        raise GatewayError(
            "unsupported_feature",
            f"The anthropic-beta {', '.join(refused)} is not enabled on this gateway (server.anthropic_betas); "
            "remove it, or ask an admin to allow it.",
            param="anthropic-beta",
        )
    if betas:
        req.extra["anthropic_beta"] = betas


# ---------------------------------------------------------------- response: canonical → Anthropic


def message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"


def stop_reason(finish: str | None, stop_sequence: str | None) -> str:
    if stop_sequence is not None:
        return "stop_sequence"
    return FINISH_TO_STOP.get(finish or "stop", "end_turn")


def tool_input(arguments: Any) -> Any:
    """Arguments JSON → the object Anthropic shows; arguments that aren't JSON are kept as a string field."""
    if not arguments:
        return {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}


def response_dict(resp: ChatResponse) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else None
    m = choice.message if choice else Message(role="assistant")
    content: list[dict[str, Any]] = []
    extra = m.extra or {}
    if m.reasoning is not None:
        content.append(
            {"type": "thinking", "thinking": m.reasoning, "signature": extra.get("reasoning_signature", "")}
        )
    for data in extra.get("redacted_thinking", ()):
        content.append({"type": "redacted_thinking", "data": data})
    text = m.content if isinstance(m.content, str) else (None if m.content is None else _joined(m.content))
    if text or (text is not None and not m.tool_calls):
        content.append({"type": "text", "text": text})
    for tc in m.tool_calls or ():
        fn = tc.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or "",
                "name": fn.get("name") or "",
                "input": tool_input(fn.get("arguments")),
            }
        )
    stop_seq = choice.stop_sequence if choice else None
    return {
        "id": message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason if choice else None, stop_seq),
        "stop_sequence": stop_seq,
        "usage": usage_to_wire(resp.usage),
    }


def _joined(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def render_response(resp: ChatResponse) -> bytes:
    return orjson.dumps(response_dict(resp))


# ---------------------------------------------------------------- errors


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_dict(err: GatewayError) -> dict[str, Any]:
    e: dict[str, Any] = {"type": error_type(err.status), "message": err.message, "code": err.code}
    if err.param:
        e["param"] = err.param
    if err.details:
        e["details"] = err.details
    return {"type": "error", "error": e}


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps(error_dict(err))


# ---------------------------------------------------------------- streams


def _event(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


_NO_USAGE = {"input_tokens": 0, "output_tokens": 0}
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP_EVENT = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class AnthropicStream:
    """Canonical chunks → Anthropic's event sequence.

    ``message_start`` (+ ``ping``) on the first chunk; one ``content_block_start`` / ``_delta`` / ``_stop`` run per
    block (thinking, text, each tool call), opened lazily as deltas arrive; ``message_delta`` with the stop reason
    and the complete usage, then ``message_stop``, from :meth:`end`. ``message_start`` carries the prompt's
    tokens as Anthropic's API does: the upstream's own numbers when it reported them up front (an Anthropic
    upstream, a cached answer), else the gateway's count for the deployment that answers (the relay adds it,
    see ``counts_prompt``). ``message_delta`` then carries the upstream's final totals, which the SDKs keep.
    """

    counts_prompt = True  # message_start announces the prompt's tokens

    __slots__ = ("block", "btype", "finish", "model", "next_index", "started", "stop_sequence", "tools")

    def __init__(self, req: ChatRequest) -> None:
        self.model = req.model
        self.started = False
        self.block = -1  # index of the open block, -1 when none
        self.btype = ""  # "text" | "thinking" | "tool_use"
        self.next_index = 0
        self.tools: dict[int, int] = {}  # canonical tool-call index → block index
        self.finish: str | None = None
        self.stop_sequence: str | None = None

    def _start(self, chunk: ChatChunk | None) -> bytes:
        self.started = True
        msg: dict[str, Any] = {
            "id": message_id(chunk.id if chunk and chunk.id else "gateway"),
            "type": "message",
            "role": "assistant",
            "model": (chunk.model if chunk and chunk.model else self.model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_to_wire(chunk.prompt) if chunk and chunk.prompt else _NO_USAGE,
        }
        return _event(b"message_start", {"type": "message_start", "message": msg}) + _PING

    def _close(self) -> bytes:
        if self.block < 0:
            return b""
        out = _event(b"content_block_stop", {"type": "content_block_stop", "index": self.block})
        self.block, self.btype = -1, ""
        return out

    def _open(self, btype: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block, self.btype = self.next_index, btype
        self.next_index += 1
        return out + _event(
            b"content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def chunk(self, c: ChatChunk) -> bytes | None:
        out = b"" if self.started else self._start(c)
        for d in c.choices:
            if d.index != 0:
                continue  # Anthropic has one answer per message; n > 1 never reaches this dialect
            if d.reasoning:
                if self.btype != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta(self.block, {"type": "thinking_delta", "thinking": d.reasoning})
            if d.extra and d.extra.get("reasoning_signature"):
                if self.btype != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                sig = d.extra["reasoning_signature"]
                out += self._delta(self.block, {"type": "signature_delta", "signature": sig})
            if d.content:
                if self.btype != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._delta(self.block, {"type": "text_delta", "text": d.content})
            for tc in d.tool_calls or ():
                out += self._tool(tc)
            if d.finish_reason is not None:
                self.finish = d.finish_reason
            if d.stop_sequence is not None:
                self.stop_sequence = d.stop_sequence
        return out or None

    def _tool(self, tc: dict[str, Any]) -> bytes:
        out = b""
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        block = self.tools.get(i)
        if block is None:
            block_def: dict[str, Any] = {
                "type": "tool_use",
                "id": tc.get("id") or f"toolu_{i}",
                "name": fn.get("name") or "",
                "input": {},
            }
            out += self._open("tool_use", block_def)
            block = self.tools[i] = self.block
        args = fn.get("arguments")
        if args:
            out += self._delta(block, {"type": "input_json_delta", "partial_json": args})
        return out

    def end(self, usage: Usage, last: ChatChunk | None) -> bytes:
        out = b"" if self.started else self._start(last)
        out += self._close()
        delta = {
            "stop_reason": stop_reason(self.finish, self.stop_sequence),
            "stop_sequence": self.stop_sequence,
        }
        out += _event(
            b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage_to_wire(usage)}
        )
        return out + _STOP_EVENT

    def error(self, err: GatewayError) -> bytes:
        return _event(b"error", error_dict(err))


class AnthropicDialect:
    name = "anthropic"
    parse_chat = staticmethod(parse_chat)
    render_response = staticmethod(render_response)
    error_body = staticmethod(error_body)
    stream = AnthropicStream
    stream_content_type = "text/event-stream"
