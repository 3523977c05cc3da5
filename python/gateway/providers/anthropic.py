"""Anthropic Messages upstreams (``POST /v1/messages``), JSON and event stream.

Canonical → wire: system and developer messages are hoisted into ``system``; ``tool`` messages become
``tool_result`` blocks in a user turn (consecutive results share one turn, as Anthropic requires); images become
base64 or url sources; ``tool_choice`` auto/required/none/named → auto/any/none/tool; ``parallel_tool_calls:
false`` → ``disable_parallel_tool_use``; ``response_format`` → ``output_config.format``; ``max_tokens`` defaults to
:data:`DEFAULT_MAX_TOKENS` because Anthropic requires it. ``top_k``, ``thinking``, ``service_tier``,
``cache_control`` (carried in ``extra`` by the Anthropic dialect) pass through; other extras are refused.

Usage rule: Anthropic's ``input_tokens`` excludes the prompt tokens read from or written to the cache. Canonical
``input_tokens`` is the whole prompt (cache reads and writes are subsets of it, and pricing bills each once), so

    input_tokens          = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
    cached_tokens         = cache_read_input_tokens
    cache_creation_tokens = cache_creation_input_tokens

and :func:`usage_to_wire` applies the inverse for the Anthropic dialect.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from gateway.anthropic_wire import ERROR_STATUS, STOP_TO_FINISH
from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient, UpstreamResponse
from gateway.providers.base import ChunkDecoder, Provider, SseFramer
from gateway.providers.convert import (
    DEFAULT_MAX_TOKENS,
    assistant_message,
    check_common,
    check_extras,
    dump_arguments,
    image_url_of,
    json_schema_of,
    now,
    parse_arguments,
    parse_data_url,
    split_system,
    stop_list,
    unsupported,
)
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Choice, Delta, Message, Usage

DEFAULT_VERSION = "2023-06-01"
DEFAULT_BASE = "https://api.anthropic.com"
HANDLED_EXTRAS = frozenset(
    {
        "top_k",
        "thinking",
        "service_tier",
        "cache_control",
        "reasoning_effort",
        "context_management",
        "anthropic_beta",
    }
)

# ---------------------------------------------------------------- wire types (decode only what we read)


class _OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = 0


class WireUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class _Message(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: WireUsage | None = None


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class _ErrorInfo(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _Event(msgspec.Struct):
    type: str
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: WireUsage | None = None
    error: _ErrorInfo | None = None


_message_decoder = msgspec.json.Decoder(_Message)
_event_decoder = msgspec.json.Decoder(_Event)

# ---------------------------------------------------------------- usage


def usage_from_wire(u: WireUsage | None) -> Usage:
    if u is None:
        return Usage()
    read = u.cache_read_input_tokens or 0
    created = u.cache_creation_input_tokens or 0
    return Usage(
        input_tokens=(u.input_tokens or 0) + read + created,
        output_tokens=u.output_tokens or 0,
        cached_tokens=read,
        cache_creation_tokens=created,
        reasoning_tokens=(u.output_tokens_details.thinking_tokens or 0) if u.output_tokens_details else 0,
    )


def _merge_usage(base: WireUsage | None, update: WireUsage | None) -> WireUsage | None:
    """message_delta usage is cumulative: its fields, when present, replace message_start's."""
    if update is None:
        return base
    if base is None:
        return update
    return WireUsage(
        input_tokens=update.input_tokens if update.input_tokens is not None else base.input_tokens,
        output_tokens=update.output_tokens if update.output_tokens is not None else base.output_tokens,
        cache_read_input_tokens=update.cache_read_input_tokens
        if update.cache_read_input_tokens is not None
        else base.cache_read_input_tokens,
        cache_creation_input_tokens=update.cache_creation_input_tokens
        if update.cache_creation_input_tokens is not None
        else base.cache_creation_input_tokens,
        output_tokens_details=update.output_tokens_details or base.output_tokens_details,
    )


# ---------------------------------------------------------------- request: canonical → wire


