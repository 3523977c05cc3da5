"""Where cached answers live: each worker's memory (LRU with entry, byte and age bounds) or Redis (shared by
every worker and replica, expiring by TTL). Both have the same four calls: get, put, purge, stats.

An entry carries its tenant, model group, tags and namespace so an admin can purge by any of them. In Redis each
of those has an index set of entry keys; a purge deletes the intersection of the sets it names. A Redis that does
not answer costs a request a miss (never an error): the cache is an optimisation, not a dependency.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import msgspec

from gateway.types import ChatResponse

log = logging.getLogger("gateway.cache")


class Entry(msgspec.Struct, array_like=True):
    """One cached answer (the response as the upstream gave it, PII still masked when the prompt was)."""

    response: ChatResponse
    created: float
    cost_usd: float  # what the original call cost: what every hit saves
    tenant: str
    group: str
    namespace: str = ""
    tags: list[str] = []
    deployment: str | None = None
    provider: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


class PurgeFilter(msgspec.Struct, forbid_unknown_fields=True):
    """Which entries a purge removes: those matching every field given (none given: all of them)."""

    tenant: str | None = None
    model: str | None = None  # model group
    tag: str | None = None
    namespace: str | None = None

    def matches(self, e: Entry) -> bool:
        return (
            (self.tenant is None or e.tenant == self.tenant)
            and (self.model is None or e.group == self.model)
            and (self.tag is None or self.tag in e.tags)
            and (self.namespace is None or e.namespace == self.namespace)
        )


class LocalStore:
    """In-process LRU. Per worker: without Redis, each worker of a gateway has its own entries."""

    shared = False

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (blob, expires)
        self.meta: dict[str, Entry] = {}  # key -> entry without decoding on purge
        self.bytes = 0

    async def get(self, key: str) -> Entry | None:
        item = self.items.get(key)
        if item is None:
            return None
        blob, expires = item
        if expires < time.time():
            self._drop(key)
            return None
        self.items.move_to_end(key)
        return _decode(blob)

    async def put(self, key: str, entry: Entry, ttl_s: float | None = None) -> None:
        blob = _encode(entry)
        if len(blob) > self.max_bytes:
            return
        if key in self.items:
            self._drop(key)
        self.items[key] = (blob, time.time() + (ttl_s or self.ttl_s))
        self.meta[key] = entry
        self.bytes += len(blob)
        while len(self.items) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self.items)))

    def _drop(self, key: str) -> None:
        blob, _ = self.items.pop(key)
        self.meta.pop(key, None)
        self.bytes -= len(blob)

    async def purge(self, f: PurgeFilter) -> list[str]:
        gone = [k for k, e in self.meta.items() if f.matches(e)]
        for k in gone:
            self._drop(k)
        return gone

    async def stats(self) -> dict[str, Any]:
        return {"backend": "memory", "entries": len(self.items), "bytes": self.bytes}

    async def close(self) -> None:
        return None


class RedisStore:
    """Entries in Redis under ``{prefix}:cache:e:{key}`` with index sets ``{prefix}:cache:i:{field}:{value}``."""

    shared = True

    def __init__(self, url: str, prefix: str, ttl_s: float, timeout_s: float) -> None:
        import redis.asyncio as aioredis

        self.client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.p = f"{prefix}:cache"
        self.ttl_ms = int(ttl_s * 1000)
        self._warned = 0.0

    def _trouble(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 30:
            self._warned = now
            log.warning("cache: Redis unavailable (%s); answering without the cache", type(e).__name__)

    def _indexes(self, e: Entry) -> list[str]:
        out = [f"{self.p}:i:tenant:{e.tenant}", f"{self.p}:i:model:{e.group}", f"{self.p}:i:ns:{e.namespace}"]
        out += [f"{self.p}:i:tag:{t}" for t in e.tags]
        return out

    async def get(self, key: str) -> Entry | None:
        try:
            blob = await self.client.get(f"{self.p}:e:{key}")
        except Exception as e:
            self._trouble(e)
            return None
        return _decode(blob) if blob else None

    async def put(self, key: str, entry: Entry, ttl_s: float | None = None) -> None:
        ttl_ms = int(ttl_s * 1000) if ttl_s else self.ttl_ms
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(f"{self.p}:e:{key}", _encode(entry), px=ttl_ms)
                for idx in self._indexes(entry):
                    pipe.sadd(idx, key)
                    pipe.pexpire(idx, ttl_ms, gt=True)
                    pipe.pexpire(idx, ttl_ms, nx=True)
                await pipe.execute()
        except Exception as e:
            self._trouble(e)

    async def purge(self, f: PurgeFilter) -> list[str]:
        sets = []
        if f.tenant is not None:
            sets.append(f"{self.p}:i:tenant:{f.tenant}")
        if f.model is not None:
            sets.append(f"{self.p}:i:model:{f.model}")
        if f.tag is not None:
            sets.append(f"{self.p}:i:tag:{f.tag}")
        if f.namespace is not None:
            sets.append(f"{self.p}:i:ns:{f.namespace}")
        if sets:
            members = await self.client.sinter(sets)
            keys = [m.decode() for m in members]
        else:
            keys = [
                k.decode().rsplit(":", 1)[1] async for k in self.client.scan_iter(f"{self.p}:e:*", count=1000)
            ]
        for i in range(0, len(keys), 500):
            batch = keys[i : i + 500]
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(*[f"{self.p}:e:{k}" for k in batch])
                for s in sets:
                    pipe.srem(s, *batch)
                await pipe.execute()
        return keys

    async def stats(self) -> dict[str, Any]:
        n = 0
        async for _ in self.client.scan_iter(f"{self.p}:e:*", count=1000):
            n += 1
        return {"backend": "redis", "entries": n}

    async def close(self) -> None:
        await self.client.aclose()
