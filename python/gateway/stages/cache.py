"""The cache stage: a thin hook that answers repeated questions from ``gateway.cache``.

``pre`` looks the request up and, on a hit, answers with a short-circuit (the router is never called; the answer
goes back in the caller's dialect, as JSON or replayed as a stream). On a miss, ``post`` / ``on_chunk`` keep a
copy of the answer and ``finish`` stores it once the request ended well and its cost is known.

Placed after the PII stage: keys are computed over masked prompts and answers are stored masked, so two prompts
that differ only in their personal data share an entry and each caller gets its own values back (the PII stage
unmasks the cached answer like a live one). Prompts with personal data that was found but *not* masked are never
cached.

With ``semantic.enabled``, an exact miss is looked up among the cached questions with the same context by the
embedding of its final user turn (gateway/cache/semantic.py); a neighbour is served only when the guards find no
meaningful difference and the learned threshold for the caller's maximum error rate allows it
(``x-gateway-cache-max-error: 0.01`` lowers the configured rate for one request).

Request headers: ``x-gateway-cache: no-store`` (neither served nor stored), ``refresh`` (not served; the fresh
answer is stored), ``x-gateway-cache-max-age: S`` (serve only entries younger than S seconds),
``x-gateway-cache-namespace: N`` (a separate key space, purgeable on its own). Response: ``x-gateway-cache:
hit | semantic-hit | miss | bypass | off``, ``x-gateway-cache-age`` on a hit and
``x-gateway-cache-similarity`` on a semantic hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from gateway.cache import keys
from gateway.cache.replay import Collector
from gateway.cache.store import Entry, LocalStore, PurgeFilter, RedisStore
from gateway.config import CacheConfig, Config
from gateway.context import RequestContext
from gateway.pipeline import Stage
from gateway.stages.pii import masked_types
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Usage

KEY = "cache_key"  # ctx.scratch: the exact key of a request that may be stored
PENDING = "cache_pending"  # ctx.scratch: a copy of the answer to store when the request finishes
COLLECT = "cache_collect"  # ctx.scratch: a stream being collected
ENTRY = "cache_entry"  # ctx.scratch: the entry a hit was served from
SEM = "cache_semantic"  # ctx.scratch: (fingerprint, text, vector, candidate) of a semantic miss
_copy_enc = msgspec.msgpack.Encoder()
_copy_dec = msgspec.msgpack.Decoder(ChatResponse)


def _header(ctx: RequestContext, name: str) -> str | None:
    h = ctx.headers
    return h.get(name) if h is not None else None


def _pii_unmasked(ctx: RequestContext) -> bool:
    """Personal data was found in the prompt and some of it was left as it is (flagged, not masked)."""
    found = ctx.flags.get("pii")
    if not found:
        return False
    masked = masked_types(ctx)
    return any(t not in masked for t in found)


def cached_usage(u: Usage) -> Usage:
    """A hit reads its whole prompt from the cache: reported as cached tokens (and billed as nothing)."""
    return Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens, cached_tokens=u.input_tokens)


class CacheStage(Stage):
    name = "cache"

    def __init__(self, cfg: CacheConfig, root: Config) -> None:
        self.cfg = cfg
        self.versions = keys.model_versions(root)
        st = root.state
        self.store: LocalStore | RedisStore = (
            RedisStore(st.redis_url, st.key_prefix, cfg.ttl_s, max(st.socket_timeout_s, 0.05))
            if st.redis_url
            else LocalStore(cfg.max_entries, cfg.max_bytes, cfg.ttl_s)
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.semantic: Any = None
        if cfg.semantic.enabled:
            from gateway.cache.semantic import SemanticCache

            redis = self.store.client if isinstance(self.store, RedisStore) else None
            self.semantic = SemanticCache(cfg.semantic, redis, st.key_prefix, cfg.ttl_s)

    def scope(self, ctx: RequestContext, group: str) -> tuple[str, str, str, str]:
        p = ctx.principal
        tenant = p.tenant if p else ""
        namespace = _header(ctx, "x-gateway-cache-namespace") or ""
        return (tenant, namespace, group, keys.version_for(self.versions, group, p.pins if p else ()))

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        mode = (_header(ctx, "x-gateway-cache") or "").strip().lower()
        reason = "no-store" if mode in ("no-store", "off", "bypass") else None
        reason = reason or keys.bypass_reason(req, self.cfg.max_temperature)
        if reason is None and _pii_unmasked(ctx):
            reason = "pii"
        if reason is not None:
            ctx.cache = "bypass"
            ctx.flags["cache_bypass"] = reason
            return None
        scope = self.scope(ctx, ctx.group or req.model)
        key = ctx.scratch[KEY] = keys.exact_key(scope, req)
        ctx.cache = "miss"
        refresh = mode == "refresh"
        if refresh:
            ctx.flags["cache_refresh"] = True
        else:
            entry = await self.store.get(key)
            if entry is not None and self._fresh(ctx, entry):
                return self.serve(ctx, entry, time.time() - entry.created)
        if self.semantic is not None:
            return await self.semantic_lookup(ctx, req, scope, refresh)
        return None

    def _fresh(self, ctx: RequestContext, entry: Entry) -> bool:
        max_age = _header(ctx, "x-gateway-cache-max-age")
        if max_age is None:
            return True
        try:
            return time.time() - entry.created <= float(max_age)
        except ValueError:
            return True

    async def semantic_lookup(
        self, ctx: RequestContext, req: ChatRequest, scope: tuple[str, str, str, str], refresh: bool
    ) -> ChatResponse | None:
        text = keys.final_user_text(req)
        if not text:
            return None
        fp = keys.context_fingerprint(scope, req)
        side = self.semantic.side(text)
        cand = None
        if not refresh:
            delta = self.cfg.semantic.max_error_rate
            asked = _header(ctx, "x-gateway-cache-max-error")
            if asked:
                with contextlib.suppress(ValueError):
                    delta = min(delta, max(1e-6, float(asked)))
            cand = await self.semantic.lookup(scope[0], fp, side, delta)
        ctx.scratch[SEM] = (fp, text, side, cand)
        if cand is None:
            return None
        ctx.cache_similarity = cand.similarity
        if cand.veto or cand.vetoed:
            ctx.flags["cache_veto"] = cand.veto or cand.vetoed
        if not cand.serve:
            return None
        entry = await self.store.get(cand.key)
        if entry is None:  # expired or purged: the question goes too
            self.semantic.forget(cand)
            ctx.scratch[SEM] = (fp, text, side, None)
        elif self._fresh(ctx, entry):
            return self.serve(ctx, entry, time.time() - entry.created, cand.similarity)
        return None

    def serve(
        self, ctx: RequestContext, entry: Entry, age: float, similarity: float | None = None
    ) -> ChatResponse:
        """A hit: the stored answer, returned as the pre hook's short-circuit."""
        resp = entry.response
        resp.usage = cached_usage(resp.usage)
        resp.raw = None
        ctx.usage = resp.usage
        ctx.cost = 0.0
        ctx.cache = "hit" if similarity is None else "semantic-hit"
        ctx.cache_saved_usd = entry.cost_usd
        ctx.cache_similarity = similarity
        ctx.upstream_model = resp.model
        ctx.response_headers["x-gateway-cache-age"] = f"{age:.0f}"
        if similarity is not None:
            ctx.response_headers["x-gateway-cache-similarity"] = f"{similarity:.4f}"
        ctx.scratch[ENTRY] = entry
        return resp

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        if ctx.cache == "miss" and KEY in ctx.scratch and _storable(resp):
            # a copy now: later post hooks (PII unmasking) change the response in place
            ctx.scratch[PENDING] = _copy_dec.decode(_copy_enc.encode(resp))
        return resp

    def on_chunk(self, ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
        if ctx.cache == "miss" and KEY in ctx.scratch:
            col = ctx.scratch.get(COLLECT)
            if col is None:
                col = ctx.scratch[COLLECT] = Collector()
            if not col.add(chunk):
                del ctx.scratch[KEY]  # tool calls or reasoning: not kept
        return chunk

    async def finish(self, ctx: RequestContext) -> None:
        key = ctx.scratch.get(KEY)
        if key is None or ctx.cache != "miss" or ctx.error is not None or ctx.status != 200:
            return
        resp = ctx.scratch.get(PENDING)
        if resp is None and COLLECT in ctx.scratch:
            resp = ctx.scratch[COLLECT].response()
            if resp is not None:
                resp.usage = ctx.usage
                if not _storable(resp):
                    resp = None
        if resp is None:
            return
        p = ctx.principal
        entry = Entry(
            response=resp,
            created=time.time(),
            cost_usd=ctx.cost,
            tenant=p.tenant if p else "",
            group=ctx.group or ctx.model or "",
            namespace=_header(ctx, "x-gateway-cache-namespace") or "",
            tags=ctx.tags or [],
            deployment=ctx.deployment,
            provider=ctx.provider,
        )
        sem = ctx.scratch.get(SEM)
        if (
            self.store.shared or sem is not None
        ):  # the caller has its answer already: the rest goes on without it
            task = asyncio.ensure_future(self._keep(key, entry, sem, p.tenant if p else ""))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self.store.put(key, entry)

    async def _keep(self, key: str, entry: Entry, sem: Any, tenant: str) -> None:
        await self.store.put(key, entry)
        if sem is None:
            return
        fp, text, side, cand = sem
        await self.semantic.add(tenant, fp, key, text, side)
        if cand is not None and cand.veto is None:
            # a miss that had a neighbour: was the neighbour's answer this answer? (evidence for the thresholds)
            other = await self.store.get(cand.key)
            if other is not None:
                same = self.semantic.same_answer(_text(other.response), _text(entry.response))
                self.semantic.learn(cand, same)

    async def purge(self, f: PurgeFilter) -> int:
        return len(await self.store.purge(f))


def _text(resp: ChatResponse) -> str:
    c = resp.choices[0].message.content if resp.choices else None
    return c if isinstance(c, str) else ""


def _storable(resp: ChatResponse) -> bool:
    """Finished answers only: no tool calls to run, not cut by a content filter."""
    for c in resp.choices:
        if c.finish_reason not in ("stop", "length", "end_turn", None) or c.message.tool_calls:
            return False
    return bool(resp.choices)
