"""OpenAI's Responses API as an upstream wire format, for OpenAI-compatible deployments configured with
``responses_api: native``: a ``/v1/responses`` request is sent to the upstream's own ``/v1/responses`` instead of
being translated to chat completions (requests in the other dialects still go to chat completions).

Translation is still canonical ⇄ wire, so every stage (PII masking of the input, limits, budgets, validation,
output filters), failover to any other deployment of the group, usage metering and records work as on every
other path. What native adds is fidelity: Responses-only fields the caller sent (``reasoning.summary``,
``include``, ``truncation``) reach the upstream as they are, and reasoning summaries and encrypted reasoning come
back.

Conversations stay with the gateway: the upstream gets ``store: false`` and the whole input every turn, never a
``previous_response_id`` (the conversation store keeps turns per key and tenant with their PII placeholders, a
follow-up may be served by another deployment, and retrieve/delete answer from the gateway either way).

Usage rule: Responses' ``input_tokens`` is the whole prompt, like canonical ``input_tokens``;
``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens`` are the details.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.config import Deployment
from gateway.errors import UpstreamError
from gateway.providers.base import SseFramer
from gateway.providers.convert import IGNORABLE_EXTRAS, assistant_message, text_of, unsupported
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Choice, Delta, Message, Usage

NATIVE = "responses"
"""``ChatRequest.extra`` key the Responses dialect sets: the request came in as ``/v1/responses``, with the
Responses-only fields a native upstream takes as they are (other adapters ignore it)."""

_PASSED = ("include", "truncation", "reasoning")  # Responses-only fields, sent on as the caller wrote them
_HANDLED = frozenset(
    {NATIVE, "reasoning_effort", "verbosity", "prompt_cache_key", "service_tier", *IGNORABLE_EXTRAS}
)

# ---------------------------------------------------------------- request: canonical → Responses


def request_to_wire(req: ChatRequest, dep: Deployment) -> dict[str, Any]:
    """The canonical request as a stateless Responses request (``store: false``, the whole input)."""
    for key in req.extra:
        if key not in _HANDLED:
            raise unsupported(dep, f"the request field `{key}` on its Responses API")
    if req.n is not None and req.n > 1:
        raise unsupported(dep, "`n` > 1 on its Responses API", "send one request per answer.")
    if req.stop:
        raise unsupported(dep, "`stop` on its Responses API")
    if req.seed is not None:
        raise unsupported(dep, "`seed` on its Responses API")
    extra = req.extra
    native: dict[str, Any] = extra.get(NATIVE) or {}
    body: dict[str, Any] = {"model": dep.model, "input": input_items(req.messages), "store": False}
    if req.stream:
        body["stream"] = True
    if req.tools:
        body["tools"] = [_tool(t.function) for t in req.tools]
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "name": tc["function"]["name"]} if isinstance(tc, dict) else tc
        )
    for field in ("parallel_tool_calls", "temperature", "top_p", "metadata", "user"):
        value = getattr(req, field)
        if value is not None:
            body[field] = value
    if req.output_cap is not None:
        body["max_output_tokens"] = req.output_cap
    text: dict[str, Any] = {}
    fmt = _format(req.response_format)
    if fmt is not None:
        text["format"] = fmt
    if "verbosity" in extra:
        text["verbosity"] = extra["verbosity"]
    if text:
        body["text"] = text
    for key in _PASSED:
        if native.get(key) is not None:
            body[key] = native[key]
    if "reasoning_effort" in extra:
        body["reasoning"] = {**(body.get("reasoning") or {}), "effort": extra["reasoning_effort"]}
    for key in ("prompt_cache_key", "service_tier", "safety_identifier"):
        if extra.get(key) is not None:
            body[key] = extra[key]
    return body


def _tool(fn: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": "function", "name": fn.name, "parameters": fn.parameters or {}}
    if fn.description:
        tool["description"] = fn.description
    if fn.strict is not None:
        tool["strict"] = fn.strict
    return tool


def _format(rf: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rf or rf.get("type") == "text":
        return None
    if rf.get("type") == "json_object":
        return {"type": "json_object"}
    js = rf.get("json_schema") or {}
    fmt: dict[str, Any] = {
        "type": "json_schema",
        "name": js.get("name") or "output",
        "schema": js.get("schema"),
    }
    for key in ("strict", "description"):
        if js.get(key) is not None:
            fmt[key] = js[key]
    return fmt


def input_items(messages: list[Message]) -> list[dict[str, Any]]:
    """Canonical messages as Responses input items (earlier reasoning is not sent back, as on chat)."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m.tool_call_id or "",
                    "output": text_of(m.content),
                }
            )
            continue
        if m.role == "assistant":
            text = text_of(m.content)
            if text:
                items.append({"type": "message", "role": "assistant", "content": text})
            for tc in m.tool_calls or ():
                fn = tc.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": tc.get("id") or "",
                        "name": fn.get("name") or "",
                        "arguments": fn.get("arguments") or "",
                    }
                )
            continue
        items.append({"type": "message", "role": m.role, "content": _content(m.content)})
    return items


