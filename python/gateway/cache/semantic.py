"""The semantic cache: the final user turn's embedding, searched among the cached questions that share the
request's tenant and context fingerprint (system prompt, earlier turns, tools, output format, model version).

One in-process index per (tenant, fingerprint): a matrix of unit vectors searched exactly by one matrix-vector
product (an index holds at most ``max_entries_per_index`` questions, so this is well under a millisecond and
needs no approximate index). With Redis, each index is also a Redis list that every worker appends its new
questions to and reads the others' from before it searches, so replicas agree on what is cached; the answers
themselves live in the exact store under each question's exact key (so TTLs and purges apply to both).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np

from gateway.cache.decide import EntryEvidence, Pooled
from gateway.cache.guards import Features, veto

log = logging.getLogger("gateway.cache")


class Shared(msgspec.Struct, array_like=True):
    key: str
    text: str
    vector: bytes  # float32[384]


_enc = msgspec.msgpack.Encoder().encode
_dec = msgspec.msgpack.Decoder(Shared).decode


class Index:
    """The questions cached under one (tenant, fingerprint)."""

    __slots__ = ("evidence", "features", "keys", "n", "synced", "vectors")

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.features: list[Features] = []
        self.evidence: list[EntryEvidence] = []
        self.n = 0
        self.synced = 0  # how many items of the Redis list are in here

    def add(self, key: str, text: str, vec: np.ndarray, cap: int) -> None:
        if key in self.keys:
            return
        if self.n >= cap:  # full: the oldest question goes
            self.vectors[: self.n - 1] = self.vectors[1 : self.n]
            del self.keys[0], self.features[0], self.evidence[0]
            self.n -= 1
        if self.n == len(self.vectors):
            grown = np.zeros((len(self.vectors) * 2, self.vectors.shape[1]), dtype=np.float32)
            grown[: self.n] = self.vectors[: self.n]
            self.vectors = grown
        self.vectors[self.n] = vec
        self.keys.append(key)
        self.features.append(Features(text))
        self.evidence.append(EntryEvidence())
        self.n += 1

    def nearest(self, vec: np.ndarray) -> tuple[int, float]:
        if self.n == 0:
            return -1, 0.0
        sims = self.vectors[: self.n] @ vec
        i = int(np.argmax(sims))
        return i, float(sims[i])

    def drop(self, i: int) -> None:
        self.vectors[i : self.n - 1] = self.vectors[i + 1 : self.n]
        del self.keys[i], self.features[i], self.evidence[i]
        self.n -= 1


class Candidate(msgspec.Struct):
    """A neighbour found for a request, and what was decided about it."""

    index: Any
    i: int
    key: str
    similarity: float
    serve: bool
    veto: str | None = None


class SemanticCache:
    def __init__(self, cfg: Any, redis: Any, prefix: str, ttl_s: float) -> None:
        from gateway.cache import embed

        self.cfg = cfg
        self.embedder = embed.shared()  # loads the model now, at worker start, not on the first request
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cache-embed")
        self.indexes: dict[tuple[str, str], Index] = {}
        self.pooled = Pooled.shipped(cfg.calibration)
        self.redis = redis
        self.p = f"{prefix}:cache:s"
        self.ttl_ms = int(ttl_s * 1000)
        self.rng = np.random.default_rng()

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.embedder.embed, text)

    def _index(self, tenant: str, fp: str) -> Index:
        idx = self.indexes.get((tenant, fp))
        if idx is None:
            idx = self.indexes[(tenant, fp)] = Index(self.embedder.hidden)
        return idx

    async def _sync(self, tenant: str, fp: str, idx: Index) -> None:
        if self.redis is None:
            return
        try:
            items = await self.redis.lrange(f"{self.p}:{tenant}:{fp}", idx.synced, -1)
        except Exception:
            return
        cap = self.cfg.max_entries_per_index
        for raw in items:
            it = _dec(raw)
            idx.add(it.key, it.text, np.frombuffer(it.vector, dtype=np.float32), cap)
        idx.synced += len(items)

    async def lookup(
        self, tenant: str, fp: str, text: str, vec: np.ndarray, delta: float
    ) -> Candidate | None:
        idx = self._index(tenant, fp)
        await self._sync(tenant, fp, idx)
        i, s = idx.nearest(vec)
        if i < 0 or s < self.cfg.min_similarity:
            return None
        c = Candidate(idx, i, idx.keys[i], s, False)
        c.veto = veto(idx.features[i], Features(text))
        if c.veto is None:
            c.serve = idx.evidence[i].serves(s, self.pooled.threshold(delta), delta)
            if c.serve and self.cfg.explore_rate and self.rng.random() < self.cfg.explore_rate:
                c.serve = False  # verified against upstream instead, so the thresholds keep learning
        return c

    def learn(self, c: Candidate, correct: bool) -> None:
        idx: Index = c.index
        if c.i < idx.n and idx.keys[c.i] == c.key:
            idx.evidence[c.i].add(c.similarity, correct)
        self.pooled.add(c.similarity, correct)

    def forget(self, c: Candidate) -> None:
        idx: Index = c.index
        if c.i < idx.n and idx.keys[c.i] == c.key:
            idx.drop(c.i)

    async def add(self, tenant: str, fp: str, key: str, text: str, vec: np.ndarray) -> None:
        idx = self._index(tenant, fp)
        idx.add(key, text, vec, self.cfg.max_entries_per_index)
        if self.redis is None:
            return
        name = f"{self.p}:{tenant}:{fp}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(name, _enc(Shared(key, text, vec.astype(np.float32).tobytes())))
                pipe.pexpire(name, self.ttl_ms)
                await pipe.execute()
        except Exception as e:
            log.debug("cache: semantic entry not shared: %s", e)

    async def same_answer(self, a: str, b: str) -> bool:
        """Whether two answers say the same thing: equal text, or embeddings at cosine ≥ 0.95."""
        if a.strip() == b.strip():
            return True
        if not a or not b:
            return False
        loop = asyncio.get_running_loop()
        va, vb = await loop.run_in_executor(self.pool, self.embedder.embed_many, [a, b])
        return float(va @ vb) >= 0.95
