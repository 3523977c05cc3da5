"""Token counting for budgets, TPM limits and streams that arrive without usage.

Exact for OpenAI encodings (o200k_base / cl100k_base, BPE ranks compiled into the Rust core); for providers whose
tokenizer is not public (Anthropic, Gemini, Bedrock models) the core's documented estimator is used and the
usage is flagged ``estimated``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

import msgspec

from gateway import _core
from gateway.types import ChatRequest

if TYPE_CHECKING:
    from gateway.context import RequestContext

EXACT_PROVIDERS = frozenset({None, "openai", "azure"})


@lru_cache(maxsize=8)
def tokenizer(encoding: str) -> _core.Tokenizer:
    return _core.Tokenizer(encoding)


def _for(model: str) -> _core.Tokenizer:
    return tokenizer(_core.encoding_for_model(model))


def count_text(text: str, model: str, provider: str | None = None) -> int:
    if not text:
        return 0
    if provider in EXACT_PROVIDERS:
        return _for(model).count(text)
    return _core.estimate_tokens(text)


def count_request(req: ChatRequest, model: str, provider: str | None = None) -> int:
    """Prompt tokens of a chat request, including the chat format's per-message overhead and tool definitions."""
    encoding = _core.encoding_for_model(model)
    hit = _OFF_LOOP.get(id(req))
    n = hit[1].get(encoding) if hit is not None and hit[0] is req else None
    if n is None:
        n = _count_messages(req, encoding)
    if provider in EXACT_PROVIDERS:
        return n
    # Providers with a private tokenizer: scale the o200k count by the estimator's ratio for this text.
    return round(n * 1.1)


def _count_messages(req: ChatRequest, encoding: str) -> int:
    messages = msgspec.to_builtins(req.messages)
    tools = msgspec.to_builtins(req.tools) if req.tools else None
    return tokenizer(encoding).count_messages(messages, tools)


# A request body at least this large is counted on a worker thread before the stages run: BPE is superlinear in a
# long run of text without spaces (a 3 MiB one took seconds), and the core releases the GIL while it counts, so
# the event loop keeps serving the worker's other requests meanwhile.
OFF_LOOP_BYTES = 256 * 1024
# request id -> (request, encoding -> count) for the requests counted off the loop and not yet finished; kept
# small (a large request is rare, and one evicted early is merely counted again on the loop)
_OFF_LOOP: dict[int, tuple[ChatRequest, dict[str, int]]] = {}
_OFF_LOOP_MAX = 16


async def count_off_loop(req: ChatRequest, models: Iterable[str]) -> None:
    """Count ``req``'s prompt for the encodings of ``models`` on a thread; ``count_request`` (and every stage
    and router call that uses it) then finds the counts instead of counting on the loop. ``forget`` when done."""
    counts: dict[str, int] = {}
    for encoding in {_core.encoding_for_model(m) for m in models}:
        counts[encoding] = await asyncio.to_thread(_count_messages, req, encoding)
    while len(_OFF_LOOP) >= _OFF_LOOP_MAX:
        del _OFF_LOOP[next(iter(_OFF_LOOP))]
    _OFF_LOOP[id(req)] = (req, counts)


def forget(req: ChatRequest) -> None:
    _OFF_LOOP.pop(id(req), None)


def prompt_tokens(ctx: RequestContext, req: ChatRequest, model: str, provider: str | None = None) -> int:
    """``count_request``, once per request and tokenizer (kept in ``ctx.token_counts``): the limits and budget
    stages both need the prompt's size before the call."""
    key = (_core.encoding_for_model(model), provider in EXACT_PROVIDERS)
    n = ctx.token_counts.get(key)
    if n is None:
        n = ctx.token_counts[key] = count_request(req, model, provider)
    return n
