"""The provider contract: one adapter per wire format.

An adapter does three things: ``complete``, ``stream`` and ``embed``. Translation between the canonical types and
the wire format is done by pure functions in the adapter's module (easy to test without a network); the methods
here only add I/O. Every adapter extracts usage from every response and every stream — accounting is part of
translation, not an afterthought.
"""

from __future__ import annotations

import email.utils
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from itertools import cycle
from typing import Any, Protocol, TypeVar

import msgspec
import orjson

from gateway.config import Deployment
from gateway.context import UPSTREAM_TRACEPARENT
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient, UpstreamResponse, too_large
from gateway.providers.eventstream import EventStreamError
from gateway.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse

ERROR_BODY_LIMIT = 1024 * 1024  # an error body is read for its message only


class Provider(ABC):
    """An upstream deployment reachable over HTTP."""

    def __init__(self, dep: Deployment, http: HttpClient) -> None:
        self.dep = dep
        self.http = http

    def key_turns(self, build: Callable[[Deployment], dict[str, str]]) -> Callable[[], dict[str, str]]:
        """Request headers for each of the deployment's keys, handed out in turn (one call per request)."""
        sets = [build(msgspec.structs.replace(self.dep, api_key=k)) for k in self.dep.api_keys[1:]]
        if not sets:
            only = build(self.dep)
            return lambda: only
        return cycle([build(self.dep), *sets]).__next__

    @abstractmethod
    async def complete(self, req: ChatRequest) -> ChatResponse: ...

    @abstractmethod
    async def open_stream(self, req: ChatRequest) -> tuple[UpstreamResponse, ChunkDecoder]:
        """Send a streaming request (``post(..., stream=True)``); return the response and its body's decoder."""

    async def stream(self, req: ChatRequest) -> AsyncIterator[list[ChatChunk]]:
        """Chunks as they arrive, in batches: one batch per network read, so the caller can relay what arrived
        together with one write. Every failure is an :class:`UpstreamError`."""
        resp, decoder = await self.open_stream(req)
        limit, size = self.dep.max_response_bytes, 0
        try:
            async for piece in resp.chunks():
                size += len(piece)
                if size > limit:  # an endless stream, or one event that never ends
                    raise too_large(limit)
                batch = decoder.feed(piece)
                if batch:
                    yield batch
                if decoder.done:
                    return
            tail = decoder.finish()
            if tail:
                yield tail
        except (msgspec.DecodeError, msgspec.ValidationError, EventStreamError) as e:
            raise self.bad_response(f"stream: {e}") from None
        except UpstreamError as e:
            e.deployment = e.deployment or self.dep.id
            e.message = self.scrub(e.message)
            raise
        finally:
            await resp.aclose()

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        raise GatewayError(
            "unsupported_feature",
            f"Deployment {self.dep.id!r} ({self.dep.provider}) does not serve embeddings; "
            "use a model group backed by an embeddings-capable provider.",
        )

    # ------------------------------------------------------------ shared I/O helpers

    def scrub(self, text: str) -> str:
        """Never let a provider credential travel back in an upstream's error text, whole or in part."""
        secrets = (
            *self.dep.api_keys,
            self.dep.api_key,
            self.dep.aws.secret_access_key if self.dep.aws else None,
        )
        return scrub_secrets(text, [s for s in secrets if s])

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], stream: bool = False
    ) -> UpstreamResponse:
        """POST and return the response once its status is 2xx; anything else becomes an UpstreamError."""
        traceparent = UPSTREAM_TRACEPARENT.get()
        if traceparent is not None:  # a traced request: the provider continues the trace
            headers = {**headers, "traceparent": traceparent}
            UPSTREAM_TRACEPARENT.set(None)
        try:
            resp = await self.http.post(
                url, body, headers, self.dep.timeout_s, self.dep.connect_timeout_s, stream
            )
        except UpstreamError as e:
            e.deployment = self.dep.id
            raise
        if resp.status >= 300:
            await self.raise_for_status(resp)
        return resp

    async def post_json(
        self, url: str, body: bytes, headers: dict[str, str], decode: Callable[[bytes], R]
    ) -> R:
        """A non-stream call: POST, read, decode; a body that does not decode is the upstream's fault."""
        data = await self.read(await self.post(url, body, headers))
        try:
            return decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise self.bad_response(str(e)) from None

    async def read(self, resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read(self.dep.max_response_bytes)
        except UpstreamError as e:
            e.deployment = self.dep.id
            raise

    async def raise_for_status(self, resp: UpstreamResponse) -> None:
        try:
            body = await resp.read(ERROR_BODY_LIMIT)
        except UpstreamError:
            body = b""
        finally:
            await resp.aclose()
        if resp.status in (401, 403):
            # The caller can't fix the gateway's credentials; don't echo what the provider said about them.
            raise UpstreamError(
                502,
                f"the provider rejected the gateway's credentials (HTTP {resp.status}); check deployment "
                f"{self.dep.id!r}'s api_key",
                deployment=self.dep.id,
            )
        message = self.scrub(error_message(body, resp.status))
        raise UpstreamError(
            resp.status,
            message,
            retry_after=parse_retry_after(resp.header("retry-after")),
            deployment=self.dep.id,
            kind=error_kind(body, message),
        )

    def bad_response(self, what: str) -> UpstreamError:
        return UpstreamError(
            502, f"returned a malformed response ({what})", deployment=self.dep.id, bad_response=True
        )


FRAGMENT = 6  # any run of this many characters of a credential counts as leaking it


def scrub_secrets(text: str, secrets: list[str]) -> str:
    """Replace every stretch of ``text`` made of ``FRAGMENT``-character pieces of a secret with ``***``.

    Providers quote keys partially (``Incorrect API key provided: sk-abc1***********wxyz``); a whole-string
    replace misses those. Every FRAGMENT-gram of the text is looked up among the secrets' own; covered
    characters are cut out. Error texts are short (at most 500 characters), so this is cheap."""
    grams = {s[i : i + FRAGMENT] for s in secrets for i in range(len(s) - FRAGMENT + 1)}
    if not grams or len(text) < FRAGMENT:
        return text
    covered = bytearray(len(text))
    for i in range(len(text) - FRAGMENT + 1):
        if text[i : i + FRAGMENT] in grams:
            covered[i : i + FRAGMENT] = b"\x01" * FRAGMENT
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_DELAY_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as RFC 9110 writes it: delay-seconds (digits; a decimal fraction is tolerated) or an
    HTTP date. Anything else (``inf``, ``1e308``, negative, junk) is ignored, as if the header were absent; the
    router caps what is left (``retries.max_retry_after_s``)."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; a zone-less date is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(body: bytes, status: int) -> str:
    """The human part of any provider's error body (OpenAI, Anthropic, Google and AWS shapes)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
        if isinstance(data.get("message"), str):
            return data["message"][:500]
    return f"HTTP {status}"


_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "too many tokens",
    "prompt is too long",
)
_POLICY_MARKERS = ("content_filter", "content_policy", "content management policy", "safety")


def error_kind(body: bytes, message: str) -> str | None:
    """Classify the provider errors a fallback group may fix: an overflowing context or a content refusal."""
    text = (body[:2000].decode("utf-8", "replace") + " " + message).lower()
    if any(m in text for m in _CONTEXT_MARKERS):
        return "context_length"
    if any(m in text for m in _POLICY_MARKERS):
        return "content_policy"
    return None


R = TypeVar("R")


class SseFramer:
    """Splits a byte stream into server-sent events (event name, data); keeps only an unfinished event.

    Linear in the bytes fed: an unfinished event is kept as a list of pieces and only the newly arrived piece is
    searched for the blank line that ends it, so an event that arrives in many pieces (or never ends) costs its
    size once, not once per piece."""

    __slots__ = ("cr", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []  # the unfinished event, CRLF already folded to LF
        self.cr = False  # the last piece ended in CR: half of a CRLF, or a line end of its own

    def feed(self, piece: bytes) -> list[tuple[bytes, bytes]]:
        if self.cr:
            piece = b"\r" + piece
            self.cr = False
        if (
            b"\r" in piece
        ):  # CRLF line ends (Google's SSE); a CR at the very end may be half of a CRLF: keep it
            if piece.endswith(b"\r"):
                piece, self.cr = piece[:-1], True
            piece = piece.replace(b"\r\n", b"\n")
        if not piece:
            return []
        parts = self.parts
        if parts:
            # the blank line may straddle the previous piece and this one
            if not (parts[-1].endswith(b"\n") and piece.startswith(b"\n")) and b"\n\n" not in piece:
                parts.append(piece)
                return []
            parts.append(piece)
            buf = b"".join(parts)
            parts.clear()
        else:
            buf = piece
        events = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            event, data = b"", []
            for line in buf[start:end].split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
            if data:
                events.append((event, b"\n".join(data)))
            start = end + 2
        if start < len(buf):
            parts.append(buf[start:] if start else buf)
        return events

    def check_complete(self) -> None:
        if any(p.strip() for p in self.parts):
            raise UpstreamError(502, "stream ended inside an event", bad_response=True)


class ChunkDecoder(Protocol):
    """Wire bytes → canonical chunks, for one stream. ``feed`` takes whatever the network delivered."""

    @property
    def done(self) -> bool:
        """True once the stream's own end marker was seen (the rest of the body is not read)."""
        ...

    def feed(self, piece: bytes) -> list[ChatChunk]: ...

    def finish(self) -> list[ChatChunk]:
        """The stream's bytes are over: the last chunks, or an UpstreamError if it ended too early."""
        ...
