"""Micro-benchmarks of the answers cache: the exact key and in-memory lookup, and the semantic lookup with the
embedding of the final user turn.

Run:  .venv/bin/pytest benches/test_bench_cache.py --benchmark-enable --benchmark-group-by=group \
          --benchmark-columns=min,median,mean,ops,rounds

Groups:
- cache-exact: the canonical key of a 3-message request, and a hit in the in-memory store (decode included).
- cache-semantic: embedding a 100-token user turn (the static table distilled from all-MiniLM-L6-v2), and the
  whole semantic lookup for it: embedding and word vectors + exact nearest neighbours among 1,000 cached
  questions + guards + verifier + decision (``SemanticCache.lookup`` itself).
- cache-embed-batch: 32 short sentences embedded (throughput = 32 x ops).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.cache import keys
from gateway.cache.store import Entry, LocalStore
from gateway.types import ChatRequest, ChatResponse, Choice, Message, Usage

TURN = (
    "I am migrating our billing service from a monolith to separate services and want the invoices to stay "
    "correct during the switch. The old system writes invoices nightly, the new one writes them as payments "
    "arrive. How should I run both side by side for a month, compare their results, and decide when it is safe "
    "to turn the old one off without losing or doubling any invoice, and who on the finance team should sign off on it before we do?"
)
SCOPE = ("tenant", "", "gpt", "gpt-4o")
REQ = ChatRequest(
    model="gpt",
    messages=[
        Message(role="system", content="You are a careful assistant."),
        Message(role="user", content="Hello"),
        Message(role="user", content=TURN),
    ],
    max_tokens=256,
    temperature=0.2,
)


@pytest.fixture(scope="module")
def embedder():
    from gateway.cache.embed import shared

    e = shared()
    n = len(e.tokens(TURN)) + 2  # as the transformer counted it, with [CLS] and [SEP]
    assert 95 <= n <= 110, n  # the turn is ~100 tokens
    return e


@pytest.mark.benchmark(group="cache-exact")
def test_exact_key(benchmark):
    benchmark(keys.exact_key, SCOPE, REQ)


@pytest.mark.benchmark(group="cache-exact")
def test_exact_hit_in_memory(benchmark):
    store = LocalStore(10_000, 64 << 20, 3600)
    resp = ChatResponse(
        id="x",
        model="m",
        choices=[
            Choice(index=0, message=Message(role="assistant", content="ok " * 100), finish_reason="stop")
        ],
        usage=Usage(120, 100),
    )
    loop = asyncio.new_event_loop()
    key = keys.exact_key(SCOPE, REQ)
    loop.run_until_complete(store.put(key, Entry(resp, time.time(), 0.001, "tenant", "gpt")))

    def hit():
        coro = store.get(keys.exact_key(SCOPE, REQ))
        try:
            coro.send(None)
        except StopIteration as done:  # the in-memory store never awaits: drive it without a loop
            return done.value

    assert hit() is not None
    benchmark(hit)
    loop.close()


@pytest.mark.benchmark(group="cache-semantic")
def test_embed_100_token_turn(benchmark, embedder):
    benchmark(embedder.embed, TURN)


@pytest.mark.benchmark(group="cache-semantic")
def test_semantic_lookup_with_embedding(benchmark, embedder):
    import numpy as np

    from gateway.cache.semantic import SemanticCache
    from gateway.config import SemanticCacheConfig

    cache = SemanticCache(SemanticCacheConfig(enabled=True, explore_rate=0.0), None, "bench", 3600)
    words = TURN.split()
    rng = np.random.default_rng(0)
    for i in range(1000):  # questions near the turn (shuffled spans of its words), so candidates are scored
        q = " ".join(rng.choice(words, size=40))
        cache.add_now("t", "fp", f"k{i}", cache.side(q))

    def lookup():
        coro = cache.lookup("t", "fp", cache.side(TURN), 0.02)
        try:
            coro.send(None)
        except StopIteration as done:  # without Redis the lookup never awaits: drive it without a loop
            return done.value
        raise AssertionError("lookup awaited")

    assert lookup() is not None
    benchmark(lookup)


@pytest.mark.benchmark(group="cache-embed-batch")
def test_embed_batch_of_32_sentences(benchmark, embedder):
    texts = [f"How do I configure feature number {i} of the gateway for my team?" for i in range(32)]
    benchmark(embedder.embed_many, texts)
