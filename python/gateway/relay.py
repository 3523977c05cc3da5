"""The stream relay: canonical chunks from the router (or a stage's short-circuit answer) to the caller's stream.

Chunks are relayed as they arrive, never buffered: what arrived together leaves together (one write per network
read). Each chunk goes through the pipeline's per-chunk hooks, then the dialect's renderer. Errors before the
first byte are the edge's (a normal error response); after it the stream ends with an error event in the caller's
dialect. Usage is settled in every case by the router's metered stream (``routing/metering.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway import tokens
from gateway.context import RequestContext
from gateway.dialects import Dialect, StreamRenderer
from gateway.enrich import enrich_headers
from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline import Pipeline
from gateway.routing.metering import MeteredStream
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Delta, Usage

log = logging.getLogger("gateway")


PIECE = 64  # characters per content chunk: a stream of a few chunks, not one per character


def chunks_of(resp: ChatResponse, usage: Usage | None = None) -> list[ChatChunk]:
    """A whole answer (a stage's short-circuit, e.g. a cache hit) as the canonical chunks a live upstream would
    have streamed: the role, the reasoning, the text in pieces, the tool calls, the finish, then the usage."""
    usage = resp.usage if usage is None else usage
    cid, model, created = resp.id, resp.model, resp.created
    out: list[ChatChunk] = []
    for c in resp.choices:
        m = c.message
        out.append(
            ChatChunk(cid, model, [Delta(index=c.index, role="assistant", content="")], created=created)
        )
        if m.reasoning:
            out.append(ChatChunk(cid, model, [Delta(index=c.index, reasoning=m.reasoning)], created=created))
        text = m.content if isinstance(m.content, str) else ""
        for i in range(0, len(text), PIECE):
            out.append(
                ChatChunk(cid, model, [Delta(index=c.index, content=text[i : i + PIECE])], created=created)
            )
        for j, tc in enumerate(m.tool_calls or ()):
            out.append(
                ChatChunk(
                    cid, model, [Delta(index=c.index, tool_calls=[{"index": j, **tc}])], created=created
                )
            )
        done = Delta(index=c.index, finish_reason=c.finish_reason or "stop", stop_sequence=c.stop_sequence)
        out.append(ChatChunk(cid, model, [done], created=created))
    out.append(ChatChunk(cid, model, [], usage=usage, created=created))
    out[0].prompt = Usage(usage.input_tokens, 0, usage.cached_tokens, usage.cache_creation_tokens)
    return out


async def no_more() -> AsyncIterator[list[ChatChunk]]:
    """The rest of a stream that came whole (a short-circuit): nothing."""
    return
    yield  # pragma: no cover - makes this an async generator


def whole(ctx: RequestContext, req: ChatRequest, resp: ChatResponse) -> tuple[list[ChatChunk], MeteredStream]:
    """A stage's short-circuit answer as a stream: its chunks, and a rest that is empty and charges nothing."""
    first = chunks_of(resp)
    return first, MeteredStream(ctx, req, None, first, no_more())


class StreamRelay:
    """One stream's relay: ``run`` sends every chunk and the end. Usage is settled by the metered stream (the
    router's one place for cost) however the stream ends; the relay only reads the final usage for the end."""

    __slots__ = ("ctx", "dialect", "last", "pipeline", "renderer", "req")

    def __init__(self, ctx: RequestContext, req: ChatRequest, dialect: Dialect, pipeline: Pipeline) -> None:
        self.ctx, self.req, self.dialect, self.pipeline = ctx, req, dialect, pipeline
        self.renderer: StreamRenderer = dialect.stream(req)
        self.last: ChatChunk | None = None

    async def run(self, proto: Any, first: list[ChatChunk], rest: MeteredStream) -> None:
        """Relay ``first`` and then every batch of ``rest``. Never raises after the first byte except on
        cancellation (client gone); ``rest`` is closed (and so settled) in every case."""
        ctx = self.ctx
        ctx.ttfb = time.perf_counter_ns() - ctx.started
        transport = proto.response_stream(200, enrich_headers(ctx, self.dialect.stream_content_type))
        upstream_wait = 0
        if self.renderer.counts_prompt:
            first = self._with_prompt(first)
        try:
            batch = first
            while True:
                out = self._render(batch)
                if out:  # what arrived together leaves together: one write per network read
                    await transport.send_bytes(b"".join(out) if len(out) > 1 else out[0])
                t0 = time.perf_counter_ns()
                try:
                    batch = await anext(rest)
                except StopAsyncIteration:
                    break
                finally:
                    upstream_wait += time.perf_counter_ns() - t0
            for c in self.pipeline.on_stream_end(ctx):
                data = self.renderer.chunk(c)
                if data:
                    await transport.send_bytes(data)
            await transport.send_bytes(self.renderer.end(rest.settle(), self.last))
        except GatewayError as e:
            await self._error(transport, e)
        except asyncio.CancelledError:
            self._client_gone()
            raise
        except Exception as e:
            if isinstance(e, UpstreamError):
                await self._error(transport, e.to_gateway_error())
            elif is_disconnect(e):
                self._client_gone()
            else:
                log.exception("stream failed on request %s", ctx.request_id)
                err = GatewayError(
                    "internal_error", f"The stream failed in the gateway; request id {ctx.request_id}."
                )
                await self._error(transport, err)
        finally:
            ctx.upstream_ns += upstream_wait
            await rest.aclose()

    def _with_prompt(self, first: list[ChatChunk]) -> list[ChatChunk]:
        """The first batch, its first chunk carrying the prompt's usage: the upstream's when it reported it up
        front, else the gateway's count for the deployment that answers (the one the limit and budget stages
        already made, when they counted)."""
        if first and first[0].prompt is not None:
            return first
        ctx, req = self.ctx, self.req
        n = tokens.prompt_tokens(ctx, req, ctx.upstream_model or req.model, ctx.provider)
        if not first:
            return [ChatChunk("", "", [], prompt=Usage(input_tokens=n, estimated=True))]
        first[0].prompt = Usage(input_tokens=n, estimated=True)
        return first

    def _render(self, batch: list[ChatChunk]) -> list[bytes]:
        out = []
        on_chunk, render = self.pipeline.on_chunk, self.renderer.chunk
        for chunk in batch:
            self.last = chunk
            kept = on_chunk(self.ctx, chunk)
            if kept is not None:
                data = render(kept)
                if data:
                    out.append(data)
        return out

    async def _error(self, transport: Any, err: GatewayError) -> None:
        """After the first byte the status line is gone: end with an error event in the caller's dialect."""
        ctx = self.ctx
        ctx.status = err.status
        ctx.error = (err.code, err.message)
        ctx.flags["stream_error_after_first_byte"] = True
        with contextlib.suppress(Exception):
            await transport.send_bytes(self.renderer.error(err))

    def _client_gone(self) -> None:
        self.ctx.status = 499
        self.ctx.error = ("client_disconnected", "the client closed the stream")


def is_disconnect(e: Exception) -> bool:
    return type(e).__name__ in (
        "RSGIProtocolClosed",
        "ProtocolClosed",
        "ConnectionResetError",
        "BrokenPipeError",
    )
