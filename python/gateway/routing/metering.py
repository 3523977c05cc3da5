"""Cost, in one place: every upstream attempt a request pays for is charged through :func:`charge_attempt` —
answers (including ones refused afterwards, e.g. on content policy), cancelled hedges (their prompt, estimated)
and streams, which :class:`MeteredStream` settles when they end, however they end (exhausted, failed after the
first byte, or closed because the client went away)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from gateway import tokens
from gateway.context import RequestContext
from gateway.pricing import charge
from gateway.types import ChatChunk, ChatRequest, Usage

log = logging.getLogger("gateway")

if TYPE_CHECKING:
    from gateway.routing.target import Target


def charge_attempt(ctx: RequestContext, target: Target | None, usage: Usage) -> None:
    """Add one attempt's usage, priced at the deployment that made it, to the request (no target: a stage's own
    answer, e.g. a cache hit, costs nothing upstream)."""
    if target is not None:
        charge(ctx, usage, target.price)


def estimate_prompt(ctx: RequestContext, target: Target) -> Usage:
    """What a cancelled attempt cost: its prompt (counted), flagged ``estimated``."""
    assert ctx.req is not None
    n = tokens.count_request(ctx.req, target.dep.model, target.dep.provider)
    return Usage(input_tokens=n, estimated=True)


async def aclose_quietly(it: AsyncIterator[Any]) -> None:
    """Close an async generator whose consumer is gone; its own cleanup errors are not the caller's."""
    close = getattr(it, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await close()


class MeteredStream:
    """The rest of a stream after its first batch, metered.

    It sees every chunk (the first batch included) before any stage does, keeps the upstream's usage or the
    text to count when there is none, and charges the deployment once, when the stream ends: exhausted
    (``StopAsyncIteration``), or closed early (``aclose``: an error after the first byte, a client gone).
    ``settle()`` returns the final usage (for the stream's closing event) and is idempotent. ``on_end``, when set,
    is called once with the stream when it has run to its end (not when closed early): what the whole answer says
    (the quality loop's refusal signal)."""

    __slots__ = ("_settled", "ctx", "filtered", "it", "on_end", "req", "target", "texts", "usage")

    def __init__(
        self,
        ctx: RequestContext,
        req: ChatRequest,
        target: Target | None,
        first: list[ChatChunk],
        it: AsyncIterator[list[ChatChunk]],
    ) -> None:
        self.ctx, self.req, self.target, self.it = ctx, req, target, it
        self.usage: Usage | None = None
        self.texts: list[str] = []
        self.filtered = False  # a choice ended on the provider's content filter
        self.on_end: Callable[[MeteredStream], None] | None = None
        self._settled: Usage | None = None
        self._observe(first)

    def __aiter__(self) -> MeteredStream:
        return self

    async def __anext__(self) -> list[ChatChunk]:
        try:
            batch = await anext(self.it)
        except StopAsyncIteration:
            self.settle()
            if self.on_end is not None:
                end, self.on_end = self.on_end, None
                try:  # what is learned from a delivered stream must not turn its end into an error
                    end(self)
                except Exception:
                    log.exception("stream end hook failed on request %s", self.ctx.request_id)
            raise
        self._observe(batch)
        return batch

    def _observe(self, batch: list[ChatChunk]) -> None:
        texts = self.texts
        for chunk in batch:
            if chunk.usage is not None:
                self.usage = chunk.usage
            for d in chunk.choices:
                if d.content:
                    texts.append(d.content)
                if d.finish_reason == "content_filter":
                    self.filtered = True
                if d.tool_calls:
                    texts.extend(tc.get("function", {}).get("arguments") or "" for tc in d.tool_calls)

    def settle(self) -> Usage:
        """Charge the stream once; when the upstream sent no usage, count it (exact for OpenAI encodings,
        estimated otherwise, and flagged ``estimated`` either way)."""
        if self._settled is not None:
            return self._settled
        usage = self.usage
        if usage is None:
            t, ctx = self.target, self.ctx
            model = t.dep.model if t is not None else ctx.upstream_model or self.req.model
            provider = t.dep.provider if t is not None else ctx.provider
            usage = Usage(
                input_tokens=tokens.count_request(self.req, model, provider),
                output_tokens=tokens.count_text("".join(self.texts), model, provider),
                estimated=True,
            )
        self._settled = usage
        charge_attempt(self.ctx, self.target, usage)
        return usage

    async def aclose(self) -> None:
        """Close the upstream stream and settle what was received so far."""
        try:
            await aclose_quietly(self.it)
        finally:
            self.settle()
