"""Google Gemini upstreams: ``models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

Canonical → wire: system/developer messages → ``systemInstruction``; user/assistant/tool → ``contents`` with
roles user/model/user (tool results are ``functionResponse`` parts named after the call they answer; neighbours
with the same role merge, as Gemini requires); images → ``inlineData`` (data URLs) or ``fileData`` (URLs);
tools → ``functionDeclarations`` with ``parametersJsonSchema``; ``tool_choice`` → ``toolConfig``; the sampling
fields, ``n`` and ``response_format`` → ``generationConfig`` (``responseMimeType`` + ``responseJsonSchema``).

The JSON-Schema variants (``parametersJsonSchema`` / ``responseJsonSchema``) are used rather than ``parameters`` /
``responseSchema`` because those take an OpenAPI subset that rejects keywords OpenAI-style schemas carry
(``additionalProperties``, ``$ref``, ``$defs``), so passing callers' schemas through would fail.

Gemini has no tool-call ids: the adapter makes one per call, and carries a function call's ``thoughtSignature``
in the tool call's ``extra_content.google.thought_signature`` (the shape Google's own OpenAI-compatible endpoint
uses) so that a conversation sent back restores it.

Usage: ``promptTokenCount`` (+ ``toolUsePromptTokenCount``) is the whole prompt and already includes
``cachedContentTokenCount``; output is ``candidatesTokenCount + thoughtsTokenCount`` (Gemini counts thoughts
apart, the canonical output includes reasoning, as OpenAI's does).
"""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any

import msgspec
import orjson

from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient
from gateway.providers.base import Provider, SseFramer
from gateway.providers.convert import (
    check_extras,
    dump_arguments,
    image_url_of,
    json_schema_of,
    now,
    parse_arguments,
    parse_data_url,
    split_system,
    stop_list,
    text_of,
    tool_names,
    unsupported,
)
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Choice, Delta, Message, Usage

DEFAULT_BASE = "https://generativelanguage.googleapis.com/v1beta"
HANDLED_EXTRAS = frozenset({"top_k", "thinking", "presence_penalty", "frequency_penalty"})
FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}

# ---------------------------------------------------------------- wire types (decode only what we read)


