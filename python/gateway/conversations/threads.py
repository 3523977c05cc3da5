"""Anthropic message threads (``thread`` on ``POST /v1/messages``): the server-held conversation the anthropic
SDK's threads and ``beta.messages.tool_runner`` use by default.

``{"type": "create"}`` sends the whole conversation with its ``system`` and ``tools``; the gateway keeps it, with
the reply, under the reply's message id. ``{"type": "continue", "previous_message_id": …}`` sends only the new
messages: the gateway puts the kept conversation (and its system prompt and tools) in front of them before any
other stage runs, so limits, budgets and PII masking see the prompt the model will see. An unknown, expired or
foreign id is ``thread_not_found`` (in ``error.details.error_code``), on which the SDK sends the whole history
again under a new thread.

A thin pipeline stage: the Anthropic dialect leaves the parsed ``thread`` in ``req.extra``, :meth:`pre` takes it
out (no upstream ever sees it), :meth:`post` or :meth:`finish` (streams) keeps the turn. Requests without a thread
cost one dict lookup; stream chunks are only collected for threaded requests.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.context import RequestContext
from gateway.conversations import Stored, load
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Message

THREAD = "thread"  # ctx.scratch: the open thread turn (private to this stage)
_encode = msgspec.json.Encoder().encode
_messages = msgspec.json.Decoder(list[Message])


def message_id(upstream_id: str) -> str:
    """The id the Anthropic dialect shows for a reply (and the key its thread turn is kept under)."""
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"


def thread_not_found(mid: str) -> GatewayError:
    return GatewayError(
        "not_found",
        f"No thread continues from message {mid!r}: it is unknown, expired or not yours. Send the whole "
        "conversation again with thread {type: create}.",
        param="thread.previous_message_id",
        details={"error_code": "thread_not_found"},
    )


class _Turn:
    """One threaded request on its way: the conversation in the caller's words, and the reply as it streams."""

    __slots__ = (
        "calls",
        "convo",
        "extra",
        "reasoning",
        "reply_id",
        "session",
        "signature",
        "system",
        "texts",
        "tools",
    )

    def __init__(self, convo: bytes, system: list[Message], tools: Any, extra: dict[str, Any], session: str):
        self.convo = convo
        self.system = system
        self.tools = tools
        self.extra = extra
        self.session = session
        self.reply_id = ""
        self.texts: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.signature: str | None = None


_CREATE_ONLY_EXTRAS = ("thinking", "cache_control", "top_k", "service_tier", "context_management")


class ThreadStage(Stage):
    name = "threads"

    def __init__(self, store: Any) -> None:
        self.store = store

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        if not req.extra or THREAD not in req.extra:
            return
        thread = req.extra.pop(THREAD)
        system = [m for m in req.messages if m.role == "system"]
        rest = [m for m in req.messages if m.role != "system"]
        session = ctx.request_id
        if thread["type"] == "continue":
            if len(rest) == 1 and rest[0].role == "user" and rest[0].content == "":
                rest = []  # the dialect's placeholder for a continue that adds nothing
            mid = thread["previous_message_id"]
            prev = await load(self.store, mid, ctx.principal, "thread")
            if prev is None:
                raise thread_not_found(mid)
            system = system or prev.system
            rest = [*prev.messages, *rest]
            req.messages = [*system, *rest]
            if req.tools is None and prev.tools:
                req.tools = prev.tools
            for k, v in prev.extra.items():
                req.extra.setdefault(k, v)
            session = prev.session
        if ctx.session is None:
            ctx.session = session  # one PII session per thread: placeholders stay stable
        extra = {k: req.extra[k] for k in _CREATE_ONLY_EXTRAS if k in req.extra}
        ctx.scratch[THREAD] = _Turn(_encode(rest), _copy(system), req.tools, extra, session)

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        turn: _Turn | None = ctx.scratch.get(THREAD)
        if turn is not None and resp.choices:
            await self._keep(ctx, turn, message_id(resp.id), resp.choices[0].message)
            ctx.scratch.pop(THREAD, None)
        return resp

    def on_chunk(self, ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
        turn: _Turn | None = ctx.scratch.get(THREAD)
        if turn is None:
            return chunk
        if not turn.reply_id and chunk.id:
            turn.reply_id = message_id(chunk.id)
        for d in chunk.choices:
            if d.index:
                continue
            if d.content:
                turn.texts.append(d.content)
            if d.reasoning:
                turn.reasoning.append(d.reasoning)
            if d.extra and d.extra.get("reasoning_signature"):
                turn.signature = d.extra["reasoning_signature"]
            for tc in d.tool_calls or ():
                call = turn.calls.setdefault(
                    tc.get("index", 0),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                fn = tc.get("function") or {}
                call["id"] = tc.get("id") or call["id"]
                call["function"]["name"] = fn.get("name") or call["function"]["name"]
                call["function"]["arguments"] += fn.get("arguments") or ""
        return chunk

    async def finish(self, ctx: RequestContext) -> None:
        turn: _Turn | None = ctx.scratch.pop(THREAD, None)
        if turn is None or ctx.error is not None or not turn.reply_id:
            return  # a failed turn is not kept: the SDK starts a new thread after it
        reply = Message(
            role="assistant",
            content="".join(turn.texts) if turn.texts or not turn.calls else None,
            tool_calls=list(turn.calls.values()) or None,
            reasoning="".join(turn.reasoning) or None,
            extra={"reasoning_signature": turn.signature} if turn.signature else None,
        )
        await self._keep(ctx, turn, turn.reply_id, reply)

    async def _keep(self, ctx: RequestContext, turn: _Turn, mid: str, reply: Message) -> None:
        p = ctx.principal
        stored = Stored(
            kind="thread",
            tenant=p.tenant if p else None,
            key_id=p.key_id if p else None,
            created_at=int(ctx.started_wall),
            model=ctx.model or "",
            messages=[*_messages.decode(turn.convo), reply],
            session=turn.session,
            system=turn.system,
            tools=turn.tools,
            extra=turn.extra,
        )
        try:
            await self.store.put(mid, stored)
        except (
            GatewayError
        ) as e:  # the caller has its answer; the SDK replays the history if the id is unknown
            ctx.flags["conversation_not_stored"] = e.code


def _copy(messages: list[Message]) -> list[Message]:
    """Messages as the caller sent them (later stages rewrite the request's own in place)."""
    return _messages.decode(_encode(messages)) if messages else []
