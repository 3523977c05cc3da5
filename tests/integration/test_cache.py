"""The exact cache through the real gateway (Granian), the simulator and the official SDKs; Redis-shared entries
across two gateway processes. Every test runs twice: with the exact cache alone and with the semantic cache on as
well (its embedding, lookup and store on every miss must change none of the exact cache's behaviour)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, KEY_B, base_config

ADMIN = "gw-admin-key-for-cache-tests-0000000000000"
KEY_FLAG = "gw-test-cache-pii-flag-key-00000000000000"
_n = itertools.count()


def question(word: str = "") -> str:
    """A question no other test asks (so the first ask is always a miss)."""
    return f"What is the boiling point of water{word}? (case {next(_n)})"


def upstream_count(simulator: Any, model: str) -> int:
    return len(simulator.get(f"/_sim/requests?model={model}&limit=200")["requests"])


def cache_config(
    simulator: Any, db: Any, redis_url: str | None = None, model: str = "cache-m1", semantic: bool = False
) -> dict:
    cfg = base_config(simulator.url, db)
    cfg["admin"] = {"key": ADMIN}
    cfg["keys"].append({"key": KEY_FLAG, "name": "flag", "tenant": "tenant-a", "profile": "flagging"})
    cfg["models"]["cached"] = {
        "deployments": [
            {
                "id": "cached-a",
                "model": model,
                "api_base": simulator.url + "/v1",
                "api_key": "k",
                "price": {"input": 1.0, "output": 2.0},
            }
        ]
    }
    cfg["stages"] = {
        "cache": {"enabled": True, "max_temperature": 1.0, "semantic": {"enabled": semantic}},
        "pii": {"enabled": True, "default": "mask"},
        "profiles": {"flagging": {"pii": {"enabled": True, "default": "flag"}}},
    }
    if redis_url:
        cfg["state"] = {"redis_url": redis_url, "key_prefix": f"cachetest{next(_n)}"}
    return cfg


@pytest.fixture(scope="module", params=["exact", "exact+semantic"])
def cgw(request, simulator, start_gateway, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "g.db"
    return start_gateway(cache_config(simulator, db, semantic=request.param != "exact"))


def ask(gw: Any, q: str, key: str = KEY_A, model: str = "cached", **kw: Any) -> Any:
    raw = gw.openai(key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": q}], **kw
    )
    return raw, raw.parse()


def test_repeated_question_is_a_hit_that_never_reaches_upstream(cgw, simulator):
    q = question()
    before = upstream_count(simulator, "cache-m1")
    raw1, first = ask(cgw, q)
    raw2, second = ask(cgw, q)
    assert raw1.headers["x-gateway-cache"] == "miss"
    assert raw2.headers["x-gateway-cache"] == "hit"
    assert upstream_count(simulator, "cache-m1") == before + 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens  # reported as cached
    rec_miss = cgw.record(raw1.headers["x-gateway-request-id"])
    rec_hit = cgw.record(raw2.headers["x-gateway-request-id"])
    assert rec_miss["cache"] == "miss" and rec_miss["cost_usd"] > 0
    assert rec_hit["cache"] == "hit" and rec_hit["cost_usd"] == 0
    assert rec_hit["cache_saved_usd"] == pytest.approx(rec_miss["cost_usd"])


def test_hit_replayed_as_a_stream_in_both_dialects(cgw, simulator):
    q = question()
    _, first = ask(cgw, q)
    text = first.choices[0].message.content
    before = upstream_count(simulator, "cache-m1")
    with cgw.openai().chat.completions.with_streaming_response.create(
        model="cached",
        messages=[{"role": "user", "content": q}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-gateway-cache"] == "hit"
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    # Anthropic: the same question in the other dialect (its own max_tokens, so its own entry)
    client = cgw.anthropic()
    m1 = client.messages.with_raw_response.create(
        model="cached", max_tokens=64, messages=[{"role": "user", "content": q}]
    )
    m2 = client.messages.with_raw_response.create(
        model="cached", max_tokens=64, messages=[{"role": "user", "content": q}]
    )
    assert (m1.headers["x-gateway-cache"], m2.headers["x-gateway-cache"]) == ("miss", "hit")
    assert m2.parse().content[0].text == m1.parse().content[0].text
    assert m2.parse().usage.cache_read_input_tokens == m1.parse().usage.input_tokens
    with client.messages.stream(
        model="cached", max_tokens=64, messages=[{"role": "user", "content": q}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == m1.parse().content[0].text
    assert final.stop_reason == "end_turn"
    assert upstream_count(simulator, "cache-m1") == before + 1  # only the Anthropic miss went upstream


def test_a_streamed_answer_is_stored_and_served_to_a_non_stream_ask(cgw, simulator):
    q = question()
    stream = cgw.openai().chat.completions.create(
        model="cached", messages=[{"role": "user", "content": q}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    raw, second = ask(cgw, q)
    assert raw.headers["x-gateway-cache"] == "hit"
    assert second.choices[0].message.content == text


def test_another_tenant_never_gets_the_answer(cgw):
    q = question()
    ask(cgw, q)
    raw, _ = ask(cgw, q, key=KEY_B)
    assert raw.headers["x-gateway-cache"] == "miss"


def test_what_is_not_cached(cgw, simulator):
    q = question()
    for kw, reason in (
        ({"temperature": 1.5}, "temperature"),
        ({"n": 2}, "n>1"),
        ({"extra_headers": {"x-gateway-cache": "no-store"}}, "no-store"),
    ):
        before = upstream_count(simulator, "cache-m1")
        r1, _ = ask(cgw, q, **kw)
        r2, _ = ask(cgw, q, **kw)
        assert r1.headers["x-gateway-cache"] == r2.headers["x-gateway-cache"] == "bypass"
        assert upstream_count(simulator, "cache-m1") == before + 2
        assert cgw.record(r2.headers["x-gateway-request-id"])["flags"]["cache_bypass"] == reason
    # personal data found and left unmasked (a 'flag' policy): never cached
    pq = question() + " Mail jane.doe@example.com"
    r1, _ = ask(cgw, pq, key=KEY_FLAG)
    r2, _ = ask(cgw, pq, key=KEY_FLAG)
    assert r2.headers["x-gateway-cache"] == "bypass"
    assert cgw.record(r2.headers["x-gateway-request-id"])["flags"]["cache_bypass"] == "pii"


def test_masked_prompts_share_an_entry_and_each_caller_gets_its_own_data(cgw, simulator):
    """Keys and entries hold the masked forms only: a hit is unmasked with the asking caller's values."""
    tail = question()
    r1, a1 = ask(cgw, f"#echo write to jane.doe@example.com {tail}")
    r2, a2 = ask(cgw, f"#echo write to bob.roe@example.org {tail}")
    assert (r1.headers["x-gateway-cache"], r2.headers["x-gateway-cache"]) == ("miss", "hit")
    assert "jane.doe@example.com" in a1.choices[0].message.content
    assert "bob.roe@example.org" in a2.choices[0].message.content
    assert "jane.doe" not in a2.choices[0].message.content


