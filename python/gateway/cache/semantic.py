"""The semantic cache: the final user turn's embedding, searched among the cached questions that share the
request's tenant and context fingerprint (system prompt, earlier turns, tools, output format, model version).

One in-process index per (tenant, fingerprint): a matrix of unit vectors searched exactly by one matrix-vector
product (an index holds at most ``max_entries_per_index`` questions, so this is well under a millisecond and
needs no approximate index). The ``K`` nearest questions at cosine ≥ ``min_similarity`` that the guards do not
veto are scored by the verifier (``gateway.cache.verify``); the best one is served when its score reaches the
threshold learned for the caller's δ (``gateway.cache.decide``). With Redis, each index is also a Redis list that every worker appends its new
questions to and reads the others' from before it searches, so replicas agree on what is cached; the answers
themselves live in the exact store under each question's exact key (so TTLs and purges apply to both).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import numpy as np

from gateway.cache.decide import EntryEvidence, Pooled
from gateway.cache.embed import StaticEmbedder
from gateway.cache.guards import Features, veto
from gateway.cache.verify import Side, Verifier

log = logging.getLogger("gateway.cache")

K = 3  # nearest questions scored by the verifier
MIN_SIM = 0.5  # default cosine floor below which a question is not a candidate (config: min_similarity)


class Shared(msgspec.Struct, array_like=True):
    key: str
    text: str
    vector: bytes  # float32[DIM]


_enc = msgspec.msgpack.Encoder().encode
_dec = msgspec.msgpack.Decoder(Shared).decode


class Index:
    """The questions cached under one (tenant, fingerprint)."""

    __slots__ = ("evidence", "keys", "n", "sides", "synced", "vectors")

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.sides: list[Side] = []
        self.evidence: list[EntryEvidence] = []
        self.n = 0
        self.synced = 0  # how many items of the Redis list are in here

    def add(self, key: str, side: Side, cap: int) -> None:
        if key in self.keys:
            return
        if self.n >= cap:  # full: the oldest question goes
            self.vectors[: self.n - 1] = self.vectors[1 : self.n]
            del self.keys[0], self.sides[0], self.evidence[0]
            self.n -= 1
        if self.n == len(self.vectors):
            grown = np.zeros((len(self.vectors) * 2, self.vectors.shape[1]), dtype=np.float32)
            grown[: self.n] = self.vectors[: self.n]
            self.vectors = grown
        self.vectors[self.n] = side.vec
        self.keys.append(key)
        self.sides.append(side)
        self.evidence.append(EntryEvidence())
        self.n += 1

    def nearest(self, vec: np.ndarray, k: int, floor: float) -> list[tuple[int, float]]:
        """The ``k`` most similar questions at cosine ≥ ``floor``, most similar first."""
        if self.n == 0:
            return []
        sims = self.vectors[: self.n] @ vec
        top = np.argpartition(-sims, k - 1)[:k] if self.n > k else np.arange(self.n)
        out = [(int(i), float(sims[i])) for i in top if sims[i] >= floor]
        out.sort(key=lambda x: -x[1])
        return out

    def drop(self, i: int) -> None:
        self.vectors[i : self.n - 1] = self.vectors[i + 1 : self.n]
        del self.keys[i], self.sides[i], self.evidence[i]
        self.n -= 1


class Candidate(msgspec.Struct):
    """A neighbour found for a request, and what was decided about it."""

    index: Any
    i: int
    key: str
    similarity: float  # cosine
    score: float  # the verifier's
    serve: bool
    veto: str | None = None  # this candidate was vetoed by a guard (and is returned only to say why)
    vetoed: str | None = None  # a nearer candidate was vetoed, for this reason


class SemanticCache:
    def __init__(self, cfg: Any, redis: Any, prefix: str, ttl_s: float) -> None:
        from gateway.cache import embed

        self.cfg = cfg
        self.embedder: StaticEmbedder = (
            embed.shared()
        )  # loaded now, at worker start, not on the first request
        self.verifier = Verifier.shipped()
        self.indexes: dict[tuple[str, str], Index] = {}
        self.pooled = Pooled.shipped(cfg.calibration)
        self.redis = redis
        self.p = f"{prefix}:cache:s"
        self.ttl_ms = int(ttl_s * 1000)
        self.rng = np.random.default_rng()

    def side(self, text: str) -> Side:
        """The text's embedding and what the guards and the verifier compare (tens of microseconds: inline)."""
        return Side(self.embedder.encode(text), Features(text))

    def _index(self, tenant: str, fp: str) -> Index:
        idx = self.indexes.get((tenant, fp))
        if idx is None:
            idx = self.indexes[(tenant, fp)] = Index(self.embedder.dim)
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
            side = self.side(it.text)  # the same table everywhere: the same vector as the one shared
            idx.add(it.key, side, cap)
        idx.synced += len(items)

    async def lookup(self, tenant: str, fp: str, side: Side, delta: float) -> Candidate | None:
        """The best candidate for the request (vetoed only if every candidate was), and whether to serve it."""
        idx = self._index(tenant, fp)
        await self._sync(tenant, fp, idx)
        best: Candidate | None = None
        vetoed: Candidate | None = None
        for i, s in idx.nearest(side.vec, K, self.cfg.min_similarity):
            why = veto(idx.sides[i].features, side.features)
            if why is not None:
                vetoed = vetoed or Candidate(idx, i, idx.keys[i], s, 0.0, False, why)
                continue
            score = self.verifier.score(idx.sides[i], side)
            if best is None or score > best.score:
                best = Candidate(idx, i, idx.keys[i], s, score, False)
        if best is None:
            return vetoed
        best.vetoed = vetoed.veto if vetoed else None
        best.serve = idx.evidence[best.i].serves(best.score, self.pooled.threshold(delta), delta)
        if best.serve and self.cfg.explore_rate and self.rng.random() < self.cfg.explore_rate:
            best.serve = False  # verified against upstream instead, so the thresholds keep learning
        return best

    def learn(self, c: Candidate, correct: bool) -> None:
        idx: Index = c.index
        if c.i < idx.n and idx.keys[c.i] == c.key:
            idx.evidence[c.i].add(c.score, correct)
        self.pooled.add(c.score, correct)

    def forget(self, c: Candidate) -> None:
        idx: Index = c.index
        if c.i < idx.n and idx.keys[c.i] == c.key:
            idx.drop(c.i)

    def add_now(self, tenant: str, fp: str, key: str, side: Side) -> None:
        """Into this worker's index only."""
        self._index(tenant, fp).add(key, side, self.cfg.max_entries_per_index)

    async def add(self, tenant: str, fp: str, key: str, text: str, side: Side) -> None:
        """Into this worker's index, and shared with the others through Redis."""
        self.add_now(tenant, fp, key, side)
        vec = side.vec
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

    def same_answer(self, a: str, b: str) -> bool:
        """Whether two answers say the same thing: equal text, or the verifier finds them equivalent (score ≥ 0.9)
        with cosine ≥ 0.95."""
        if a.strip() == b.strip():
            return True
        if not a or not b:
            return False
        sa, sb = self.side(a), self.side(b)
        if veto(sa.features, sb.features) is not None or float(sa.vec @ sb.vec) < 0.95:
            return False
        return self.verifier.score(sa, sb) >= 0.9
