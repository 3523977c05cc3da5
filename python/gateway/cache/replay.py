"""A cached answer replayed as a stream: the same canonical chunks a live upstream would have produced, so the
caller's dialect frames them (OpenAI SSE or Anthropic events) exactly as it frames a live stream."""

from __future__ import annotations

from typing import Any

from gateway.types import ChatChunk, ChatResponse, Delta, Usage

PIECE = 64  # characters per content chunk: a stream of a few chunks, not one per character


def to_chunks(resp: ChatResponse, usage: Usage) -> list[ChatChunk]:
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
    return out


class Collector:
    """Rebuilds a streamed answer (text per choice and the finish reason) so it can be stored when it ends."""

    __slots__ = ("finish", "first", "parts", "usage")

    def __init__(self) -> None:
        self.parts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.first: ChatChunk | None = None
        self.usage: Usage | None = None

    def add(self, chunk: ChatChunk) -> bool:
        """False when the stream carries something the cache does not keep (tool calls, reasoning)."""
        if self.first is None:
            self.first = chunk
        if chunk.usage is not None:
            self.usage = chunk.usage
        for d in chunk.choices:
            if d.tool_calls or d.reasoning:
                return False
            if d.content:
                self.parts.setdefault(d.index, []).append(d.content)
            if d.finish_reason is not None:
                self.finish[d.index] = d.finish_reason
        return True

    def response(self) -> ChatResponse | None:
        from gateway.types import Choice, Message

        f = self.first
        if f is None or not self.finish:
            return None
        choices = [
            Choice(
                index=i,
                message=Message(role="assistant", content="".join(self.parts.get(i, []))),
                finish_reason=r,
            )
            for i, r in sorted(self.finish.items())
        ]
        return ChatResponse(
            id=f.id, model=f.model, choices=choices, usage=self.usage or Usage(), created=f.created
        )


async def _nothing() -> Any:
    return
    yield


def as_stream(resp: ChatResponse) -> tuple[list[ChatChunk], Any]:
    """The (first batch, rest) pair a live stream opens with, for a short-circuit answer."""
    return to_chunks(resp, resp.usage), _nothing()
