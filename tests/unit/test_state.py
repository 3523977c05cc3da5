"""State backends: the Lua scripts against a real Redis, the same semantics from the in-process backend, the
per-scope (cluster) path, and the budget property: concurrent reserve/settle never overspends."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.state.local import LocalState
from gateway.state.redis import RedisState
from gateway.state.types import Charge, LimitCheck, group_by_tag, scope_tag, tag_of
from gateway.store.sqlite import SqliteStore

BACKENDS = ["local", "redis"]


def run(redis_url: str, backend: str, body: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
    """Run ``body(state)`` on a fresh state (a fresh key prefix on the shared Redis) inside one event loop."""

    async def main() -> Any:
        if backend == "local":
            state: Any = LocalState(kw.get("store"))
        else:
            state = RedisState(redis_url, prefix="t" + uuid.uuid4().hex[:8], store=kw.get("store"))
            state.cluster = kw.get("cluster", False)  # the per-scope path runs on a single Redis too
        try:
            return await body(state)
        finally:
            await state.close()

    return asyncio.run(main())


SLOW = 6000.0  # a window so long that the refill between two calls of a test is below its tolerances, however busy


def check(key: str, cap: float, cost: float = 1, window: float = SLOW) -> LimitCheck:
    return LimitCheck(key, cap, window, cost, f"{key} limit")


# ---------------------------------------------------------------- keys


def test_scope_tags_group_keys_by_scope():
    t = scope_tag("tenant", "ac}me")
    assert t == "{tenant:ac)me}" and tag_of(t + ":bud:life") == "tenant:ac)me"
    keys = ["{tenant:a}:x", "{model:m}:x", "{tenant:a}:y", "plain"]
    assert group_by_tag(keys) == [[0, 2], [1], [3]]


# ---------------------------------------------------------------- rate limits (GCRA, all-or-nothing)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bucket_burst_then_refuse_with_retry_after(redis_url, backend):
    async def body(s: Any) -> None:
        c = check("{key:k}:rpm", 5)
        for i in range(5):
            d = await s.acquire([c])
            assert d.allowed and d.remaining[0] == pytest.approx(4 - i, abs=1e-3)
        d = await s.acquire([c])
        assert not d.allowed and d.failed == 0
        assert d.retry_after_s == pytest.approx(SLOW / 5, abs=0.5)  # one token per window/5
        assert d.remaining[0] == pytest.approx(0, abs=0.01) and d.reset_s[0] == pytest.approx(SLOW, abs=0.5)

    run(redis_url, backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_or_nothing_and_never_fits(redis_url, backend):
    async def body(s: Any) -> None:
        roomy, tight = check("{tenant:t}:rpm", 100), check("{key:k}:rpm", 1)
        assert (await s.acquire([roomy, tight])).allowed
        d = await s.acquire([roomy, tight])
        assert not d.allowed and d.failed == 1
        assert d.remaining[0] == pytest.approx(99, abs=0.01)  # the roomy bucket was not charged
        huge = check("{key:k2}:tpm", 10, cost=11)
        d = await s.acquire([huge])
        assert not d.allowed and d.retry_after_s == -1

    run(redis_url, backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adjust_gives_back_and_charges_debt(redis_url, backend):
    async def body(s: Any) -> None:
        c = check("{key:k}:tpm", 100, cost=80)
        assert (await s.acquire([c])).allowed
        await s.adjust(c, 50)  # used 30 of the 80 reserved
        await s.sync()  # corrections are batched: wait for this one
        d = await s.acquire([check("{key:k}:tpm", 100, cost=70)])
        assert d.allowed and d.remaining[0] == pytest.approx(0, abs=0.01)
        await s.adjust(c, -40)  # the answer was longer than reserved: debt
        await s.sync()
        d = await s.acquire([check("{key:k}:tpm", 100, cost=1)])
        assert not d.allowed and d.retry_after_s == pytest.approx(41 * SLOW / 100, abs=0.5)
        await s.adjust(check("{key:fresh}:tpm", 100), 10)  # giving back to a full bucket is a no-op

    run(redis_url, backend, body)


def test_per_scope_path_gives_back_earlier_scopes_when_a_later_one_refuses(redis_url):
    async def body(s: Any) -> None:
        tenant, model = check("{tenant:t}:rpm", 10), check("{model:m}:rpm", 1)
        assert (await s.acquire([tenant, model])).allowed
        d = await s.acquire([tenant, model])
        assert not d.allowed and d.failed == 1
        d = await s.acquire([tenant])
        assert d.allowed and d.remaining[0] == pytest.approx(8, abs=0.01)  # 10 - 1 - (1 refunded) - 1

    run(redis_url, "redis", body, cluster=True)


def test_redis_bucket_expires_when_full(redis_url):
    async def body(s: Any) -> None:
        c = check("{key:k}:rpm", 2, window=1.0)
        assert (await s.acquire([c])).allowed
        ttl = await s.client.pttl(s.k(c.key))
        assert 0 < ttl <= 500  # full again after half a window: the key expires then

    run(redis_url, "redis", body)


# ---------------------------------------------------------------- budgets


@pytest.mark.parametrize("backend", BACKENDS)
def test_reserve_all_or_nothing_settle_and_spent(redis_url, backend):
    async def body(s: Any) -> None:
        tenant, run_ = Charge("{tenant:t}:bud:life", 100), Charge("{agent_run:t/a/r}:bud:life", 30)
        r = await s.reserve([tenant, run_], 20)
        assert r.ok and r.spent == [20, 20]
        r = await s.reserve([tenant, run_], 20)
        assert not r.ok and r.failed == 1 and r.spent == [20]
        assert await s.spent(tenant) == 20  # nothing reserved anywhere by the refused request
        await s.settle([tenant, run_], -5)  # actual cost 15 of the 20 reserved
        assert (await s.spent(tenant), await s.spent(run_)) == (15, 15)
        assert (await s.reserve([tenant, run_], 15)).ok  # 30 exactly fits
        assert (await s.spent(run_)) == 30

    run(redis_url, backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rolling_window_forgets_slices_that_left_it(redis_url, backend):
    async def body(s: Any) -> None:
        def at(hi: int) -> Charge:  # a window of 4 slices (lo = hi - 4)
            return Charge("{tenant:t}:bud:w60", 100, 120, hi - 4, hi)

        assert (await s.reserve([at(10)], 60)).ok
        assert not (await s.reserve([at(12)], 60)).ok  # slice 10 is still in the window
        r = await s.reserve([at(15)], 60)  # slice 10 has left it
        assert r.ok and r.spent == [60]
        await s.settle([at(10)], -10)  # a late settle of an old slice does not touch the window
        assert await s.spent(at(15)) == 60

    run(redis_url, backend, body)


def test_redis_counters_expire_with_their_period_and_per_scope_reserve_unwinds(redis_url):
    async def body(s: Any) -> None:
        day = Charge("{tenant:t}:bud:d2026-11-27", 100, 3 * 86400)
        assert (await s.reserve([day], 10)).ok
        assert 0 < await s.client.ttl(s.k(day.key)) <= 3 * 86400
        s.cluster = True
        tight = Charge("{team:x}:bud:life", 15)
        assert not (await s.reserve([day, tight], 20)).ok
        assert await s.spent(day) == 10  # the tenant reservation was given back

    run(redis_url, "redis", body)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reqs=st.lists(
        st.tuples(st.integers(1, 400), st.floats(0, 1), st.integers(0, 3)), min_size=1, max_size=60
    ),
    limit=st.integers(100, 3000),
    backend=st.sampled_from(BACKENDS),
    cluster=st.booleans(),
)
def test_concurrent_reserve_and_settle_never_overspend(redis_url, reqs, limit, backend, cluster):
    """Requests reserve their worst case, yield, then settle to an actual cost <= the reservation, all at once:
    no counter ever exceeds its limit, and the final spend is exactly what the admitted requests cost."""

    async def body(s: Any) -> None:
        charges = [Charge("{tenant:t}:bud:life", limit), Charge("{agent_run:t/a/r}:bud:life", limit * 2 // 3)]
        admitted: list[int] = []
        peak = [0]

        async def one(reserve: int, frac: float, yields: int) -> None:
            r = await s.reserve(charges, reserve)
            if not r.ok:
                return
            peak[0] = max(peak[0], *(sp - c.limit for sp, c in zip(r.spent, charges, strict=True)))
            for _ in range(yields):
                await asyncio.sleep(0)
            actual = int(reserve * frac)
            await s.settle(charges, actual - reserve)
            admitted.append(actual)

        await asyncio.gather(*(one(*r) for r in reqs))
        assert peak[0] <= 0  # no reservation ever took a counter over its limit
        spent = [await s.spent(c) for c in charges]
        assert spent[0] == spent[1] == sum(admitted)
        assert all(sp <= c.limit for sp, c in zip(spent, charges, strict=True))

    random.seed(0)
    run(redis_url, backend, body, cluster=cluster and backend == "redis")


# ---------------------------------------------------------------- cooldowns, approvals, policies


@pytest.mark.parametrize("backend", BACKENDS)
def test_cooldowns_keep_the_later_end(redis_url, backend):
    async def body(s: Any) -> None:
        await s.set_cooldown("dep-a", 30)
        await s.set_cooldown("dep-a", 1)  # an earlier end does not shorten it
        await s.set_cooldown("dep-b", 0.001)
        await asyncio.sleep(0.05)
        cools = await s.cooldowns(["dep-a", "dep-b", "dep-c"])
        assert set(cools) == {"dep-a"}
        import time

        assert cools["dep-a"] - time.time() == pytest.approx(30, abs=1)

    run(redis_url, backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_approval_tokens_are_single_use_bound_to_key_and_amount(redis_url, backend, tmp_path):
    from gateway import approvals

    async def body(s: Any) -> None:
        token = await approvals.issue(s, "key_1", 0.50, 60)
        assert not await approvals.redeem(s, token, "key_2", 100_000)  # another key
        assert not await approvals.redeem(s, token, "key_1", 600_000)  # more than approved
        assert not await approvals.redeem(s, "gwa-made-up", "key_1", 1)
        assert await approvals.redeem(s, token, "key_1", 500_000)
        assert not await approvals.redeem(s, token, "key_1", 1)  # used

    run(redis_url, backend, body)
    run(redis_url, backend, body, store=SqliteStore(tmp_path / "s.db"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_policies_round_trip(redis_url, backend, tmp_path):
    async def body(s: Any) -> None:
        await s.put_policy("budget", "tenant", "acme", {"usd": 5.0})
        await s.put_policy("limit", "agent_run", "acme/a/r", {"rpm": 3})
        await s.put_policy("budget", "tenant", "gone", {"usd": 1.0})
        await s.put_policy("budget", "tenant", "gone", None)
        assert await s.load_policies() == {
            ("budget", "tenant", "acme"): {"usd": 5.0},
            ("limit", "agent_run", "acme/a/r"): {"rpm": 3},
        }

    run(redis_url, backend, body, store=SqliteStore(tmp_path / "p.db"))


def test_redis_policies_reach_a_replica_with_another_store(redis_url, tmp_path):
    prefix = "t" + uuid.uuid4().hex[:8]

    async def body() -> Any:
        a = RedisState(redis_url, prefix=prefix, store=SqliteStore(tmp_path / "a.db"))
        b = RedisState(redis_url, prefix=prefix, store=SqliteStore(tmp_path / "b.db"))
        await a.put_policy("budget", "team", "t1", {"usd": 2.0})
        seen = await b.load_policies()
        await a.close()
        await b.close()
        return seen

    assert asyncio.run(body()) == {("budget", "team", "t1"): {"usd": 2.0}}


def test_redis_keys_carry_the_prefix_and_scope_tag(redis_url):
    prefix = "t" + uuid.uuid4().hex[:8]

    async def body() -> None:
        s = RedisState(redis_url, prefix=prefix)
        await s.reserve([Charge("{tenant:acme}:bud:life", 100)], 1)
        await s.close()

    asyncio.run(body())
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_url).keys(prefix + ":*"))
    assert keys == [f"{prefix}:{{tenant:acme}}:bud:life"]


def test_corrections_made_while_a_batch_is_in_flight_are_sent_too(redis_url):
    async def body(s: Any) -> None:
        c = Charge("{tenant:t}:bud:life", 1_000)
        assert (await s.reserve([c], 100)).ok
        send = s._batch
        calls = []

        async def in_flight(**kw: Any) -> Any:  # a settle arrives while the first batch is on its way
            calls.append(1)
            if len(calls) == 1:
                await s.settle([c], -20)
            return await send(**kw)

        s._batch = in_flight
        await s.settle([c], -10)
        for _ in range(100):  # no read forces a sync: the batches alone must deliver both
            if len(calls) >= 2 and not s.unsynced:
                break
            await asyncio.sleep(0.01)
        raw = await s.client.hvals(s.k(c.key))
        assert sum(int(v) for v in raw) == 70

    run(redis_url, "redis", body)


def test_a_read_waits_for_the_batch_on_its_way(redis_url):
    async def body(s: Any) -> None:
        c = Charge("{tenant:t}:bud:life", 1_000)
        assert (await s.reserve([c], 100)).ok
        send = s._batch

        async def slow(**kw: Any) -> Any:  # the batch is on its way a while
            await asyncio.sleep(0.05)
            return await send(**kw)

        s._batch = slow
        await s.settle([c], -10)
        await asyncio.sleep(0.01)  # the batch has left the queue and is being sent
        assert not s.unsynced
        assert await s.spent(c) == 90

    run(redis_url, "redis", body)
