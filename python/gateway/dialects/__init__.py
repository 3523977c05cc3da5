"""Client dialects: the formats callers speak (OpenAI, Anthropic), each translated at the edge to the canonical
types in ``gateway.types`` and back. A new dialect is one module providing a :class:`Dialect` (and its
:class:`StreamRenderer`); the edge (``app.py``) and the stream relay (``relay.py``) see only these two shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.errors import GatewayError
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Usage


class StreamRenderer(Protocol):
    """Frames canonical chunks in the caller's stream format, one instance per stream."""

    counts_prompt: bool
    """True when the format announces the prompt's tokens before any output (Anthropic's ``message_start``):
    the relay then makes sure the first chunk carries them (``ChatChunk.prompt``)."""

    def chunk(self, c: ChatChunk) -> bytes | None:
        """The bytes for one chunk (None: nothing to send for it)."""
        ...

    def end(self, usage: Usage, last: ChatChunk | None) -> bytes:
        """The stream's closing bytes, with its final usage (counted by the gateway if the upstream sent none)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """An error after the first byte (the status line is gone): one last event in the caller's shape."""
        ...


class Dialect(Protocol):
    """What the edge needs from a client format: parse a chat request, render an answer, an error, a stream.

    Dialects are namespaces (``OpenAIDialect``, ``AnthropicDialect``: classes with class attributes and static
    functions), so the members are declared as read-only attributes."""

    @property
    def name(self) -> str:
        """Recorded as the request's ``dialect``."""
        ...

    @property
    def stream_content_type(self) -> str: ...

    @property
    def parse_chat(self) -> Callable[[bytes], ChatRequest]: ...

    @property
    def render_response(self) -> Callable[[ChatResponse], bytes]: ...

    @property
    def error_body(self) -> Callable[[GatewayError], bytes]: ...

    @property
    def stream(self) -> Callable[[ChatRequest], StreamRenderer]:
        """A renderer for one stream (the dialects bind their renderer class here)."""
        ...
