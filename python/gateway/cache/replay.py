"""A cached answer replayed as a stream: the same canonical chunks a live upstream would have produced, so the
caller's dialect frames them (OpenAI SSE or Anthropic events) exactly as it frames a live stream."""

from __future__ import annotations

from gateway.relay import chunks_of as to_chunks
from gateway.types import ChatChunk, ChatResponse, Usage

__all__ = ["Collector", "to_chunks"]


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
