"""The cache's pure parts: keys, what may be cached, the in-memory store's bounds, guards, thresholds, replay."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.cache import keys
from gateway.cache.decide import (
    EntryEvidence,
    Pooled,
    binom_cdf,
    clopper_pearson,
    min_evidence,
    safe,
    wilson_interval,
    wilson_upper,
)
from gateway.cache.guards import Features, veto
from gateway.cache.replay import Collector, to_chunks
from gateway.cache.store import Entry, LocalStore, PurgeFilter
from gateway.types import ChatRequest, ChatResponse, Choice, Message, Usage

SCOPE = ("tenant-a", "", "gpt", "gpt-4o-2024-08-06")


def req(text: str = "hi", **kw) -> ChatRequest:
    return ChatRequest(model="gpt", messages=[Message(role="user", content=text)], **kw)


def resp(text: str = "hello") -> ChatResponse:
    return ChatResponse(
        id="r1",
        model="m",
        choices=[Choice(index=0, message=Message(role="assistant", content=text), finish_reason="stop")],
        usage=Usage(10, 5),
    )


def test_key_covers_what_changes_the_answer_and_nothing_else():
    base = keys.exact_key(SCOPE, req())
    assert keys.exact_key(SCOPE, req(stream=True, user="u", metadata={"a": 1})) == base
    for other in (
        req("hello"),
        req(temperature=0.2),
        req(max_tokens=5),
        req(response_format={"type": "json_object"}),
    ):
        assert keys.exact_key(SCOPE, other) != base
    for scope in (("tenant-b", *SCOPE[1:]), (SCOPE[0], "ns", *SCOPE[2:]), (*SCOPE[:3], "gpt-4o-2024-11-20")):
        assert keys.exact_key(scope, req()) != base
    a = req(response_format={"type": "json_schema", "json_schema": {"a": 1, "b": 2}})
    b = req(response_format={"json_schema": {"b": 2, "a": 1}, "type": "json_schema"})
    assert keys.exact_key(SCOPE, a) == keys.exact_key(SCOPE, b)  # key order never splits an entry


def test_what_is_never_cached():
    assert keys.bypass_reason(req(n=2), 1.0) == "n>1"
    assert keys.bypass_reason(req(temperature=1.2), 1.0) == "temperature"
    assert keys.bypass_reason(req(temperature=0.7), 1.0) is None
    pending = ChatRequest(
        model="gpt",
        messages=[
            Message(role="user", content="weather?"),
            Message(
                role="assistant", tool_calls=[{"id": "c1", "type": "function", "function": {"name": "w"}}]
            ),
            Message(role="tool", content="sunny", tool_call_id="c1"),
        ],
    )
    assert keys.bypass_reason(pending, 1.0) == "tool_calls_pending"


def test_context_fingerprint_ignores_only_the_final_turn():
    sys1 = ChatRequest(
        model="gpt", messages=[Message(role="system", content="be brief"), Message(role="user", content="a")]
    )
    sys1b = ChatRequest(
        model="gpt", messages=[Message(role="system", content="be brief"), Message(role="user", content="b")]
    )
    sys2 = ChatRequest(
        model="gpt", messages=[Message(role="system", content="be long"), Message(role="user", content="a")]
    )
    assert keys.context_fingerprint(SCOPE, sys1) == keys.context_fingerprint(SCOPE, sys1b)
    assert keys.context_fingerprint(SCOPE, sys1) != keys.context_fingerprint(SCOPE, sys2)
    assert keys.final_user_text(sys1) == "a"


def entry(tenant="t", group="g", tags=(), ns="") -> Entry:
    return Entry(resp(), time.time(), 0.01, tenant, group, ns, list(tags))


def test_local_store_bounds_ttl_and_purge():
    async def run():
        s = LocalStore(max_entries=3, max_bytes=1 << 20, ttl_s=60)
        for i in range(4):
            await s.put(f"k{i}", entry(tenant=f"t{i % 2}", tags=["x"] if i == 3 else []))
        assert await s.get("k0") is None  # evicted: least recently used
        assert (await s.get("k1")).response.choices[0].message.content == "hello"
        await s.put("short", entry(), ttl_s=0.01)
        await asyncio.sleep(0.02)
        assert await s.get("short") is None
        assert len(await s.purge(PurgeFilter(tag="x"))) == 1
        assert sorted(await s.purge(PurgeFilter(tenant="t1"))) == ["k1"]
        tiny = LocalStore(max_entries=100, max_bytes=1024, ttl_s=60)
        for i in range(50):
            await tiny.put(f"k{i}", entry())
        assert tiny.bytes <= 1024

    asyncio.run(run())


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("How do I enable dark mode?", "How do I not enable dark mode?", "negation"),
        ("Is it safe to run the migration?", "Isn't it safe to run the migration?", "negation"),
        ("What was the revenue in 2023?", "What was the revenue in 2024?", "numbers"),
        ("Book a table for Monday", "Book a table for Friday", "numbers"),
        ("What is the capital city of France?", "What is the capital city of Germany?", "names"),
        ("How do I enable dark mode?", "How do I disable dark mode?", "opposite"),
        ("List the planets as JSON", "List the planets as a table", "format"),
        ("What is the weather like today in the city?", "Wie ist das Wetter heute in der Stadt?", "language"),
    ],
)
def test_guards_veto_meaningful_differences(a, b, why):
    assert veto(Features(a), Features(b)) == why


def test_guards_let_paraphrases_through():
    assert veto(Features("How do I turn on dark mode?"), Features("How can I switch dark mode on?")) is None
    assert (
        veto(Features("What is the capital of France?"), Features("Which city is the capital of France?"))
        is None
    )


def test_wilson_bounds():
    assert wilson_upper(0, 0) == 1.0
    assert 0.01 < wilson_upper(0, 200) < 0.02
    lo, hi = wilson_interval(5, 100)
    assert lo < 0.05 < hi


def test_exact_binomial_bounds():
    assert binom_cdf(0, 100, 0.02) == pytest.approx(0.98**100)
    assert binom_cdf(100, 100, 0.3) == pytest.approx(1.0)
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.0362, abs=1e-3)  # the rule of three, exactly
    lo, hi = clopper_pearson(5, 100)
    assert lo == pytest.approx(0.0164, abs=1e-3) and hi == pytest.approx(0.1128, abs=1e-3)
    assert min_evidence(0.01) == 299 and min_evidence(0.05) == 59
    assert safe(0, 299, 0.01) and not safe(0, 298, 0.01) and not safe(3, 299, 0.01)


def test_pooled_threshold_stops_at_the_first_failed_test():
    p = Pooled()
    for _ in range(400):
        p.add(0.99, correct=True)
    for i in range(200):  # a band of wrong answers just below...
        p.add(0.90, correct=i % 2 == 0)
    for _ in range(5000):  # ...and much correct evidence below it, which must not buy the band back
        p.add(0.85, correct=True)
    assert p.threshold(0.02) == pytest.approx(0.99)


def test_pooled_threshold_meets_delta_on_its_own_evidence():
    p = Pooled()
    for i in range(2000):  # error falls with the score: 30% at 0.80 .. 0% from 0.95 up
        s = 0.80 + (i % 200) / 1000
        p.add(s, correct=(i * 7919) % 100 >= max(0, 30 - (s - 0.8) * 200))
    t2, t5 = p.threshold(0.02), p.threshold(0.05)
    assert 0.8 < t5 <= t2 <= 1.0
    assert p.threshold(0.001) > 1  # 2,000 pairs cannot show an error rate below 0.1%: never serve
    assert Pooled().threshold(0.02) > 1  # no evidence: never serve
    high = Pooled()
    for i in range(500):
        high.add(0.95 + (i % 10) / 200, correct=True)
    assert high.threshold(0.05) == pytest.approx(0.95)  # never below the lowest similarity with evidence


def test_an_entry_wrong_at_s_is_never_served_at_or_below_s():
    e = EntryEvidence()
    assert e.serves(0.95, pooled_t=0.9, delta=0.02)
    e.add(0.95, correct=False)
    assert not e.serves(0.95, 0.9, 0.02) and not e.serves(0.93, 0.9, 0.02)
    assert e.serves(0.97, 0.9, 0.02)
    for _ in range(200):
        e.add(0.96, correct=True)
    assert e.serves(
        0.96, pooled_t=0.99, delta=0.02
    )  # its own evidence lets it serve below the pooled threshold


def test_replay_and_collect_round_trip():
    r = resp("x" * 150)
    chunks = to_chunks(r, r.usage)
    assert len(chunks) > 3 and chunks[-1].usage == r.usage
    c = Collector()
    assert all(c.add(ch) for ch in chunks)
    back = c.response()
    assert back.choices[0].message.content == "x" * 150 and back.choices[0].finish_reason == "stop"


def test_static_embedder_vectors_and_word_vectors_agree():
    from gateway.cache.embed import shared

    e = shared()
    enc = e.encode("How do I enable Dark-Mode in the settings?")
    assert enc.vec.shape == (e.dim,) and abs(float(enc.vec @ enc.vec) - 1) < 1e-5
    assert abs(float(enc.vec @ e.embed("How do I enable Dark-Mode in the settings?")) - 1) < 1e-5
    assert "settings" in enc.words and "dark" in enc.words and len(enc.wvecs) == len(enc.words)
    batch = e.embed_many(["a question", "another question"])
    assert batch.shape == (2, e.dim)
    assert float(e.embed("") @ e.embed("")) == 0.0  # nothing to embed: a zero vector, never NaN


def test_verifier_ranks_a_paraphrase_above_a_hard_negative():
    from gateway.cache.semantic import SemanticCache
    from gateway.config import SemanticCacheConfig

    c = SemanticCache(SemanticCacheConfig(enabled=True), None, "t", 60)
    q = c.side("What are the main causes of inflation in an economy?")
    para = c.side("What mainly causes inflation in an economy?")
    other = c.side("What are the main effects of inflation on the savings of retired people?")
    assert c.verifier.score(q, para) > c.verifier.score(q, other)
    assert c.verifier.score(q, q) > 0.9


def test_the_embedder_is_loaded_only_with_the_semantic_cache_on():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gateway.config import parse_config\n"
        "from gateway.stages.cache import CacheStage\n"
        "on = sys.argv[1] == 'on'\n"
        "cfg = parse_config('models: {}\\nstages: {cache: {enabled: true, semantic: {enabled: %s}}}' % ('true' if on else 'false'))\n"
        "CacheStage(cfg.stages.cache, cfg)\n"
        "print('gateway.cache.embed' in sys.modules, 'numpy' in sys.modules)\n"
    )
    for mode, loaded in (("off", ["False", "False"]), ("on", ["True", "True"])):
        run = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        assert run.stdout.split() == loaded