def _text_block(text: str, cache_control: Any = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cache_control:
        block["cache_control"] = cache_control
    return block


def _part_to_block(part: dict[str, Any], dep: Deployment) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text") or ""
        return _text_block(text, part.get("cache_control")) if text else None  # Anthropic rejects empty text
    if kind == "image_url":
        url = image_url_of(part)
        data = parse_data_url(url)
        source: dict[str, Any] = (
            {"type": "base64", "media_type": data[0], "data": data[1]}
            if data
            else {"type": "url", "url": url}
        )
        block = {"type": "image", "source": source}
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        return block
    raise unsupported(dep, f"`{kind}` content parts")


def _blocks(content: str | list[dict[str, Any]] | None, dep: Deployment) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    return [b for b in (_part_to_block(p, dep) for p in content) if b is not None]


def system_to_wire(system: list[Message], dep: Deployment) -> str | list[dict[str, Any]]:
    if len(system) == 1 and isinstance(system[0].content, str):
        return system[0].content
    return [b for m in system for b in _blocks(m.content, dep)]


def _assistant_blocks(m: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    extra = m.extra or {}
    # A thinking block is only valid with Anthropic's signature; reasoning from other providers is not resent.
    if m.reasoning is not None and extra.get("reasoning_signature"):
        blocks.append(
            {"type": "thinking", "thinking": m.reasoning, "signature": extra["reasoning_signature"]}
        )
    for data in extra.get("redacted_thinking", ()):
        blocks.append({"type": "redacted_thinking", "data": data})
    return blocks


def _tool_result(m: Message, dep: Deployment) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
    if isinstance(m.content, str) or m.content is None:
        block["content"] = m.content or ""
    else:
        block["content"] = _blocks(m.content, dep)
    extra = m.extra or {}
    if extra.get("is_error"):
        block["is_error"] = True
    if extra.get("cache_control"):
        block["cache_control"] = extra["cache_control"]
    return block


def messages_to_wire(messages: list[Message], dep: Deployment) -> list[dict[str, Any]]:
    """Canonical turns → Anthropic turns: tool results join a user turn and same-role neighbours merge."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "user":
            role = "user"
            content: str | list[dict[str, Any]] = (
                m.content if isinstance(m.content, str) else _blocks(m.content, dep)
            )
        elif m.role in ("tool", "function"):
            role, content = "user", [_tool_result(m, dep)]
        elif m.role == "assistant":
            role = "assistant"
            blocks = _assistant_blocks(m) + _blocks(m.content, dep)
            for tc in m.tool_calls or ():
                fn = tc.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tc.get("id") or "",
                        "name": fn.get("name") or "",
                        "input": parse_arguments(fn.get("arguments")),
                    }
                )
            if not blocks:
                continue  # an empty assistant turn carries nothing and Anthropic rejects it
            content = blocks
        else:
            raise GatewayError("invalid_request", f"Unknown message role {m.role!r}.", param="messages")
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            prev_blocks = [_text_block(prev)] if isinstance(prev, str) else prev
            new_blocks = [_text_block(content)] if isinstance(content, str) else content
            out[-1]["content"] = prev_blocks + [b for b in new_blocks if b.get("text", True) != ""]
        else:
            out.append({"role": role, "content": content})
    return out


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    choice: dict[str, Any] | None
    if tc is None:
        choice = None
    elif tc == "auto":
        choice = {"type": "auto"}
    elif tc == "required":
        choice = {"type": "any"}
    elif tc == "none":
        choice = {"type": "none"}
    elif isinstance(tc, dict) and isinstance((tc.get("function") or {}).get("name"), str):
        choice = {"type": "tool", "name": tc["function"]["name"]}
    else:
        raise GatewayError("invalid_request", f"Unsupported tool_choice {tc!r}.", param="tool_choice")
    if req.parallel_tool_calls is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


def request_to_wire(req: ChatRequest, dep: Deployment, stream: bool = False) -> dict[str, Any]:
    check_common(req, dep)
    check_extras(req, dep, HANDLED_EXTRAS)
    if req.temperature is not None and req.temperature > 1:
        raise unsupported(
            dep, "a temperature above 1", "Anthropic models accept temperature between 0 and 1."
        )
    system, rest = split_system(req.messages)
    body: dict[str, Any] = {
        "model": dep.model,
        "max_tokens": req.output_cap or DEFAULT_MAX_TOKENS,
        "messages": messages_to_wire(rest, dep),
    }
    if system:
        body["system"] = system_to_wire(system, dep)
    if req.tools:
        tools = []
        for t in req.tools:
            f = t.function
            tool: dict[str, Any] = {
                "name": f.name,
                "input_schema": f.parameters or {"type": "object", "properties": {}},
            }
            if f.description:
                tool["description"] = f.description
            if f.strict:
                tool["strict"] = True
            if f.cache_control:
                tool["cache_control"] = f.cache_control
            tools.append(tool)
        body["tools"] = tools
        choice = _tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    stop = stop_list(req.stop)
    if stop:
        body["stop_sequences"] = stop
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    output: dict[str, Any] = {}
    schema = json_schema_of(req)
    if schema is not None:
        output["format"] = {"type": "json_schema", "schema": schema}
    extra = req.extra
    if extra:
        for key in (
            "top_k",
            "thinking",
            "service_tier",
            "cache_control",
            "context_management",
        ):  # not the beta
            if key in extra:
                body[key] = extra[key]
        if "reasoning_effort" in extra:
            output["effort"] = extra["reasoning_effort"]
    if output:
        body["output_config"] = output
    return body


def endpoint(dep: Deployment) -> str:
    base = dep.api_base.rstrip("/")
    if base == "https://api.openai.com/v1":  # the config default: this deployment meant Anthropic's own API
        base = DEFAULT_BASE
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def auth_headers(dep: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": dep.api_version or DEFAULT_VERSION}
    if dep.api_key:
        headers["x-api-key"] = dep.api_key
    headers.update(dep.headers)
    return headers


# ---------------------------------------------------------------- response: wire → canonical


def response_from_wire(body: bytes) -> ChatResponse:
    w = _message_decoder.decode(body)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    extra: dict[str, Any] = {}
    for b in w.content:
        if b.type == "text":
            texts.append(b.text or "")
        elif b.type == "tool_use":
            calls.append(
                {
                    "id": b.id or "",
                    "type": "function",
                    "function": {"name": b.name or "", "arguments": dump_arguments(b.input)},
                }
            )
        elif b.type == "thinking":
            reasoning.append(b.thinking or "")
            if b.signature:
                extra["reasoning_signature"] = b.signature
        elif b.type == "redacted_thinking":
            extra.setdefault("redacted_thinking", []).append(b.data or "")
    message = assistant_message(texts, calls, reasoning, extra)
    finish = STOP_TO_FINISH.get(w.stop_reason or "end_turn", "stop")
    return ChatResponse(
        id=w.id,
        model=w.model,
        created=now(),
        choices=[Choice(index=0, message=message, finish_reason=finish, stop_sequence=w.stop_sequence)],
        usage=usage_from_wire(w.usage),
    )


class StreamTranslator:
    """Anthropic stream events → canonical chunks (pure: feed it event data, it returns chunks).

    The first chunk carries the role; ``tool_use`` blocks become tool-call deltas (index, id, name, then argument
    fragments); ``message_stop`` yields a finish chunk and then a usage-only chunk (``choices == []``), the same
    shape an OpenAI upstream produces, so every dialect renders every provider the same way.
    """

    __slots__ = ("created", "done", "finish", "id", "model", "stop_sequence", "tools", "usage")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = now()
        self.usage: WireUsage | None = None
        self.tools: dict[int, int] = {}  # block index → tool-call index
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.done = False

    def _chunk(self, delta: Delta) -> ChatChunk:
        return ChatChunk(id=self.id, model=self.model, created=self.created, choices=[delta])

    def feed(self, data: bytes) -> list[ChatChunk]:
        e = _event_decoder.decode(data)
        t = e.type
        if t == "content_block_delta" and e.delta is not None:
            d = e.delta
            if d.type == "text_delta" and d.text:
                return [self._chunk(Delta(content=d.text))]
            if d.type == "input_json_delta" and d.partial_json:
                i = self.tools.get(e.index, 0)
                return [
                    self._chunk(Delta(tool_calls=[{"index": i, "function": {"arguments": d.partial_json}}]))
                ]
            if d.type == "thinking_delta" and d.thinking:
                return [self._chunk(Delta(reasoning=d.thinking))]
            if d.type == "signature_delta" and d.signature:
                return [self._chunk(Delta(extra={"reasoning_signature": d.signature}))]
            return []
        if t == "content_block_start" and e.content_block is not None:
            b = e.content_block
            if b.type == "tool_use":
                i = self.tools[e.index] = len(self.tools)
                call = {
                    "index": i,
                    "id": b.id or "",
                    "type": "function",
                    "function": {"name": b.name or "", "arguments": ""},
                }
                return [self._chunk(Delta(tool_calls=[call]))]
            if b.type == "text" and b.text:
                return [self._chunk(Delta(content=b.text))]
            if b.type == "redacted_thinking":
                return [self._chunk(Delta(extra={"redacted_thinking": [b.data or ""]}))]
            return []
        if t == "message_start" and e.message is not None:
            self.id, self.model = e.message.id, e.message.model
            self.usage = e.message.usage
            first = self._chunk(Delta(role="assistant", content=""))
            if self.usage is not None and self.usage.input_tokens is not None:
                first.prompt = usage_from_wire(self.usage)  # the prompt's tokens, known before any output
            return [first]
        if t == "message_delta":
            if e.delta is not None:
                self.finish = e.delta.stop_reason or self.finish
                self.stop_sequence = e.delta.stop_sequence or self.stop_sequence
            self.usage = _merge_usage(self.usage, e.usage)
            return []
        if t == "message_stop":
            self.done = True
            finish = STOP_TO_FINISH.get(self.finish or "end_turn", "stop")
            tail = ChatChunk(
                id=self.id,
                model=self.model,
                created=self.created,
                choices=[],
                usage=usage_from_wire(self.usage),
            )
            return [self._chunk(Delta(finish_reason=finish, stop_sequence=self.stop_sequence)), tail]
        if t == "error":
            err = e.error or _ErrorInfo()
            raise UpstreamError(ERROR_STATUS.get(err.type, 500), err.message or err.type)
        return []  # ping, content_block_stop, and event types added later


# ---------------------------------------------------------------- I/O


class SseDecoder:
    """Anthropic's event stream: SSE framing around :class:`StreamTranslator`, done at ``message_stop``."""

    __slots__ = ("sse", "tr")

    def __init__(self) -> None:
        self.sse = SseFramer()
        self.tr = StreamTranslator()

    @property
    def done(self) -> bool:
        return self.tr.done

    def feed(self, piece: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for _event, data in self.sse.feed(piece):
            out.extend(self.tr.feed(data))
            if self.tr.done:
                break
        return out

    def finish(self) -> list[ChatChunk]:
        raise UpstreamError(502, "stream ended before message_stop", bad_response=True)


class AnthropicProvider(Provider):
    def __init__(self, dep: Deployment, http: HttpClient) -> None:
        super().__init__(dep, http)
        self.url = endpoint(dep)
        self.headers = self.key_turns(auth_headers)

    def _headers(self, req: ChatRequest) -> dict[str, str]:
        headers = self.headers()
        betas = req.extra.get("anthropic_beta") if req.extra else None
        if not betas:
            return headers
        own = headers.get("anthropic-beta")
        return {**headers, "anthropic-beta": ",".join([own, *betas] if own else betas)}

    async def complete(self, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(request_to_wire(req, self.dep))
        return await self.post_json(self.url, body, self._headers(req), response_from_wire)

    async def open_stream(self, req: ChatRequest) -> tuple[UpstreamResponse, ChunkDecoder]:
        body = orjson.dumps(request_to_wire(req, self.dep, stream=True))
        return await self.post(self.url, body, self._headers(req), stream=True), SseDecoder()
