"""The stage contract (``pipeline.py``): pre hooks in order with short-circuits as return values, post and per-chunk
hooks in reverse order, what a stage held back at the end of a stream passed through the stages after it, and
``finish`` for every stage even when one fails. The stages here are small stages written for the contract."""

from __future__ import annotations

import asyncio

from gateway.context import RequestContext
from gateway.pipeline import Pipeline, Stage
from gateway.relay import chunks_of
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Choice, Delta, Message, Usage


def req() -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content="hi")])


def resp(text: str = "answer") -> ChatResponse:
    return ChatResponse(
        id="r",
        model="m",
        choices=[Choice(index=0, message=Message(role="assistant", content=text))],
        usage=Usage(),
    )


def chunk(text: str) -> ChatChunk:
    return ChatChunk(id="c", model="m", choices=[Delta(content=text)])


class Tagging(Stage):
    """Appends its name to what passes (answers, chunks) and logs every hook call in ``ctx.flags['log']``."""

    def __init__(self, name: str, short: ChatResponse | None = None, hold: str | None = None) -> None:
        self.name, self.short, self.hold = name, short, hold

    def log(self, ctx: RequestContext, hook: str) -> None:
        ctx.flags.setdefault("log", []).append(f"{hook}:{self.name}")

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        self.log(ctx, "pre")
        return self.short

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        self.log(ctx, "post")
        resp.choices[0].message.content = f"{resp.choices[0].message.content}+{self.name}"
        return resp

    def on_chunk(self, ctx: RequestContext, c: ChatChunk) -> ChatChunk | None:
        self.log(ctx, "chunk")
        c.choices[0].content = f"{c.choices[0].content}+{self.name}"
        return c

    def on_stream_end(self, ctx: RequestContext) -> list[ChatChunk]:
        return [chunk(self.hold)] if self.hold else []

    async def finish(self, ctx: RequestContext) -> None:
        self.log(ctx, "finish")
        if self.name == "broken":
            raise RuntimeError("settle failed")


class Dropping(Stage):
    name = "drop"

    def on_chunk(self, ctx: RequestContext, c: ChatChunk) -> ChatChunk | None:
        return None


def run(coro):
    return asyncio.run(coro)


def test_pre_hooks_run_in_order_and_a_short_circuit_ends_them():
    ctx = RequestContext("chat", "openai")
    cached = resp("from cache")
    p = Pipeline([Tagging("a"), Tagging("b", short=cached), Tagging("c")])
    assert run(p.pre(ctx, req())) is cached
    assert ctx.flags["log"] == ["pre:a", "pre:b"]
    assert ctx.flags["short_circuit"] == "b"


def test_no_short_circuit_returns_none():
    ctx = RequestContext("chat", "openai")
    assert run(Pipeline([Tagging("a"), Tagging("b")]).pre(ctx, req())) is None
    assert "short_circuit" not in ctx.flags


def test_post_hooks_run_in_reverse_order():
    ctx = RequestContext("chat", "openai")
    out = run(Pipeline([Tagging("a"), Tagging("b"), Tagging("c")]).post(ctx, resp()))
    assert out.choices[0].message.content == "answer+c+b+a"
    assert ctx.flags["log"] == ["post:c", "post:b", "post:a"]


def test_chunk_hooks_run_in_reverse_order_and_a_drop_stops_the_rest():
    ctx = RequestContext("chat", "openai")
    out = Pipeline([Tagging("a"), Tagging("b")]).on_chunk(ctx, chunk("x"))
    assert out is not None and out.choices[0].content == "x+b+a"
    ctx = RequestContext("chat", "openai")
    assert Pipeline([Tagging("a"), Dropping(), Tagging("b")]).on_chunk(ctx, chunk("x")) is None
    assert ctx.flags["log"] == ["chunk:b"]  # a, before the dropping stage in reverse order, never saw it


def test_what_a_stage_held_back_passes_through_the_stages_after_it():
    # per-chunk order is c, b, a: what b held back still goes through a (after it), never through c (before it)
    ctx = RequestContext("chat", "openai")
    p = Pipeline([Tagging("a"), Tagging("b", hold="tail-b"), Tagging("c", hold="tail-c")])
    out = [c.choices[0].content for c in p.on_stream_end(ctx)]
    assert out == ["tail-c+b+a", "tail-b+a"]


def test_held_back_chunks_can_be_dropped_by_a_later_stage():
    ctx = RequestContext("chat", "openai")
    assert Pipeline([Dropping(), Tagging("b", hold="tail")]).on_stream_end(ctx) == []


def test_finish_runs_for_every_stage_in_reverse_even_when_one_fails():
    ctx = RequestContext("chat", "openai")
    run(Pipeline([Tagging("a"), Tagging("broken"), Tagging("c")]).finish(ctx))
    assert ctx.flags["log"] == ["finish:c", "finish:broken", "finish:a"]
    assert ctx.flags["finish_errors"] == ["broken"]


def test_unused_hooks_cost_nothing():
    p = Pipeline([Dropping()])
    assert p._chunk and not p._pre and not p._post and not p._finish


def test_a_traced_request_keeps_each_stage_time_and_still_short_circuits():
    ctx = RequestContext("chat", "openai")
    ctx.trace = object()  # sampled for tracing: the traced path runs
    cached = resp("from cache")
    assert run(Pipeline([Tagging("a"), Tagging("b", short=cached), Tagging("c")]).pre(ctx, req())) is cached
    assert [name for name, *_ in ctx.stage_log] == ["a", "b"]
    assert all(start <= end for _, start, end in ctx.stage_log)
    assert ctx.flags["short_circuit"] == "b"
    ctx = RequestContext("chat", "openai")
    ctx.trace = object()
    assert run(Pipeline([Tagging("a"), Tagging("b")]).pre(ctx, req())) is None
    assert [name for name, *_ in ctx.stage_log] == ["a", "b"]


def test_a_short_circuit_answer_streams_as_chunks():
    r = resp("whole answer")
    r.choices[0].finish_reason = "stop"
    r.usage = Usage(input_tokens=3, output_tokens=2)
    chunks = chunks_of(r)
    deltas = [d for c in chunks for d in c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == "whole answer"
    assert deltas[-1].finish_reason == "stop"
    assert chunks[-1].usage == r.usage and all(c.usage is None for c in chunks[:-1])
    # the prompt's part of the usage is known up front (what Anthropic's message_start announces)
    assert chunks[0].prompt == Usage(input_tokens=3) and all(c.prompt is None for c in chunks[1:])
