"""The stage contract and the ordered pipeline that runs stages over one RequestContext.

A stage may implement any of:

- ``pre(ctx, req) -> ChatResponse | None``: before routing, in order. Raise :class:`GatewayError` to reject;
  return a ChatResponse to answer without calling upstream (a short-circuit, e.g. a cache hit): the stages after
  it do not run, the router is not called, and the answer goes back through the post hooks (non-stream) or is
  relayed as a stream (``relay.chunks_of``) through the per-chunk hooks — in both cases of every stage. Move the
  request to another model group only with ``ctx.reroute(group, reason)``.
- ``post(ctx, resp) -> resp``: after a non-stream response, in reverse order.
- ``on_chunk(ctx, chunk) -> chunk | None``: per stream chunk, in reverse order, synchronous (keep it tiny).
- ``on_stream_end(ctx) -> list[chunk]``: flush what a stage held back (e.g. a split PII placeholder).
- ``finish(ctx)``: always, once, after the answer (success or error): settle reservations here.

The pipeline looks up which stages override which hook once, at construction, so an unused hook costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.context import RequestContext
from gateway.types import ChatChunk, ChatRequest, ChatResponse


class Stage:
    name = "stage"

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        return None

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        return resp

    def on_chunk(self, ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[ChatChunk]:
        return []

    async def finish(self, ctx: RequestContext) -> None:
        return None


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


def _through(stages: list[Stage], ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
    for s in stages:
        out = s.on_chunk(ctx, chunk)
        if out is None:
            return None
        chunk = out
    return chunk


class Pipeline:
    """The configured stages in order; each hook runs only over the stages that implement it."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._pre = [s for s in self.stages if _overrides(s, "pre")]
        rev = list(reversed(self.stages))
        self._post = [s for s in rev if _overrides(s, "post")]
        self._chunk = [s for s in rev if _overrides(s, "on_chunk") or _overrides(s, "on_stream_end")]
        self._finish = [s for s in rev if _overrides(s, "finish")]

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        """Run the pre hooks in order; the first short-circuit answer ends them and is returned."""
        if ctx.trace is not None:
            return await self._pre_traced(ctx, req)
        for s in self._pre:
            short = await s.pre(ctx, req)
            if short is not None:
                ctx.flags["short_circuit"] = s.name
                return short
        return None

    async def _pre_traced(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        """``pre`` with each stage's start and end kept for its span (sampled requests only)."""
        clock = time.perf_counter_ns
        for s in self._pre:
            t0 = clock()
            try:
                short = await s.pre(ctx, req)
            finally:
                ctx.stage_log.append((s.name, t0, clock()))
            if short is not None:
                ctx.flags["short_circuit"] = s.name
                return short
        return None

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        """The answer through every post hook, in reverse stage order (the last stage sees it first)."""
        for s in self._post:
            resp = await s.post(ctx, resp)
        return resp

    def on_chunk(self, ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
        """One stream chunk through every per-chunk hook (reverse stage order); None: a stage dropped it."""
        return _through(self._chunk, ctx, chunk)

    def on_stream_end(self, ctx: RequestContext) -> list[ChatChunk]:
        """What each stage held back, passed through the per-chunk hooks of the stages after it."""
        out: list[ChatChunk] = []
        for i, s in enumerate(self._chunk):
            later = self._chunk[i + 1 :]
            for held in s.on_stream_end(ctx):
                kept = _through(later, ctx, held)
                if kept is not None:
                    out.append(kept)
        return out

    async def finish(self, ctx: RequestContext) -> None:
        for s in self._finish:
            try:
                await s.finish(ctx)
            except Exception:  # a failing settle must not cost the caller its answer or its record
                ctx.flags.setdefault("finish_errors", []).append(s.name)
