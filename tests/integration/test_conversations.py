"""Server-held conversations shared by two gateway processes through a real Redis: a Responses chain and an
Anthropic thread started on one replica continue on the other; PII placeholders stay the same across turns; the
store's TTL and per-worker bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
import redis

from gateway.conversations import LocalConversations, RedisConversations, Stored
from gateway.types import Message
from tests.conftest import KEY_A, KEY_B, base_config

EMAIL, OTHER = "jane.doe@example.com", "bob@example.org"


def _config(sim_url: str, db: Any, redis_url: str) -> dict[str, Any]:
    cfg = base_config(sim_url, db)
    cfg["state"] = {"redis_url": redis_url, "key_prefix": "conv-test"}
    cfg["stages"] = {"pii": {"enabled": True, "default": "mask"}}
    v1 = sim_url + "/v1"
    cfg["models"]["conv-echo"] = {
        "deployments": [{"id": "conv-echo", "model": "conv-echo", "api_base": v1, "api_key": "k"}]
    }
    cfg["models"]["conv-anthropic"] = {
        "deployments": [
            {
                "id": "conv-an",
                "provider": "anthropic",
                "model": "conv-an",
                "api_base": sim_url,
                "api_key": "k",
            }
        ]
    }
    return cfg


@pytest.fixture(scope="module")
def pair(simulator, start_gateway, redis_url, tmp_path_factory):
    redis.Redis.from_url(redis_url).flushall()
    d = tmp_path_factory.mktemp("conv")
    return [start_gateway(_config(simulator.url, d / f"g{i}.db", redis_url)) for i in range(2)]


def upstream_messages(simulator: Any, model: str) -> str:
    return json.dumps(simulator.get(f"/_sim/last?model={model}")["body"]["messages"])


def test_a_chain_continues_on_another_replica_with_stable_placeholders(pair, simulator):
    one, two = pair[0].openai(), pair[1].openai()
    first = one.responses.create(model="conv-echo", input=f"#echo my mail is {EMAIL}")
    assert EMAIL in first.output_text  # unmasked for the caller
    second = two.responses.create(
        model="conv-echo", input=f"#echo also {OTHER} and {EMAIL}", previous_response_id=first.id
    )
    seen = upstream_messages(simulator, "conv-echo")
    assert EMAIL not in seen and OTHER not in seen
    # turn 1's value keeps its placeholder in the history and in the new turn; the new value gets the next one
    assert seen.count("<EMAIL_ADDRESS_1>") >= 3 and "also <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1>" in seen
    assert f"also {OTHER} and {EMAIL}" in second.output_text
    assert two.responses.retrieve(first.id).id == first.id
    one.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(second.id)


def test_a_thread_continues_on_another_replica(pair):
    a1, a2 = pair[0].anthropic(), pair[1].anthropic()
    first = a1.beta.messages.create(
        model="conv-anthropic",
        max_tokens=32,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello."}],
        extra_body={"thread": {"type": "create"}},
    )
    second = a2.beta.messages.with_raw_response.create(
        model="conv-anthropic",
        max_tokens=32,
        messages=[{"role": "user", "content": "Again."}],
        extra_body={"thread": {"type": "continue", "previous_message_id": first.id}},
    )
    assert second.parse().content
    rec = pair[1].record(second.headers["request-id"])
    assert rec["status"] == 200 and rec["input_tokens"] > first.usage.input_tokens + first.usage.output_tokens


def test_entries_expire_in_redis(pair, redis_url):
    one = pair[0].openai()
    made = one.responses.create(model="conv-echo", input="hi")
    r = redis.Redis.from_url(redis_url)
    ttl = r.pttl(f"conv-test:conv:{made.id}")
    assert 0 < ttl <= 7 * 86400 * 1000


def _stored(n: int) -> Stored:
    return Stored(
        kind="response",
        tenant="t",
        key_id="k",
        created_at=n,
        model="m",
        messages=[Message(role="user", content=str(n))],
        session="s",
    )


def test_local_store_bound_and_ttl():
    async def run() -> None:
        store = LocalConversations(ttl_s=60, max_entries=3)
        for i in range(5):
            await store.put(f"r{i}", _stored(i))
        assert await store.get("r0") is None and await store.get("r1") is None  # the oldest went first
        got = await store.get("r4")
        assert got is not None and got.messages[0].content == "4"
        gone = LocalConversations(ttl_s=-1, max_entries=3)
        await gone.put("r", _stored(1))
        assert await gone.get("r") is None

    asyncio.run(run())


def test_redis_store_round_trip_and_outage(redis_url):
    class State:
        client = redis.asyncio.Redis.from_url(redis_url)

        @staticmethod
        def k(key: str) -> str:
            return "unit:" + key

    async def run() -> None:
        store = RedisConversations(State, ttl_s=30)
        await store.put("r1", _stored(1))
        got = await store.get("r1")
        assert got is not None and got.owned_by(None) is False and got.messages[0].content == "1"
        assert await store.delete("r1") and await store.get("r1") is None
        await State.client.aclose()

        class Down:
            client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
            k = State.k

        from gateway.errors import GatewayError

        with pytest.raises(GatewayError) as e:
            await RedisConversations(Down, ttl_s=30).get("r1")
        assert e.value.code == "state_unavailable"

    asyncio.run(run())


def test_key_of_another_tenant_cannot_continue(pair):
    made = pair[0].openai().responses.create(model="conv-echo", input="hi")
    with pytest.raises(openai.NotFoundError):
        pair[1].openai(key=KEY_B).responses.retrieve(made.id)
    assert pair[1].openai(key=KEY_A).responses.retrieve(made.id).id == made.id