def _content(content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for p in content:
        if p.get("type") == "text":
            parts.append({"type": "input_text", "text": p.get("text") or ""})
        elif p.get("type") == "image_url":
            iu = p.get("image_url")
            image = iu if isinstance(iu, dict) else {"url": iu}
            part: dict[str, Any] = {"type": "input_image", "image_url": image.get("url") or ""}
            part["detail"] = image.get("detail") or "auto"
            parts.append(part)
    return parts


# ---------------------------------------------------------------- response: Responses → canonical


class _Part(msgspec.Struct):
    type: str = ""
    text: str | None = None
    refusal: str | None = None


class _Item(msgspec.Struct):
    type: str = ""
    id: str | None = None
    content: list[_Part] | None = None
    summary: list[_Part] | None = None
    encrypted_content: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class _InDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _OutDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    input_tokens_details: _InDetails | None = None
    output_tokens_details: _OutDetails | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Error(msgspec.Struct):
    message: str = ""
    code: str | None = None


class _Response(msgspec.Struct):
    id: str = ""
    model: str = ""
    created_at: float = 0
    status: str | None = None
    output: list[_Item] = []
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None
    error: _Error | None = None


class _Event(msgspec.Struct):
    type: str
    delta: str | None = None
    output_index: int = 0
    item: _Item | None = None
    response: _Response | None = None
    message: str | None = None
    code: str | None = None


_response_decoder = msgspec.json.Decoder(_Response)
_event_decoder = msgspec.json.Decoder(_Event)


def usage_from_wire(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    return Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_tokens=(u.input_tokens_details.cached_tokens or 0) if u.input_tokens_details else 0,
        reasoning_tokens=(u.output_tokens_details.reasoning_tokens or 0) if u.output_tokens_details else 0,
    )


def _finish(r: _Response, calls: bool) -> str:
    if r.status == "incomplete":
        reason = r.incomplete_details.reason if r.incomplete_details else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def _failed(r: _Response) -> UpstreamError:
    msg = r.error.message if r.error and r.error.message else f"the response ended {r.status}"
    return UpstreamError(502, msg)


def response_from_wire(body: bytes) -> ChatResponse:
    r = _response_decoder.decode(body)
    if r.status == "failed":
        raise _failed(r)
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for item in r.output:
        if item.type == "message":
            texts.extend(p.text or p.refusal or "" for p in item.content or ())
        elif item.type == "function_call":
            calls.append(
                {
                    "id": item.call_id or "",
                    "type": "function",
                    "function": {"name": item.name or "", "arguments": item.arguments or ""},
                }
            )
        elif item.type == "reasoning":
            reasoning.extend(p.text or "" for p in item.summary or item.content or ())
            if item.encrypted_content:
                extra["reasoning_signature"] = item.encrypted_content
    message = assistant_message(texts, calls, reasoning, extra)
    return ChatResponse(
        id=r.id,
        model=r.model,
        created=int(r.created_at),
        choices=[Choice(index=0, message=message, finish_reason=_finish(r, bool(calls)))],
        usage=usage_from_wire(r.usage),
    )


class StreamDecoder:
    """Responses events → canonical chunks: text, reasoning summaries and function-call arguments as deltas, the
    finish and the usage from ``response.completed`` (or ``.incomplete``); a failed response is an error."""

    __slots__ = ("calls", "created", "done", "id", "model", "sse")

    def __init__(self) -> None:
        self.sse = SseFramer()
        self.done = False
        self.id = ""
        self.model = ""
        self.created = 0
        self.calls: dict[int, int] = {}  # output index → tool-call index

    def _chunk(self, delta: Delta) -> ChatChunk:
        return ChatChunk(id=self.id, model=self.model, created=self.created, choices=[delta])

    def feed(self, piece: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for _name, data in self.sse.feed(piece):
            if self.done:
                break
            out.extend(self._event(_event_decoder.decode(data)))
        return out

    def _event(self, e: _Event) -> list[ChatChunk]:
        t = e.type
        if t in ("response.output_text.delta", "response.refusal.delta") and e.delta:
            return [self._chunk(Delta(content=e.delta))]
        if t == "response.function_call_arguments.delta" and e.delta:
            i = self.calls.get(e.output_index, 0)
            return [self._chunk(Delta(tool_calls=[{"index": i, "function": {"arguments": e.delta}}]))]
        if t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta") and e.delta:
            return [self._chunk(Delta(reasoning=e.delta))]
        if t == "response.output_item.added" and e.item is not None and e.item.type == "function_call":
            i = self.calls[e.output_index] = len(self.calls)
            call = {
                "index": i,
                "id": e.item.call_id or "",
                "type": "function",
                "function": {"name": e.item.name or "", "arguments": ""},
            }
            return [self._chunk(Delta(tool_calls=[call]))]
        if t == "response.output_item.done" and e.item is not None and e.item.encrypted_content:
            return [self._chunk(Delta(extra={"reasoning_signature": e.item.encrypted_content}))]
        if t == "response.created" and e.response is not None:
            r = e.response
            self.id, self.model, self.created = r.id, r.model, int(r.created_at)
            return [self._chunk(Delta(role="assistant", content=""))]
        if t in ("response.completed", "response.incomplete") and e.response is not None:
            self.done = True
            r = e.response
            usage = usage_from_wire(r.usage) if r.usage is not None else None  # none: the gateway counts
            tail = ChatChunk(id=self.id, model=self.model, created=self.created, choices=[], usage=usage)
            return [self._chunk(Delta(finish_reason=_finish(r, bool(self.calls)))), tail]
        if t == "response.failed" and e.response is not None:
            raise _failed(e.response)
        if t == "error":
            raise UpstreamError(502, e.message or e.code or "the upstream's stream failed")
        return []

    def finish(self) -> list[ChatChunk]:
        raise UpstreamError(502, "stream ended without response.completed", bad_response=True)
