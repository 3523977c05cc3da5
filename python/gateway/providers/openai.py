"""OpenAI-compatible upstreams: OpenAI, Azure OpenAI, vLLM, Ollama, Groq, Together, Mistral, DeepSeek, OpenRouter.

They differ only in URL, auth header and api-version, all of which come from the deployment's config. Responses
already have the OpenAI dialect's shape, so they keep their raw bytes for the dialect to relay untouched; only the
fields the gateway needs (usage, choices for post stages) are decoded, by msgspec, skipping everything else.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient
from gateway.providers import openai_responses as native
from gateway.providers.base import Provider, SseFramer
from gateway.providers.openai_responses import NATIVE
from gateway.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    Usage,
)

# ---------------------------------------------------------------- wire types (decode only what we read)


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _WireMessage(msgspec.Struct):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class _WireChoice(msgspec.Struct):
    message: _WireMessage
    index: int = 0
    finish_reason: str | None = None
    # vLLM (and other OpenAI-compatible servers) name the stop string that ended the text; OpenAI says only "stop"
    stop_reason: str | int | None = None


class _WireResponse(msgspec.Struct):
    choices: list[_WireChoice]
    id: str = ""
    model: str = ""
    created: int = 0
    usage: WireUsage | None = None
    system_fingerprint: str | None = None


class _WireDelta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class _WireChunkChoice(msgspec.Struct):
    delta: _WireDelta | None = None
    index: int = 0
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class _WireChunk(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_WireChunkChoice] = []
    usage: WireUsage | None = None


class _WireEmbeddings(msgspec.Struct):
    # The vectors are relayed in the raw body, never decoded: tens of thousands of them as Python floats would
    # cost gigabytes just to read the usage. ``Raw`` checks the field is there and is JSON, nothing more.
    data: msgspec.Raw
    model: str = ""
    usage: WireUsage | None = None


_response_decoder = msgspec.json.Decoder(_WireResponse)
_chunk_decoder = msgspec.json.Decoder(_WireChunk)
_embeddings_decoder = msgspec.json.Decoder(_WireEmbeddings)

# ---------------------------------------------------------------- pure translation


def usage_from_wire(u: WireUsage | None) -> Usage:
    if u is None:
        return Usage()
    return Usage(
        input_tokens=u.prompt_tokens,
        output_tokens=u.completion_tokens,
        cached_tokens=(u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0,
        reasoning_tokens=(u.completion_tokens_details.reasoning_tokens or 0)
        if u.completion_tokens_details
        else 0,
    )


def request_to_wire(req: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The canonical request as an OpenAI body, addressed to ``upstream_model``. Streams always ask for usage."""
    body: dict[str, Any] = msgspec.to_builtins(req)
    extra = body.pop("extra", None)
    if extra and NATIVE in extra:  # Responses-only fields: chat completions has no place for them
        extra.pop(NATIVE)
    if extra:
        body.update(extra)
    body["model"] = upstream_model
    if extra and ("context_management" in extra or "anthropic_beta" in extra):
        what = (
            "`context_management`"
            if "context_management" in extra
            else f"anthropic-beta {extra['anthropic_beta']}"
        )
        raise GatewayError(
            "unsupported_feature",
            f"{what} is an Anthropic API feature; this model group is served by an OpenAI-compatible upstream, "
            "which cannot honour it. Remove it, or use a model group served by Anthropic.",
        )
    for t in body.get("tools") or ():
        t["function"].pop(
            "cache_control", None
        )  # an Anthropic cache marker: OpenAI-compatible APIs reject it
    if req.stream:
        body["stream_options"] = {**(req.stream_options or {}), "include_usage": True}
    for m in body["messages"]:
        # Canonical-only message fields (Anthropic thinking, signatures, tool-result flags): no OpenAI-compatible
        # API takes them under these names, and strict ones reject unknown message properties.
        if "reasoning" in m or "extra" in m:
            m.pop("reasoning", None)
            m.pop("extra", None)
    return body


def _stop_string(reason: str | int | None) -> str | None:
    """The stop sequence that cut the text, when the upstream names it (a token id is not a sequence)."""
    return reason if isinstance(reason, str) else None


def response_from_wire(body: bytes) -> ChatResponse:
    w = _response_decoder.decode(body)
    return ChatResponse(
        id=w.id,
        model=w.model,
        created=w.created,
        system_fingerprint=w.system_fingerprint,
        choices=[
            Choice(
                index=c.index,
                finish_reason=c.finish_reason,
                stop_sequence=_stop_string(c.stop_reason),
                message=Message(
                    role=c.message.role,
                    content=c.message.content,
                    tool_calls=c.message.tool_calls,
                    reasoning=c.message.reasoning_content,
                ),
            )
            for c in w.choices
        ],
        usage=usage_from_wire(w.usage),
        raw=body,
    )


