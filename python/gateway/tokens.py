"""Token counting for budgets, TPM limits and streams that arrive without usage.

Exact for OpenAI encodings (o200k_base / cl100k_base, BPE ranks compiled into the Rust core); for providers whose
tokenizer is not public (Anthropic, Gemini, Bedrock models) the core's documented estimator is used and the
usage is flagged ``estimated``.
"""

from __future__ import annotations

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
    messages = msgspec.to_builtins(req.messages)
    tools = msgspec.to_builtins(req.tools) if req.tools else None
    n = _for(model).count_messages(messages, tools)
    if provider in EXACT_PROVIDERS:
        return n
    # Providers with a private tokenizer: scale the o200k count by the estimator's ratio for this text.
    return round(n * 1.1)


def prompt_tokens(ctx: RequestContext, req: ChatRequest, model: str, provider: str | None = None) -> int:
    """``count_request``, once per request and tokenizer (kept in ``ctx.token_counts``): the limits and budget
    stages both need the prompt's size before the call."""
    key = (_core.encoding_for_model(model), provider in EXACT_PROVIDERS)
    n = ctx.token_counts.get(key)
    if n is None:
        n = ctx.token_counts[key] = count_request(req, model, provider)
    return n
