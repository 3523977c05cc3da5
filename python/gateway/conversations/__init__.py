"""Server-held conversations: the turns of a Responses chain (``store`` / ``previous_response_id``) and of an
Anthropic ``thread``, kept so a later request sends only what is new.

One store, two backends: each worker's memory by default, Redis when ``state.redis_url`` is set (shared by every
worker and replica). Entries expire after ``conversations.ttl_s``. An entry belongs to the key that made it (and
its tenant): any other caller asking for its id is told it does not exist, exactly as for an unknown id.

What is kept is the conversation in the caller's own words (the gateway masks PII again on every turn). Its turns
share one PII session, so a value keeps its placeholder across turns and the model's references to it unmask.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import msgspec

from gateway.errors import GatewayError
from gateway.types import Message, Principal, Tool

log = logging.getLogger("gateway.conversations")


class Stored(msgspec.Struct, omit_defaults=True):
    """One stored turn: everything needed to continue after it, retrieve it or list its input."""

    kind: str  # "response" (Responses API) | "thread" (Anthropic message threads)
    tenant: str | None
    key_id: str | None
    created_at: int
    model: str
    messages: list[Message]  # the conversation so far, ending with this turn's answer (no system prompt)
    session: str  # the PII session every turn of this conversation shares
    system: list[Message] = []  # a thread's system prompt (continues reuse it)
    tools: list[Tool] | None = None  # a thread's tools (continues reuse them)
    extra: dict[str, Any] = {}  # a thread's create-only fields (e.g. cache_control, thinking)
    items: list[dict[str, Any]] = []  # this turn's input items (GET /v1/responses/{id}/input_items)
    response: dict[str, Any] | None = (
        None  # the Response object as the caller got it (GET /v1/responses/{id})
    )

    def owned_by(self, p: Principal | None) -> bool:
        if p is None:
            return self.tenant is None and self.key_id is None
        return self.tenant == p.tenant and self.key_id == p.key_id


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Stored)


class LocalConversations:
    """In this worker's memory: a bounded map, oldest entries dropped first."""

    name = "local"

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, rid: str) -> Stored | None:
        hit = self.entries.get(rid)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self.entries[rid]
            return None
        return _decoder.decode(hit[1])

    async def put(self, rid: str, stored: Stored) -> None:
        self.entries[rid] = (time.monotonic() + self.ttl_s, _encoder.encode(stored))
        self.entries.move_to_end(rid)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    async def delete(self, rid: str) -> bool:
        return self.entries.pop(rid, None) is not None


class RedisConversations:
    """In Redis, next to the rest of the shared state (same client, same key prefix)."""

    name = "redis"

    def __init__(self, state: Any, ttl_s: float) -> None:
        self.client = state.client
        self.key = lambda rid: state.k("conv:" + rid)
        self.ttl_ms = max(1000, int(ttl_s * 1000))

    async def get(self, rid: str) -> Stored | None:
        try:
            raw = await self.client.get(self.key(rid))
        except Exception as e:
            raise _unavailable(e) from None
        return _decoder.decode(raw) if raw is not None else None

    async def put(self, rid: str, stored: Stored) -> None:
        try:
            await self.client.set(self.key(rid), _encoder.encode(stored), px=self.ttl_ms)
        except Exception as e:
            raise _unavailable(e) from None

    async def delete(self, rid: str) -> bool:
        try:
            return bool(await self.client.delete(self.key(rid)))
        except Exception as e:
            raise _unavailable(e) from None


def _unavailable(e: Exception) -> GatewayError:
    log.error("conversation store unavailable: %s: %s", type(e).__name__, e)
    return GatewayError(
        "state_unavailable",
        "The conversation store (Redis) is unreachable, so stored conversations cannot be read or written now; "
        "retry shortly, or send the whole conversation with store: false.",
    )


def make_store(cfg: Any, state: Any) -> LocalConversations | RedisConversations:
    conv = cfg.conversations
    if cfg.state.redis_url and getattr(state, "client", None) is not None:
        return RedisConversations(state, conv.ttl_s)
    return LocalConversations(conv.ttl_s, conv.max_local)


async def load(store: Any, rid: str, principal: Principal | None, kind: str) -> Stored | None:
    """The stored turn ``rid`` if this caller may see it; None for unknown, expired and foreign ids alike."""
    stored = await store.get(rid)
    if stored is None or stored.kind != kind or not stored.owned_by(principal):
        return None
    return stored
