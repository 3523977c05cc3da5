"""The semantic cache through the real gateway: a paraphrase is served from the cache (as JSON and replayed as a
stream, in both dialects, never reaching the simulator), a negated question, another tenant and another system
prompt are not; a purge and a model-version change turn its hits into misses; entries are shared through Redis by
a second gateway process."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, KEY_B, base_config

ADMIN = "gw-admin-key-for-semantic-cache-tests-000000"
_n = itertools.count()


def sem_config(simulator: Any, db: Any, redis_url: str | None = None, model: str = "sem-m1") -> dict:
    """The shipped calibration (news paraphrases with hard negatives) lets nothing through at these error rates;
    these tests start from evidence of their own, as an operator calibrating on labelled pairs of theirs would:
    1,000 correct neighbours at verifier scores 0.95-1.0 (so the threshold is 0.95)."""
    from gateway.cache.decide import Pooled

    pooled = Pooled()
    for i in range(1000):
        pooled.add(0.95 + (i % 10) / 200, correct=True)
    calibration = db.parent / "calibration.json"
    calibration.write_bytes(pooled.to_json())
    cfg = base_config(simulator.url, db)
    cfg["admin"] = {"key": ADMIN}
    cfg["models"]["sem"] = {
        "deployments": [{"id": "sem-a", "model": model, "api_base": simulator.url + "/v1", "api_key": "k"}]
    }
    cfg["stages"] = {
        "cache": {
            "enabled": True,
            "semantic": {"enabled": True, "explore_rate": 0.0, "calibration": str(calibration)},
        }
    }
    if redis_url:
        cfg["state"] = {"redis_url": redis_url, "key_prefix": f"semtest{next(_n)}"}
    return cfg


@pytest.fixture(scope="module")
def sgw(simulator, start_gateway, tmp_path_factory):
    return start_gateway(sem_config(simulator, tmp_path_factory.mktemp("db") / "s.db"))


def ask(gw: Any, q: str, key: str = KEY_A, system: str | None = None) -> Any:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
    raw = gw.openai(key).chat.completions.with_raw_response.create(model="sem", messages=msgs)
    return raw, raw.parse()


def upstream_count(simulator: Any) -> int:
    return len(simulator.get("/_sim/requests?model=sem-m1&limit=200")["requests"])


def wait_stored() -> None:
    time.sleep(0.3)  # the semantic entry is added after the answer went out


def test_paraphrase_is_served_and_a_negation_is_not(sgw, simulator):
    topic = f"project {next(_n)}"
    q = f"How do I enable dark mode in the settings of {topic}?"
    raw1, first = ask(sgw, q)
    assert raw1.headers["x-gateway-cache"] == "miss"
    wait_stored()
    before = upstream_count(simulator)
    raw2, second = ask(sgw, f"How do I enable the dark mode in the settings of {topic}?")
    assert raw2.headers["x-gateway-cache"] == "semantic-hit"
    assert float(raw2.headers["x-gateway-cache-similarity"]) > 0.9
    assert second.choices[0].message.content == first.choices[0].message.content
    assert upstream_count(simulator) == before
    rec = sgw.record(raw2.headers["x-gateway-request-id"])
    assert rec["cache"] == "semantic-hit" and rec["cost_usd"] == 0 and rec["cache_similarity"] > 0.9

    raw3, _ = ask(sgw, f"How do I not enable dark mode in the settings of {topic}?")
    assert raw3.headers["x-gateway-cache"] == "miss"
    assert sgw.record(raw3.headers["x-gateway-request-id"])["flags"]["cache_veto"] == "negation"
    raw4, _ = ask(sgw, f"How do I disable dark mode in the settings of {topic}?")
    assert raw4.headers["x-gateway-cache"] == "miss"
    assert upstream_count(simulator) == before + 2


def test_a_paraphrase_is_served_in_both_dialects_as_json_and_as_a_stream(sgw, simulator):
    topic = f"project {next(_n)}"
    q = f"How do I rotate the signing keys of {topic}?"
    para = f"How do I rotate the signing keys of {topic} ?"
    _, first = ask(sgw, q)
    text = first.choices[0].message.content
    client = sgw.anthropic()
    a_first = client.messages.create(model="sem", max_tokens=64, messages=[{"role": "user", "content": q}])
    wait_stored()
    before = upstream_count(simulator)
    with sgw.openai().chat.completions.with_streaming_response.create(
        model="sem",
        messages=[{"role": "user", "content": para}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-gateway-cache"] == "semantic-hit"
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    m = client.messages.with_raw_response.create(
        model="sem", max_tokens=64, messages=[{"role": "user", "content": para}]
    )
    assert m.headers["x-gateway-cache"] == "semantic-hit"
    assert m.parse().content[0].text == a_first.content[0].text
    with client.messages.stream(
        model="sem", max_tokens=64, messages=[{"role": "user", "content": para}]
    ) as stream:
        assert "".join(stream.text_stream) == a_first.content[0].text
        assert stream.get_final_message().stop_reason == "end_turn"
    assert upstream_count(simulator) == before  # none of the three reached upstream


def test_a_purge_turns_semantic_hits_into_misses(sgw):
    topic = f"project {next(_n)}"
    ask(sgw, f"How do I enable audit logging in the settings of {topic}?")
    wait_stored()
    para = f"How do I enable the audit logging in the settings of {topic}?"
    assert ask(sgw, para)[0].headers["x-gateway-cache"] == "semantic-hit"
    status, body = call(sgw.url, ADMIN, "POST", "/admin/cache/purge", {"tenant": "tenant-a"})
    assert status == 200 and body["purged"] >= 1
    assert ask(sgw, para)[0].headers["x-gateway-cache"] == "miss"


def test_neighbours_only_within_a_tenant_and_a_context(sgw):
    topic = f"project {next(_n)}"
    ask(sgw, f"What does the retry policy of {topic} do?")
    wait_stored()
    assert (
        ask(sgw, f"What does the retry policy of {topic} do ?", key=KEY_B)[0].headers["x-gateway-cache"]
        == "miss"
    )
    other_system = ask(sgw, f"What does the retry policy of {topic} do ?", system="Answer in one word.")
    assert other_system[0].headers["x-gateway-cache"] == "miss"
    assert (
        ask(sgw, f"What does the retry policy of {topic} do ?")[0].headers["x-gateway-cache"]
        == "semantic-hit"
    )


def test_a_lower_error_bound_asked_per_request_is_honoured(sgw):
    topic = f"project {next(_n)}"
    ask(sgw, f"Explain how the budget stage of {topic} reserves money.")
    wait_stored()
    raw = sgw.openai().chat.completions.with_raw_response.create(
        model="sem",
        messages=[
            {"role": "user", "content": f"Explain how the budget stage of {topic} reserves the money."}
        ],
        extra_headers={"x-gateway-cache-max-error": "0.000001"},  # no evidence can show this: never served
    )
    assert raw.headers["x-gateway-cache"] == "miss"


def test_semantic_entries_shared_through_redis(simulator, start_gateway, tmp_path_factory, redis_url):
    cfg = sem_config(simulator, tmp_path_factory.mktemp("db") / "a.db", redis_url)
    one = start_gateway(cfg)
    two = start_gateway(
        {**cfg, "store": {**cfg["store"], "sqlite_path": str(tmp_path_factory.mktemp("db") / "b.db")}}
    )
    topic = f"project {next(_n)}"
    ask(one, f"Which regions can the deployments of {topic} run in?")
    wait_stored()
    raw, _ = ask(two, f"Which regions can the deployments of {topic} run in ?")
    assert raw.headers["x-gateway-cache"] == "semantic-hit"
    # same Redis, the deployment now serves another model version: the old questions are not neighbours
    newer = sem_config(simulator, tmp_path_factory.mktemp("db") / "c.db", redis_url, model="sem-m2")
    newer["state"] = cfg["state"]
    three = start_gateway(newer)
    raw, _ = ask(three, f"Which regions can the deployments of {topic} run in ?")
    assert raw.headers["x-gateway-cache"] == "miss"