def test_refresh_and_max_age(cgw, simulator):
    q = question()
    ask(cgw, q)
    before = upstream_count(simulator, "cache-m1")
    r, _ = ask(cgw, q, extra_headers={"x-gateway-cache": "refresh"})
    assert r.headers["x-gateway-cache"] == "miss" and upstream_count(simulator, "cache-m1") == before + 1
    r, _ = ask(cgw, q, extra_headers={"x-gateway-cache-max-age": "0"})
    assert r.headers["x-gateway-cache"] == "miss"
    r, _ = ask(cgw, q, extra_headers={"x-gateway-cache-max-age": "3600"})
    assert r.headers["x-gateway-cache"] == "hit"


def test_purge_through_the_admin_api(cgw):
    q1, q2 = question(), question()
    ask(cgw, q1)
    ask(cgw, q2, key=KEY_B)
    ask(cgw, q1, extra_headers={"x-gateway-cache-namespace": "docs"})
    status, body = call(cgw.url, ADMIN, "POST", "/admin/cache/purge", {"namespace": "docs"})
    assert status == 200 and body["purged"] >= 1
    assert (
        ask(cgw, q1, extra_headers={"x-gateway-cache-namespace": "docs"})[0].headers["x-gateway-cache"]
        == "miss"
    )
    assert ask(cgw, q1)[0].headers["x-gateway-cache"] == "hit"  # other namespaces untouched
    status, body = call(cgw.url, ADMIN, "POST", "/admin/cache/purge", {"tenant": "tenant-a"})
    assert status == 200 and body["purged"] >= 1
    assert ask(cgw, q1)[0].headers["x-gateway-cache"] == "miss"
    assert ask(cgw, q2, key=KEY_B)[0].headers["x-gateway-cache"] == "hit"  # another tenant's entries stay
    status, body = call(cgw.url, ADMIN, "POST", "/admin/cache/purge", {"tenant": 7})
    assert status == 400 and body["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("semantic", [False, True])
def test_redis_shared_entries_and_model_version_change(
    simulator, start_gateway, tmp_path_factory, redis_url, semantic
):
    cfg = cache_config(simulator, tmp_path_factory.mktemp("db") / "g.db", redis_url, semantic=semantic)
    one = start_gateway(cfg)
    two = start_gateway(
        {**cfg, "store": {**cfg["store"], "sqlite_path": str(tmp_path_factory.mktemp("db") / "h.db")}}
    )
    q = question()
    assert ask(one, q)[0].headers["x-gateway-cache"] == "miss"
    raw, _ = ask(two, q)  # the store write is off the request path: allow it a moment
    if raw.headers["x-gateway-cache"] != "hit":
        import time

        time.sleep(0.5)
        raw, _ = ask(two, q)
    assert raw.headers["x-gateway-cache"] == "hit"
    # purge by model group on one replica is seen by the other
    ask(one, question())
    status, body = call(one.url, ADMIN, "POST", "/admin/cache/purge", {"model": "cached"})
    assert status == 200 and body["purged"] >= 1
    assert ask(two, q)[0].headers["x-gateway-cache"] == "miss"
    # same Redis, the deployment now serves another model version: the old entries are not served
    import time

    time.sleep(0.5)
    assert ask(two, q)[0].headers["x-gateway-cache"] == "hit"
    newer = cache_config(
        simulator, tmp_path_factory.mktemp("db") / "n.db", redis_url, model="cache-m2", semantic=semantic
    )
    newer["state"] = cfg["state"]
    three = start_gateway(newer)
    assert ask(three, q)[0].headers["x-gateway-cache"] == "miss"