class WireUsage(msgspec.Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    cachedContentTokenCount: int = 0
    thoughtsTokenCount: int = 0
    toolUsePromptTokenCount: int = 0


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: Any = None
    id: str | None = None


class _Part(msgspec.Struct):
    text: str | None = None
    thought: bool = False
    functionCall: _FunctionCall | None = None
    thoughtSignature: str | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []
    role: str = "model"


class _Candidate(msgspec.Struct):
    content: _Content | None = None
    finishReason: str | None = None
    index: int = 0


class _PromptFeedback(msgspec.Struct):
    blockReason: str | None = None


class _Response(msgspec.Struct):
    candidates: list[_Candidate] = []
    usageMetadata: WireUsage | None = None
    promptFeedback: _PromptFeedback | None = None
    modelVersion: str = ""
    responseId: str = ""


_decoder = msgspec.json.Decoder(_Response)

# ---------------------------------------------------------------- usage


def usage_from_wire(u: WireUsage | None) -> Usage:
    if u is None:
        return Usage()
    return Usage(
        input_tokens=u.promptTokenCount + u.toolUsePromptTokenCount,
        output_tokens=u.candidatesTokenCount + u.thoughtsTokenCount,
        cached_tokens=u.cachedContentTokenCount,
        reasoning_tokens=u.thoughtsTokenCount,
    )


# ---------------------------------------------------------------- request: canonical → wire


def _parts(content: str | list[dict[str, Any]] | None, dep: Deployment) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            if p.get("text"):
                out.append({"text": p["text"]})
        elif kind == "image_url":
            url = image_url_of(p)
            data = parse_data_url(url)
            if data:
                out.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
            else:
                mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
                out.append({"fileData": {"mimeType": mime, "fileUri": url}})
        else:
            raise unsupported(dep, f"`{kind}` content parts")
    return out


def _function_response(m: Message, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(m.tool_call_id or "") or m.name
    if not name:
        raise GatewayError(
            "invalid_request",
            f"The tool message for call {m.tool_call_id!r} answers no tool call in the conversation; Gemini needs the "
            "function's name.",
            param="messages",
        )
    text = text_of(m.content)
    try:
        value: Any = orjson.loads(text) if text else ""
    except orjson.JSONDecodeError:
        value = text
    response = value if isinstance(value, dict) else {"result": value}
    return {"functionResponse": {"name": name, "response": response}}


def _function_call(tc: dict[str, Any]) -> dict[str, Any]:
    fn = tc.get("function") or {}
    part: dict[str, Any] = {
        "functionCall": {"name": fn.get("name") or "", "args": parse_arguments(fn.get("arguments"))}
    }
    sig = ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if sig:
        part["thoughtSignature"] = sig
    return part


def contents_to_wire(messages: list[Message], dep: Deployment) -> list[dict[str, Any]]:
    names = tool_names(messages)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "user":
            role, parts = "user", _parts(m.content, dep)
        elif m.role == "assistant":
            role = "model"
            parts = _parts(m.content, dep) + [_function_call(tc) for tc in m.tool_calls or ()]
        elif m.role in ("tool", "function"):
            role, parts = "user", [_function_response(m, names)]
        else:
            raise GatewayError("invalid_request", f"Unknown message role {m.role!r}.", param="messages")
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _tool_config(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    if tc is None or tc == "auto":
        return None
    if tc == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if tc == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(tc, dict) and isinstance((tc.get("function") or {}).get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [tc["function"]["name"]]}}
    raise GatewayError("invalid_request", f"Unsupported tool_choice {tc!r}.", param="tool_choice")


def _thinking(value: Any) -> dict[str, Any]:
    """Anthropic's ``thinking`` ({type: enabled, budget_tokens} | {type: disabled}) as a Gemini thinkingConfig."""
    if isinstance(value, dict) and value.get("type") == "disabled":
        return {"thinkingBudget": 0}
    budget = value.get("budget_tokens") if isinstance(value, dict) else None
    cfg: dict[str, Any] = {"includeThoughts": True}
    if isinstance(budget, int):
        cfg["thinkingBudget"] = budget
    return cfg


def request_to_wire(req: ChatRequest, dep: Deployment) -> dict[str, Any]:
    check_extras(req, dep, HANDLED_EXTRAS)
    if req.parallel_tool_calls is False:
        raise unsupported(
            dep, "`parallel_tool_calls: false`", "Gemini decides how many calls to make in one turn."
        )
    system, rest = split_system(req.messages)
    body: dict[str, Any] = {"contents": contents_to_wire(rest, dep)}
    if system:
        parts = [p for m in system for p in _parts(m.content, dep)]
        body["systemInstruction"] = {"parts": parts}
    if req.tools:
        decls = []
        for t in req.tools:
            f = t.function
            decl: dict[str, Any] = {"name": f.name}
            if f.description:
                decl["description"] = f.description
            if f.parameters:
                decl["parametersJsonSchema"] = f.parameters
            decls.append(decl)
        body["tools"] = [{"functionDeclarations": decls}]
        cfg = _tool_config(req)
        if cfg is not None:
            body["toolConfig"] = cfg
    gen: dict[str, Any] = {}
    if req.output_cap is not None:
        gen["maxOutputTokens"] = req.output_cap
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    stop = stop_list(req.stop)
    if stop:
        gen["stopSequences"] = stop
    if req.n is not None and req.n > 1:
        gen["candidateCount"] = req.n
    if req.seed is not None:
        gen["seed"] = req.seed
    schema = json_schema_of(req)
    if schema is not None:
        gen["responseMimeType"] = "application/json"
        gen["responseJsonSchema"] = schema
    extra = req.extra
    if extra:
        if "top_k" in extra:
            gen["topK"] = extra["top_k"]
        if "presence_penalty" in extra:
            gen["presencePenalty"] = extra["presence_penalty"]
        if "frequency_penalty" in extra:
            gen["frequencyPenalty"] = extra["frequency_penalty"]
        if "thinking" in extra:
            gen["thinkingConfig"] = _thinking(extra["thinking"])
    if gen:
        body["generationConfig"] = gen
    return body


def base_url(dep: Deployment) -> str:
    base = dep.api_base.rstrip("/")
    if base == "https://api.openai.com/v1":  # the config default: this deployment meant Google's own API
        return DEFAULT_BASE
    return base if base.endswith(("/v1beta", "/v1")) else f"{base}/v1beta"


def auth_headers(dep: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if dep.api_key:
        headers["x-goog-api-key"] = dep.api_key
    headers.update(dep.headers)
    return headers


# ---------------------------------------------------------------- response: wire → canonical


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_call(fc: _FunctionCall, sig: str | None, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": fc.id or _call_id(),
        "type": "function",
        "function": {"name": fc.name, "arguments": dump_arguments(fc.args)},
    }
    if index is not None:
        call = {"index": index, **call}
    if sig:
        call["extra_content"] = {"google": {"thought_signature": sig}}
    return call


def _finish(reason: str | None, has_calls: bool) -> str:
    finish = FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def response_from_wire(body: bytes) -> ChatResponse:
    w = _decoder.decode(body)
    choices = []
    for c in w.candidates:
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for p in c.content.parts if c.content else ():
            if p.functionCall is not None:
                calls.append(_tool_call(p.functionCall, p.thoughtSignature))
            elif p.text is not None:
                (thoughts if p.thought else texts).append(p.text)
        message = Message(
            role="assistant",
            content="".join(texts) if texts or not calls else None,
            tool_calls=calls or None,
            reasoning="".join(thoughts) if thoughts else None,
        )
        choices.append(
            Choice(index=c.index, message=message, finish_reason=_finish(c.finishReason, bool(calls)))
        )
    if not choices and w.promptFeedback is not None and w.promptFeedback.blockReason:
        choices.append(
            Choice(index=0, message=Message(role="assistant", content=""), finish_reason="content_filter")
        )
    return ChatResponse(
        id=w.responseId,
        model=w.modelVersion,
        created=now(),
        choices=choices,
        usage=usage_from_wire(w.usageMetadata),
    )


class StreamTranslator:
    """Gemini stream responses → canonical chunks (pure).

    Each event is a partial GenerateContentResponse; text and thoughts become deltas at once, function calls arrive
    whole and become one tool-call delta each. Gemini repeats its (cumulative) usage on every event and ends the
    stream by closing it, so :meth:`finish` (called at the end of the body) emits the finish chunk and, when usage
    was sent, the usage-only chunk, and refuses a stream that ended before any candidate had a finish reason (a
    dropped connection).
    """

    __slots__ = ("blocked", "calls", "created", "finishes", "id", "model", "started", "usage")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = now()
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index → tool calls so far
        self.finishes: dict[int, str] = {}
        self.usage: WireUsage | None = None
        self.blocked = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        w = _decoder.decode(data)
        self.id = self.id or w.responseId
        self.model = self.model or w.modelVersion
        if w.usageMetadata is not None:
            self.usage = w.usageMetadata
        if w.promptFeedback is not None and w.promptFeedback.blockReason and not w.candidates:
            self.blocked = True
        deltas: list[Delta] = []
        for c in w.candidates:
            i = c.index
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[dict[str, Any]] = []
            for p in c.content.parts if c.content else ():
                if p.functionCall is not None:
                    k = self.calls.get(i, 0)
                    self.calls[i] = k + 1
                    calls.append(_tool_call(p.functionCall, p.thoughtSignature, index=k))
                elif p.text:
                    (thoughts if p.thought else texts).append(p.text)
            if c.finishReason:
                self.finishes[i] = c.finishReason
            if not (texts or thoughts or calls or i not in self.started):
                continue
            role = None
            if i not in self.started:
                self.started.add(i)
                role = "assistant"
            deltas.append(
                Delta(
                    index=i,
                    role=role,
                    content="".join(texts) if texts or role else None,
                    reasoning="".join(thoughts) if thoughts else None,
                    tool_calls=calls or None,
                )
            )
        return (
            [ChatChunk(id=self.id, model=self.model, created=self.created, choices=deltas)] if deltas else []
        )

    def finish(self) -> list[ChatChunk]:
        if self.blocked and not self.finishes:
            self.finishes[0] = "SAFETY"
        if not self.finishes:
            raise UpstreamError(502, "stream ended before a finishReason", bad_response=True)
        deltas = [
            Delta(index=i, finish_reason=_finish(reason, self.calls.get(i, 0) > 0))
            for i, reason in sorted(self.finishes.items())
        ]
        out = [ChatChunk(id=self.id, model=self.model, created=self.created, choices=deltas)]
        if self.usage is not None:  # none at all: the gateway counts the stream itself
            usage = usage_from_wire(self.usage)
            out.append(ChatChunk(id=self.id, model=self.model, created=self.created, choices=[], usage=usage))
        return out


# ---------------------------------------------------------------- I/O


class SseDecoder:
    """Gemini's ``alt=sse`` stream: SSE framing around :class:`StreamTranslator`; ends when the bytes do."""

    __slots__ = ("done", "sse", "tr")

    def __init__(self) -> None:
        self.sse = SseFramer()
        self.tr = StreamTranslator()
        self.done = False

    def feed(self, piece: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for _event, data in self.sse.feed(piece):
            out.extend(self.tr.feed(data))
        return out

    def finish(self) -> list[ChatChunk]:
        self.sse.check_complete()
        return self.tr.finish()


class GeminiProvider(Provider):
    def __init__(self, dep: Deployment, http: HttpClient) -> None:
        super().__init__(dep, http)
        base = f"{base_url(dep)}/models/{dep.model}"
        self.url = f"{base}:generateContent"
        self.stream_url = f"{base}:streamGenerateContent?alt=sse"
        self.headers = self.key_turns(auth_headers)

    async def complete(self, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(request_to_wire(req, self.dep))
        return await self.post_json(self.url, body, self.headers(), response_from_wire)

    async def open_stream(self, req: ChatRequest) -> tuple[Any, SseDecoder]:
        body = orjson.dumps(request_to_wire(req, self.dep))
        return await self.post(self.stream_url, body, self.headers(), stream=True), SseDecoder()
