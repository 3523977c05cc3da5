"""AWS Bedrock upstreams through the Converse API: ``/model/{id}/converse`` and ``/converse-stream``.

Requests are signed with SigV4 (``sigv4.py``; service ``bedrock``) from the deployment's ``aws`` credentials, or
sent with a Bedrock API key (``api_key`` → ``Authorization: Bearer``) when the deployment has no ``aws`` block.
The AWS region comes from the ``api_base`` host (``bedrock-runtime.<region>.amazonaws.com``), else from the
deployment's ``region`` when it names an AWS region, else ``us-east-1``.

Canonical → wire: system/developer messages → ``system`` blocks; tool results → ``toolResult`` blocks in a user
turn (same-role neighbours merge); images must be data URLs (Bedrock takes bytes, not URLs); tools →
``toolConfig`` (``tool_choice`` auto/required/named → auto/any/tool; "none" drops the tools when the conversation
has no tool blocks, else it is refused: Converse has no "none"); ``user`` → ``requestMetadata.user``; ``top_k``
and ``thinking`` → ``additionalModelRequestFields`` (the Anthropic models' names). A ``cache_control`` marker on
a text block becomes a ``cachePoint`` after it. ``seed`` has no Converse equivalent and is not sent.

Streams arrive in AWS event-stream framing, decoded incrementally by ``eventstream.py``; usage comes from the
closing ``metadata`` event. Usage rule as Anthropic's: ``inputTokens`` excludes cache reads and writes, so canonical
``input_tokens = inputTokens + cacheReadInputTokens + cacheWriteInputTokens``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient
from gateway.providers import sigv4
from gateway.providers.base import Provider
from gateway.providers.convert import (
    assistant_message,
    check_common,
    check_extras,
    dump_arguments,
    image_url_of,
    now,
    parse_arguments,
    parse_data_url,
    split_system,
    stop_list,
    unsupported,
)
from gateway.providers.eventstream import EventStreamDecoder
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Choice, Delta, Message, Usage

HANDLED_EXTRAS = frozenset({"top_k", "thinking"})
STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# exception event type (lower camel case on the wire) → HTTP status
EXCEPTION_STATUS = {
    "throttlingException": 429,
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelStreamErrorException": 502,
    "modelErrorException": 502,
    "modelNotReadyException": 503,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
}
_HOST_REGION = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")
_AWS_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$")
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}

# ---------------------------------------------------------------- wire types (decode only what we read)


class WireUsage(msgspec.Struct):
    inputTokens: int = 0
    outputTokens: int = 0
    cacheReadInputTokens: int | None = 0
    cacheWriteInputTokens: int | None = 0


class _ToolUse(msgspec.Struct):
    toolUseId: str = ""
    name: str = ""
    input: Any = None


class _ReasoningText(msgspec.Struct):
    text: str = ""
    signature: str | None = None


class _Reasoning(msgspec.Struct):
    reasoningText: _ReasoningText | None = None
    redactedContent: str | None = None


class _Block(msgspec.Struct):
    text: str | None = None
    toolUse: _ToolUse | None = None
    reasoningContent: _Reasoning | None = None


class _Message(msgspec.Struct):
    content: list[_Block] = []
    role: str = "assistant"


class _Output(msgspec.Struct):
    message: _Message | None = None


class _Response(msgspec.Struct):
    output: _Output
    stopReason: str | None = None
    usage: WireUsage | None = None
    additionalModelResponseFields: dict[str, Any] | None = None


class _StartToolUse(msgspec.Struct):
    toolUseId: str = ""
    name: str = ""


class _Start(msgspec.Struct):
    toolUse: _StartToolUse | None = None


class _DeltaToolUse(msgspec.Struct):
    input: str = ""


class _DeltaReasoning(msgspec.Struct):
    text: str | None = None
    signature: str | None = None
    redactedContent: str | None = None


class _DeltaBody(msgspec.Struct):
    text: str | None = None
    toolUse: _DeltaToolUse | None = None
    reasoningContent: _DeltaReasoning | None = None


class _StreamEvent(msgspec.Struct):
    """The union of the payloads of every ConverseStream event type (each sets only its own fields)."""

    role: str | None = None
    contentBlockIndex: int = 0
    start: _Start | None = None
    delta: _DeltaBody | None = None
    stopReason: str | None = None
    additionalModelResponseFields: dict[str, Any] | None = None
    usage: WireUsage | None = None
    message: str | None = None  # exceptions


_response_decoder = msgspec.json.Decoder(_Response)
_event_decoder = msgspec.json.Decoder(_StreamEvent)

# ---------------------------------------------------------------- usage


def usage_from_wire(u: WireUsage | None) -> Usage:
    if u is None:
        return Usage()
    read = u.cacheReadInputTokens or 0
    written = u.cacheWriteInputTokens or 0
    return Usage(
        input_tokens=u.inputTokens + read + written,
        output_tokens=u.outputTokens,
        cached_tokens=read,
        cache_creation_tokens=written,
    )


# ---------------------------------------------------------------- request: canonical → wire

_CACHE_POINT = {"cachePoint": {"type": "default"}}


def _image(url: str, dep: Deployment) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is None:
        raise unsupported(dep, "image URLs", "Bedrock takes image bytes; send the image as a data URL.")
    fmt = _IMAGE_FORMATS.get(data[0])
    if fmt is None:
        raise unsupported(dep, f"images of type {data[0]}", "send png, jpeg, gif or webp.")
    return {"image": {"format": fmt, "source": {"bytes": data[1]}}}


def _blocks(content: str | list[dict[str, Any]] | None, dep: Deployment) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []  # Bedrock rejects blank text blocks
    out: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            if (p.get("text") or "").strip():
                out.append({"text": p["text"]})
        elif kind == "image_url":
            out.append(_image(image_url_of(p), dep))
        else:
            raise unsupported(dep, f"`{kind}` content parts")
        if p.get("cache_control"):
            out.append(_CACHE_POINT)
    return out


def _assistant(m: Message, dep: Deployment) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    extra = m.extra or {}
    if m.reasoning is not None and extra.get("reasoning_signature"):
        text = {"text": m.reasoning, "signature": extra["reasoning_signature"]}
        blocks.append({"reasoningContent": {"reasoningText": text}})
    for data in extra.get("redacted_thinking", ()):
        blocks.append({"reasoningContent": {"redactedContent": data}})
    blocks += _blocks(m.content, dep)
    for tc in m.tool_calls or ():
        fn = tc.get("function") or {}
        use = {
            "toolUseId": tc.get("id") or "",
            "name": fn.get("name") or "",
            "input": parse_arguments(fn.get("arguments")),
        }
        blocks.append({"toolUse": use})
    return blocks


def _tool_result(m: Message, dep: Deployment) -> dict[str, Any]:
    content = _blocks(m.content, dep) if not isinstance(m.content, str) else [{"text": m.content or " "}]
    result: dict[str, Any] = {"toolUseId": m.tool_call_id or "", "content": content or [{"text": " "}]}
    if (m.extra or {}).get("is_error"):
        result["status"] = "error"
    return {"toolResult": result}


def messages_to_wire(messages: list[Message], dep: Deployment) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "user":
            role, blocks = "user", _blocks(m.content, dep)
        elif m.role == "assistant":
            role, blocks = "assistant", _assistant(m, dep)
        elif m.role in ("tool", "function"):
            role, blocks = "user", [_tool_result(m, dep)]
        else:
            raise GatewayError("invalid_request", f"Unknown message role {m.role!r}.", param="messages")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _has_tool_blocks(messages: list[Message]) -> bool:
    return any(m.tool_calls or m.role in ("tool", "function") for m in messages)


def _tool_config(req: ChatRequest, dep: Deployment) -> dict[str, Any] | None:
    if not req.tools:
        return None
    tc = req.tool_choice
    if tc == "none":
        if _has_tool_blocks(req.messages):
            raise unsupported(dep, '`tool_choice: "none"` in a conversation with tool calls')
        return None
    tools = []
    for t in req.tools:
        f = t.function
        spec: dict[str, Any] = {
            "name": f.name,
            "inputSchema": {"json": f.parameters or {"type": "object", "properties": {}}},
        }
        if f.description:
            spec["description"] = f.description
        tools.append({"toolSpec": spec})
    cfg: dict[str, Any] = {"tools": tools}
    if tc == "required":
        cfg["toolChoice"] = {"any": {}}
    elif isinstance(tc, dict) and isinstance((tc.get("function") or {}).get("name"), str):
        cfg["toolChoice"] = {"tool": {"name": tc["function"]["name"]}}
    elif tc == "auto":
        cfg["toolChoice"] = {"auto": {}}
    elif tc is not None:
        raise GatewayError("invalid_request", f"Unsupported tool_choice {tc!r}.", param="tool_choice")
    return cfg


def request_to_wire(req: ChatRequest, dep: Deployment) -> dict[str, Any]:
    check_common(req, dep)
    check_extras(req, dep, HANDLED_EXTRAS)
    if req.response_format and req.response_format.get("type") != "text":
        raise unsupported(
            dep, "`response_format`", "ask for JSON in the prompt, or use a tool with the schema."
        )
    if req.parallel_tool_calls is False:
        raise unsupported(dep, "`parallel_tool_calls: false`")
    system, rest = split_system(req.messages)
    body: dict[str, Any] = {"messages": messages_to_wire(rest, dep)}
    if system:
        body["system"] = [b for m in system for b in _blocks(m.content, dep)]
    cfg = _tool_config(req, dep)
    if cfg is not None:
        body["toolConfig"] = cfg
    inference: dict[str, Any] = {}
    if req.output_cap is not None:
        inference["maxTokens"] = req.output_cap
    if req.temperature is not None:
        inference["temperature"] = req.temperature
    if req.top_p is not None:
        inference["topP"] = req.top_p
    stop = stop_list(req.stop)
    if stop:
        inference["stopSequences"] = stop
    if inference:
        body["inferenceConfig"] = inference
    additional = {k: req.extra[k] for k in ("top_k", "thinking") if k in req.extra}
    if additional:
        body["additionalModelRequestFields"] = additional
    if req.user:
        body["requestMetadata"] = {"user": req.user}
    return body


def aws_region(dep: Deployment) -> str:
    m = _HOST_REGION.search(dep.api_base)
    if m:
        return m.group(1)
    return dep.region if _AWS_REGION.match(dep.region) else "us-east-1"


def base_url(dep: Deployment) -> str:
    base = dep.api_base.rstrip("/")
    if base == "https://api.openai.com/v1":  # the config default: this deployment meant AWS itself
        return f"https://bedrock-runtime.{aws_region(dep)}.amazonaws.com"
    return base


def model_url(dep: Deployment, op: str) -> str:
    """The URL for ``op`` (converse | converse-stream); the model id is one percent-encoded path segment."""
    return f"{base_url(dep)}/model/{quote(dep.model, safe='')}/{op}"


# ---------------------------------------------------------------- response: wire → canonical


def _stop_sequence(fields: dict[str, Any] | None) -> str | None:
    value = (fields or {}).get("stop_sequence")
    return value if isinstance(value, str) else None


def response_from_wire(body: bytes, response_id: str, model: str) -> ChatResponse:
    w = _response_decoder.decode(body)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    extra: dict[str, Any] = {}
    for b in w.output.message.content if w.output.message else ():
        if b.text is not None:
            texts.append(b.text)
        elif b.toolUse is not None:
            fn = {"name": b.toolUse.name, "arguments": dump_arguments(b.toolUse.input)}
            calls.append({"id": b.toolUse.toolUseId, "type": "function", "function": fn})
        elif b.reasoningContent is not None:
            r = b.reasoningContent
            if r.reasoningText is not None:
                reasoning.append(r.reasoningText.text)
                if r.reasoningText.signature:
                    extra["reasoning_signature"] = r.reasoningText.signature
            if r.redactedContent:
                extra.setdefault("redacted_thinking", []).append(r.redactedContent)
    message = assistant_message(texts, calls, reasoning, extra)
    finish = STOP_TO_FINISH.get(w.stopReason or "end_turn", "stop")
    choice = Choice(
        index=0,
        message=message,
        finish_reason=finish,
        stop_sequence=_stop_sequence(w.additionalModelResponseFields),
    )
    return ChatResponse(
        id=response_id, model=model, created=now(), choices=[choice], usage=usage_from_wire(w.usage)
    )


class StreamTranslator:
    """ConverseStream messages → canonical chunks (pure: feed it decoded (headers, payload) messages).

    ``messageStart`` yields the role chunk, ``contentBlockStart`` a tool call's id and name, deltas their text,
    reasoning or argument fragments, ``messageStop`` the finish chunk and ``metadata`` the usage-only chunk.
    An ``exception`` message becomes an :class:`UpstreamError` with the status AWS uses for that exception.
    """

    __slots__ = ("created", "id", "model", "stopped", "tools", "usage_seen")

    def __init__(self, response_id: str, model: str) -> None:
        self.id = response_id
        self.model = model
        self.created = now()
        self.tools: dict[int, int] = {}  # contentBlockIndex → tool-call index
        self.stopped = False
        self.usage_seen = False

    def _chunk(self, delta: Delta) -> ChatChunk:
        return ChatChunk(id=self.id, model=self.model, created=self.created, choices=[delta])

    def feed(self, headers: dict[str, Any], payload: bytes) -> list[ChatChunk]:
        kind = headers.get(":message-type")
        if kind == "exception":
            etype = str(headers.get(":exception-type") or "internalServerException")
            e = _event_decoder.decode(payload) if payload else _StreamEvent()
            raise UpstreamError(EXCEPTION_STATUS.get(etype, 500), f"{etype}: {e.message or ''}".rstrip(": "))
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            raise UpstreamError(500, f"{code}: {headers.get(':error-message') or ''}".rstrip(": "))
        event = headers.get(":event-type")
        e = _event_decoder.decode(payload)
        if event == "contentBlockDelta" and e.delta is not None:
            d = e.delta
            if d.text:
                return [self._chunk(Delta(content=d.text))]
            if d.toolUse is not None and d.toolUse.input:
                i = self.tools.get(e.contentBlockIndex, 0)
                return [
                    self._chunk(Delta(tool_calls=[{"index": i, "function": {"arguments": d.toolUse.input}}]))
                ]
            r = d.reasoningContent
            if r is not None:
                if r.text:
                    return [self._chunk(Delta(reasoning=r.text))]
                if r.signature:
                    return [self._chunk(Delta(extra={"reasoning_signature": r.signature}))]
                if r.redactedContent:
                    return [self._chunk(Delta(extra={"redacted_thinking": [r.redactedContent]}))]
            return []
        if event == "contentBlockStart" and e.start is not None and e.start.toolUse is not None:
            i = self.tools[e.contentBlockIndex] = len(self.tools)
            t = e.start.toolUse
            call = {
                "index": i,
                "id": t.toolUseId,
                "type": "function",
                "function": {"name": t.name, "arguments": ""},
            }
            return [self._chunk(Delta(tool_calls=[call]))]
        if event == "messageStart":
            return [self._chunk(Delta(role=e.role or "assistant", content=""))]
        if event == "messageStop":
            self.stopped = True
            finish = STOP_TO_FINISH.get(e.stopReason or "end_turn", "stop")
            stop_seq = _stop_sequence(e.additionalModelResponseFields)
            return [self._chunk(Delta(finish_reason=finish, stop_sequence=stop_seq))]
        if event == "metadata" and e.usage is not None:
            self.usage_seen = True
            return [
                ChatChunk(
                    id=self.id,
                    model=self.model,
                    created=self.created,
                    choices=[],
                    usage=usage_from_wire(e.usage),
                )
            ]
        return []

    def finish(self) -> None:
        if not self.stopped:
            raise UpstreamError(502, "stream ended before messageStop", bad_response=True)


# ---------------------------------------------------------------- I/O


class FrameDecoder:
    """ConverseStream: AWS event-stream frames (CRC-checked) around :class:`StreamTranslator`."""

    __slots__ = ("frames", "tr")
    done = False

    def __init__(self, tr: StreamTranslator) -> None:
        self.frames = EventStreamDecoder()
        self.tr = tr

    def feed(self, piece: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for headers, payload in self.frames.feed(piece):
            out.extend(self.tr.feed(headers, payload))
        return out

    def finish(self) -> list[ChatChunk]:
        self.frames.close()
        self.tr.finish()
        return []


class BedrockProvider(Provider):
    def __init__(self, dep: Deployment, http: HttpClient) -> None:
        super().__init__(dep, http)
        self.region = aws_region(dep)
        self.url = model_url(dep, "converse")
        self.stream_url = model_url(dep, "converse-stream")

    def headers(self, url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        aws = self.dep.aws
        if aws is not None:
            headers.update(
                sigv4.sign(
                    "POST",
                    url,
                    headers,
                    body,
                    access_key=aws.access_key_id,
                    secret_key=aws.secret_access_key,
                    session_token=aws.session_token,
                    region=self.region,
                    service="bedrock",
                )
            )
        elif self.dep.api_key:
            headers["authorization"] = f"Bearer {self.dep.api_key}"
        return {**self.dep.headers, **headers}

    async def _post(self, url: str, body: bytes, stream: bool = False) -> Any:
        # The URL is sent exactly as built (the model id's %3A etc. stay encoded): the signature covers the path.
        return await self.post(url, body, self.headers(url, body), stream)

    async def complete(self, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(request_to_wire(req, self.dep))
        resp = await self._post(self.url, body)
        data = await self.read(resp)
        try:
            return response_from_wire(data, resp.header("x-amzn-requestid") or "", self.dep.model)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise self.bad_response(str(e)) from None

    async def open_stream(self, req: ChatRequest) -> tuple[Any, FrameDecoder]:
        body = orjson.dumps(request_to_wire(req, self.dep))
        resp = await self._post(self.stream_url, body, stream=True)
        return resp, FrameDecoder(StreamTranslator(resp.header("x-amzn-requestid") or "", self.dep.model))