def chunk_from_wire(data: bytes) -> ChatChunk:
    w = _chunk_decoder.decode(data)
    return ChatChunk(
        id=w.id,
        model=w.model,
        created=w.created,
        choices=[
            Delta(
                index=c.index,
                role=c.delta.role,
                content=c.delta.content,
                tool_calls=c.delta.tool_calls,
                reasoning=c.delta.reasoning_content,
                finish_reason=c.finish_reason,
                stop_sequence=_stop_string(c.stop_reason),
            )
            if c.delta is not None
            else Delta(
                index=c.index, finish_reason=c.finish_reason, stop_sequence=_stop_string(c.stop_reason)
            )
            for c in w.choices
        ],
        usage=usage_from_wire(w.usage) if w.usage is not None else None,
        raw=data,
    )


def embeddings_from_wire(body: bytes) -> EmbeddingResponse:
    """Model and usage of an embeddings response; the vectors stay in ``raw`` (relayed as they came)."""
    w = _embeddings_decoder.decode(body)
    if memoryview(w.data)[:1] != b"[":
        raise msgspec.ValidationError("Expected `array` - at `$.data`")
    return EmbeddingResponse(model=w.model, data=[], usage=usage_from_wire(w.usage), raw=body)


def endpoint(dep: Deployment, path: str) -> str:
    """The URL of ``path`` (``chat/completions`` or ``embeddings``) on this deployment."""
    base = dep.api_base.rstrip("/")
    if dep.provider == "azure":
        return f"{base}/openai/deployments/{dep.model}/{path}?api-version={dep.api_version or '2024-10-21'}"
    return f"{base}/{path}"


def auth_headers(dep: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json", **dep.headers}
    if dep.api_key:
        if dep.provider == "azure":
            headers["api-key"] = dep.api_key
        else:
            headers["authorization"] = f"Bearer {dep.api_key}"
    return headers


class StreamDecoder:
    """OpenAI SSE: one chunk per ``data:`` event until ``[DONE]``."""

    __slots__ = ("done", "sse")

    def __init__(self) -> None:
        self.sse = SseFramer()
        self.done = False

    def feed(self, piece: bytes) -> list[ChatChunk]:
        out = []
        for _event, data in self.sse.feed(piece):
            if data == b"[DONE]":
                self.done = True
                break
            out.append(chunk_from_wire(data))
        return out

    def finish(self) -> list[ChatChunk]:
        raise UpstreamError(502, "stream ended without [DONE]", bad_response=True)


# ---------------------------------------------------------------- I/O


class OpenAIProvider(Provider):
    def __init__(self, dep: Deployment, http: HttpClient) -> None:
        super().__init__(dep, http)
        self.chat_url = endpoint(dep, "chat/completions")
        self.embed_url = endpoint(dep, "embeddings")
        self.responses_url = endpoint(dep, "responses") if dep.responses_api == "native" else None
        self.headers = self.key_turns(auth_headers)

    async def complete(self, req: ChatRequest) -> ChatResponse:
        if (
            self.responses_url is not None and NATIVE in req.extra
        ):  # a Responses call, to a Responses upstream
            body = orjson.dumps(native.request_to_wire(req, self.dep))
            return await self.post_json(self.responses_url, body, self.headers(), native.response_from_wire)
        body = orjson.dumps(request_to_wire(req, self.dep.model))
        return await self.post_json(self.chat_url, body, self.headers(), response_from_wire)

    async def open_stream(self, req: ChatRequest) -> tuple[Any, StreamDecoder | native.StreamDecoder]:
        if self.responses_url is not None and NATIVE in req.extra:
            body = orjson.dumps(native.request_to_wire(req, self.dep))
            return await self.post(
                self.responses_url, body, self.headers(), stream=True
            ), native.StreamDecoder()
        body = orjson.dumps(request_to_wire(req, self.dep.model))
        return await self.post(self.chat_url, body, self.headers(), stream=True), StreamDecoder()

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        wire: dict[str, Any] = msgspec.to_builtins(req)
        wire.update(wire.pop("extra", None) or {})
        wire["model"] = self.dep.model
        return await self.post_json(self.embed_url, orjson.dumps(wire), self.headers(), embeddings_from_wire)
