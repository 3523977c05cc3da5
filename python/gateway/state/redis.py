"""The shared state backend: rate limits, budget reservations, cooldowns, approvals, run-time policies and PII
vaults in Redis, so every worker of every replica enforces the same contracts.

Each decision is one Lua script (``state/lua/*.lua``; atomic on the server, one round trip): token buckets are
checked and charged all-or-nothing across every scope a request touches, budgets are reserved in every scope or in
none. The server's clock (``TIME``) is the only clock, so replicas never disagree about refills.

Keys carry their scope as the Redis Cluster hash tag (``gw:{tenant:acme}:...``, see ``state/types.py``). On a
single Redis (or a replica set) one script covers every scope of a request. With ``state.redis_cluster`` the keys
of different scopes live on different shards, so one script runs per scope: a limit is charged scope by scope and
given back in the scopes already charged when a later one refuses; a budget likewise. That keeps the guarantee
that matters (no scope ever goes over) at the price of a brief, conservative over-reservation in a race.

When Redis is unreachable the ``on_redis_failure`` policy decides. ``fail_open``: answer from the in-process
backend (limits per worker; budgets continue from the last spend Redis reported and the spend counted meanwhile
is written back when Redis returns); decisions are flagged ``degraded`` so records say ``state_degraded``.
``fail_closed``: 503 ``state_unavailable``. Every call has one deadline (``timeout_s``, 0.25 s) covering all its
round trips and the client's retry, and once Redis has failed only one probe per ``PROBE_EVERY_S`` tries it again
(the other requests go straight to the fallback), so an outage costs a request at most one timeout, never a hang;
the client reconnects on its own.

Corrections (budget settles, token give-backs) leave the request path: they are summed per counter and sent
together every ``BATCH_S`` in one script call, so a request costs Redis two calls (limits, budget), not four.

A call that timed out may still run later (a hung Redis works off its input when it resumes). Budget writes carry
a deadline on the server clock and do nothing when run after it, so spend counted in-process after a timeout is
never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.state.local import LocalState
from gateway.state.types import Charge, LimitCheck, LimitDecision, Reservation, group_by_tag
from gateway.telemetry.metrics import METRICS

if TYPE_CHECKING:
    from gateway.state.policies import Policies

log = logging.getLogger("gateway.state")

T = TypeVar("T")
_GIVE_UP_AT: contextvars.ContextVar[float] = contextvars.ContextVar("redis_give_up_at", default=0.0)
ERRORS = (RedisError, OSError, asyncio.TimeoutError)
PROBE_EVERY_S = 0.5  # while Redis is down, how often one request tries it again
BATCH_S = 0.002  # corrections wait at most this long to be sent together


def lua(name: str) -> str:
    return resources.files("gateway.state").joinpath("lua", f"{name}.lua").read_text()


class _Unanswered:
    """What ``_ask`` returns when Redis did not answer (known down, or the call failed)."""


UNANSWERED = _Unanswered()


class LateWrite(RedisError):
    """A budget write reached Redis after its deadline and was not applied."""


class StateUnavailable(GatewayError):
    def __init__(self) -> None:
        super().__init__(
            "state_unavailable",
            "The gateway's shared state (Redis) is unreachable and this gateway is configured to fail closed "
            "(state.on_redis_failure: fail_closed), so it cannot check your limits and budgets; retry in a few "
            "seconds.",
            headers={"retry-after": "2"},
        )


class RedisState:
    name = "redis"
    policies: Policies  # run-time rules, set by ``make_state``

    def __init__(
        self,
        url: str,
        on_failure: str = "fail_open",
        *,
        prefix: str = "gw",
        cluster: bool = False,
        timeout_s: float = 0.25,
        store: Any = None,
    ) -> None:
        kw: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            # one immediate retry: a pooled connection that died with a restarted Redis is replaced at once
            "retry": Retry(NoBackoff(), 1),
            "max_connections": 128,
        }
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            self.client: Any = RedisCluster.from_url(url, **kw)
        else:
            self.client = aioredis.Redis.from_url(url, health_check_interval=5, **kw)
        self.cluster = cluster
        self.prefix = prefix + ":"
        self.on_failure = on_failure
        self.store = store
        self.local = LocalState(store)  # the safety net under fail_open
        s = self.client.register_script
        self._acquire = s(lua("acquire"))
        self._reserve = s(lua("reserve"))
        self._batch = s(lua("batch"))
        self._cool = s(lua("cooldown"))
        self._cools = s(lua("cooldowns"))
        self._take = s(lua("take_approval"))
        self.timeout_s = timeout_s
        self.timeout_ms = timeout_s * 1000
        self._offset_ms: float | None = None  # Redis clock - this host's clock, measured at (re)connection
        self._down_since = 0.0
        self._probe_at = 0.0
        self.seen: dict[str, int] = {}  # budget counter -> the last spend Redis reported (fail_open seed)
        # budget deltas Redis has not got yet: (counter, slot, ttl) -> micro-dollars
        self.unsynced: dict[tuple[str, int, int], int] = {}
        self.give_backs: dict[str, tuple[LimitCheck, float]] = {}  # bucket -> token corrections not yet sent
        self._sender: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # one batch at a time: a read after sync() sees every batch applied

    def k(self, key: str) -> str:
        return self.prefix + key

    # ------------------------------------------------------------ health

    @property
    def degraded(self) -> bool:
        return bool(self._down_since)

    def _usable(self) -> bool:
        """False while Redis is known to be down, except for one probe every ``PROBE_EVERY_S``."""
        if not self._down_since:
            return True
        now = time.monotonic()
        if now >= self._probe_at:
            self._probe_at = now + PROBE_EVERY_S
            return True
        return False

    def _down(self, e: BaseException) -> None:
        if not self._down_since:
            log.error("redis unavailable (%s: %s); policy %s", type(e).__name__, e, self.on_failure)
            self._down_since = time.monotonic()
            self._probe_at = self._down_since + PROBE_EVERY_S

    def _up(self) -> None:
        if self._down_since:
            log.warning("redis reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = 0.0
            self._offset_ms = None  # measure the clocks again: Redis may have moved hosts
            self.local.counters.clear()  # a later outage starts again from what Redis reports
            if self.unsynced:
                log.warning(
                    "writing back %d budget corrections counted while redis was down", len(self.unsynced)
                )
                self._schedule()

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T | _Unanswered:
        """``call()`` against Redis unless it is known to be down; a failure marks it down, a success up."""
        if not self._usable():
            METRICS.inc("redis_skipped_while_down")
            return UNANSWERED
        t0 = time.perf_counter()
        try:
            # One deadline for the whole call, whatever it takes inside (a clock read, a script, the client's own
            # retry, a health-check ping): a hung Redis costs a decision at most ``timeout_s``, not one socket
            # timeout per round trip.
            async with self._deadline_scope():
                out = await call()
        except ERRORS as e:
            METRICS.inc("redis_errors")
            self._down(e)
            return UNANSWERED
        METRICS.inc("redis_round_trips")
        METRICS.inc("redis_round_trip_seconds", time.perf_counter() - t0)
        self._up()
        return out

    @contextlib.asynccontextmanager
    async def _deadline_scope(self) -> AsyncIterator[None]:
        """``timeout_s`` from now for everything inside; budget writes sent inside carry the same deadline
        (see ``_deadline``), so one that runs after this gave up does nothing."""
        token = _GIVE_UP_AT.set(time.time() + self.timeout_s)  # before the timer starts: never later than it
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        finally:
            _GIVE_UP_AT.reset(token)

    def _fallback(self) -> None:
        """Before answering a decision from the in-process backend: refuse instead under fail_closed."""
        if self.on_failure == "fail_closed":
            raise StateUnavailable()

    # ------------------------------------------------------------ rate limits

    async def acquire(self, checks: list[LimitCheck], now: float | None = None) -> LimitDecision:
        if not checks:
            return LimitDecision(True)
        d = await self._ask(lambda: self._acquire_all(checks))
        if not isinstance(d, _Unanswered):
            return d
        self._fallback()
        d = await self.local.acquire(checks)
        d.degraded = True
        return d

    async def _acquire_all(self, checks: list[LimitCheck]) -> LimitDecision:
        if not self.cluster:
            return await self._acquire_some(checks)
        groups = group_by_tag([c.key for c in checks])
        remaining = [c.capacity for c in checks]
        reset = [0.0] * len(checks)
        for n, idx in enumerate(groups):
            d = await self._acquire_some([checks[i] for i in idx])
            for j, i in enumerate(idx):
                remaining[i], reset[i] = d.remaining[j], d.reset_s[j]
            if not d.allowed:
                for done in groups[:n]:  # give back what the scopes before this one were charged
                    await self._correct([], [(checks[i], checks[i].cost) for i in done])
                return LimitDecision(False, idx[d.failed], d.retry_after_s, remaining, reset)
        return LimitDecision(True, -1, 0.0, remaining, reset)

    async def _acquire_some(self, checks: list[LimitCheck]) -> LimitDecision:
        args: list[Any] = []
        for c in checks:
            args += [c.capacity, c.window_s, c.cost]
        out = await self._acquire(keys=[self.k(c.key) for c in checks], args=args)
        allowed, failed, retry = int(out[0]), int(out[1]) - 1, float(out[2])
        rest = out[3:]
        remaining = [float(rest[2 * i]) for i in range(len(checks))]
        reset = [float(rest[2 * i + 1]) / 1000 for i in range(len(checks))]
        return LimitDecision(bool(allowed), failed, retry if retry < 0 else retry / 1000, remaining, reset)

    async def adjust(self, check: LimitCheck, delta: float) -> None:
        """Correct a bucket by ``delta`` tokens (sent with the next batch)."""
        if not delta:
            return
        if self._down_since:
            await self.local.adjust(check, delta)
            return
        _, before = self.give_backs.get(check.key, (check, 0.0))
        self.give_backs[check.key] = (check, before + delta)
        self._schedule()

    # ------------------------------------------------------------ budgets (micro-dollars)

    async def _deadline(self) -> float:
        """The latest moment (Redis clock, ms) a budget write may run: half the timeout before this call gives
        up, a margin for the error of the measured clock offset, so a write run after the give-up never counts."""
        give_up_at = (_GIVE_UP_AT.get() or time.time() + self.timeout_s) - self.timeout_s / 2
        if self._offset_ms is None:
            before = time.time()
            sec, usec = await self.client.time()
            after = time.time()
            self._offset_ms = (sec + usec / 1e6 - (before + after) / 2) * 1000
        return give_up_at * 1000 + self._offset_ms

    async def reserve(self, charges: list[Charge], amount: int) -> Reservation:
        if not charges:
            return Reservation(True)
        r = await self._ask(lambda: self._reserve_all(charges, amount))
        if not isinstance(r, _Unanswered):
            if r.ok:
                for c, s in zip(charges, r.spent, strict=True):
                    self.seen[c.key] = s
            return r
        self._fallback()
        r = self.local.reserve_now(charges, amount, seed=self.seen)
        r.degraded = True
        if r.ok:
            self._unsynced(charges, amount)
        return r

    async def _reserve_all(self, charges: list[Charge], amount: int) -> Reservation:
        if not self.cluster:
            return await self._reserve_some(charges, amount)
        spent = [0] * len(charges)
        groups = group_by_tag([c.key for c in charges])
        for n, idx in enumerate(groups):
            r = await self._reserve_some([charges[i] for i in idx], amount)
            if not r.ok:
                for done in groups[:n]:  # give back what the scopes before this one reserved
                    await self._correct(
                        [((c.key, c.hi, c.ttl_s), -amount) for c in (charges[i] for i in done)], []
                    )
                return Reservation(False, idx[r.failed], r.spent)
            for j, i in enumerate(idx):
                spent[i] = r.spent[j]
        return Reservation(True, -1, spent)

    async def _reserve_some(self, charges: list[Charge], amount: int) -> Reservation:
        args: list[Any] = [await self._deadline(), amount]
        for c in charges:
            args += [c.limit, c.ttl_s, c.lo, c.hi]
        out = await self._reserve(keys=[self.k(c.key) for c in charges], args=args)
        if int(out[0]) == -1:
            raise LateWrite("budget reservation reached redis after its deadline")
        if int(out[0]) == 1:
            return Reservation(True, -1, [int(x) for x in out[1:]])
        return Reservation(False, int(out[1]) - 1, [int(out[2])])

    async def settle(self, charges: list[Charge], delta: int) -> None:
        """Correct a reservation by ``delta`` (actual - reserved). Never raises: the correction is sent with the
        next batch, or, while Redis is unreachable, counted locally and written back when it returns."""
        if not delta or not charges:
            return
        self._unsynced(charges, delta)
        if self._down_since:
            await self.local.settle(charges, delta)
        else:
            self._schedule()

    def _unsynced(self, charges: list[Charge], delta: int) -> None:
        for c in charges:
            slot = (c.key, c.hi, c.ttl_s)
            self.unsynced[slot] = self.unsynced.get(slot, 0) + delta

    def _schedule(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_later())

    async def _send_later(self) -> None:
        # corrections that arrive while a batch is on its way go with the next one; while Redis is down they
        # wait for the reconnection, which schedules them again
        while (self.unsynced or self.give_backs) and not self._down_since:
            await asyncio.sleep(BATCH_S)
            await self.sync()

    async def sync(self) -> None:
        """Send the corrections waiting for the batch now, after any batch already on its way (reads that must
        see them call this first)."""
        async with self._sending:
            await self._sync()

    async def _sync(self) -> None:
        if not (self.unsynced or self.give_backs) or not self._usable():
            return
        budget, self.unsynced = list(self.unsynced.items()), {}
        buckets, self.give_backs = list(self.give_backs.values()), {}
        keys = [k for (k, _, _), _ in budget] + [c.key for c, _ in buckets]
        groups = group_by_tag(keys) if self.cluster else [list(range(len(keys)))]
        nb = len(budget)
        for n, idx in enumerate(groups):
            try:
                # bounded like any decision: reads wait for this batch (see ``sync``)
                async with self._deadline_scope():
                    await self._correct(
                        [budget[i] for i in idx if i < nb], [buckets[i - nb] for i in idx if i >= nb]
                    )
            except ERRORS as e:
                # a script is atomic and its deadline stops a late run: this group and the rest are not in Redis
                self._down(e)
                for i in (i for g in groups[n:] for i in g):
                    if i < nb:
                        k, delta = budget[i]
                        self.unsynced[k] = self.unsynced.get(k, 0) + delta
                    else:
                        await self.local.adjust(*buckets[i - nb])
                return
        self._up()

    async def _correct(
        self, budget: list[tuple[tuple[str, int, int], int]], buckets: list[tuple[LimitCheck, float]]
    ) -> None:
        """One ``batch.lua`` call (keys of one hash slot on a cluster): budget deltas per (counter, slot, ttl),
        then token-bucket corrections."""
        args: list[Any] = [await self._deadline(), len(budget)]
        for (_, slot, ttl), delta in budget:
            args += [slot, delta, ttl]
        for check, change in buckets:
            args += [check.capacity, check.window_s, change]
        keys = [self.k(key) for (key, _, _), _ in budget] + [self.k(c.key) for c, _ in buckets]
        if int(await self._batch(keys=keys, args=args)) == -1:
            raise LateWrite("corrections reached redis after their deadline")

    async def spent(self, charge: Charge) -> int:
        await self.sync()
        values = await self._ask(
            lambda: self.client.hmget(self.k(charge.key), list(range(charge.lo, charge.hi + 1)))
        )
        if isinstance(values, _Unanswered):
            return await self.local.spent(charge)
        return sum(int(v) for v in values if v is not None)

    # ------------------------------------------------------------ deployment cooldowns shared by every replica

    async def set_cooldown(self, deployment: str, seconds: float) -> None:
        """A 429 with Retry-After: every replica skips the deployment until then (the later end wins)."""
        await self.local.set_cooldown(deployment, seconds)
        ms = max(1, int(seconds * 1000))
        await self._ask(lambda: self._cool(keys=[self.k("{cooldowns}")], args=[deployment, ms]))

    async def cooldowns(self, deployments: list[str] | None = None) -> dict[str, float]:
        """Deployment -> cooldown end (unix seconds on this host's clock), for those some replica cooled."""
        out = await self._ask(lambda: self._cools(keys=[self.k("{cooldowns}")], args=[]))
        if isinstance(out, _Unanswered):
            return await self.local.cooldowns(deployments)
        now = time.time()
        found = {out[i].decode(): now + int(out[i + 1]) / 1000 for i in range(0, len(out), 2)}
        return {d: u for d, u in found.items() if deployments is None or d in deployments}

    async def clear_cooldowns(self, deployments: list[str]) -> None:
        """An operator's reset: every replica stops skipping these deployments within a second."""
        await self.local.clear_cooldowns(deployments)
        if deployments:
            await self._ask(lambda: self.client.hdel(self.k("{cooldowns}"), *deployments))

    # ------------------------------------------------------------ approval tokens (single use)

    async def put_approval(self, token_hash: str, key_id: str, max_micros: int, ttl_s: float) -> None:
        if self.store is not None:
            self.store.put_approval(token_hash, key_id, max_micros / 1e6, ttl_s)
        key = self.k("{approval:" + token_hash + "}")
        try:
            async with self.client.pipeline(transaction=not self.cluster) as p:
                p.hset(key, mapping={"key_id": key_id, "max": max_micros})
                p.expire(key, max(1, int(ttl_s)))
                await p.execute()
        except ERRORS as e:
            self._down(e)
            if self.store is None:
                raise StateUnavailable() from None

    async def take_approval(self, token_hash: str, key_id: str, cost_micros: int) -> bool:
        key = self.k("{approval:" + token_hash + "}")
        out = await self._ask(lambda: self._take(keys=[key], args=[key_id, cost_micros]))
        if isinstance(out, _Unanswered):
            self._fallback()
            return await self.local.take_approval(token_hash, key_id, cost_micros)
        if int(out) != 1:
            return False
        if self.store is not None:  # spent in the store too: it must not work during an outage
            self.store.take_approval(token_hash, key_id, cost_micros / 1e6)
        return True

    # ------------------------------------------------------------ policies set at run time, metrics snapshots

    async def load_policies(self) -> dict[tuple[str, str, str], dict[str, Any]] | None:
        """Every replica reads the policies from Redis; None while it is unreachable (keep what you have)."""
        raw = await self._ask(lambda: self.client.hgetall(self.k("{policies}")))
        if isinstance(raw, _Unanswered):
            return None
        out = {}
        for field, value in raw.items():
            kind, scope, ident = field.decode().split("\x1f", 2)
            out[(kind, scope, ident)] = orjson.loads(value)
        return out

    async def put_policy(self, kind: str, scope: str, ident: str, rule: dict[str, Any] | None) -> None:
        """Stored in the SQLite store (survives a Redis restart on this host) and in Redis (every replica)."""
        if self.store is not None:
            self.store.put_policy(kind, scope, ident, rule)
        field = f"{kind}\x1f{scope}\x1f{ident}"
        try:
            if rule is None:
                await self.client.hdel(self.k("{policies}"), field)
            else:
                await self.client.hset(self.k("{policies}"), field, orjson.dumps(rule))
        except ERRORS as e:
            self._down(e)
            raise StateUnavailable() from None

    async def publish_metrics(self, worker: str, snapshot: dict[str, Any], ttl_s: float) -> None:
        p = self.client.pipeline(transaction=not self.cluster)
        p.hset(self.k("{metrics}"), worker, orjson.dumps({**snapshot, "ts": time.time()}))
        p.expire(self.k("{metrics}"), int(ttl_s * 10))
        await self._ask(p.execute)

    async def read_metrics(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        try:
            raw = await self.client.hgetall(self.k("{metrics}"))
        except ERRORS as e:
            self._down(e)
            return await self.local.read_metrics(max_age_s)
        now = time.time()
        snaps = {w.decode(): orjson.loads(v) for w, v in raw.items()}
        return {w: s for w, s in snaps.items() if now - s.get("ts", 0) <= max_age_s}

    # ------------------------------------------------------------ small maps with a TTL (PII vaults)

    async def get_map(self, key: str) -> dict[str, str]:
        raw = await self._ask(lambda: self.client.hgetall(self.k("{map:" + key + "}")))
        if isinstance(raw, _Unanswered):
            self._fallback()
            return await self.local.get_map(key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def put_map(self, key: str, mapping: dict[str, str], ttl_s: float) -> None:
        p = self.client.pipeline(transaction=not self.cluster)
        p.hset(self.k("{map:" + key + "}"), mapping=mapping)
        p.expire(self.k("{map:" + key + "}"), max(1, int(ttl_s)))
        if isinstance(await self._ask(p.execute), _Unanswered):
            self._fallback()
            await self.local.put_map(key, mapping, ttl_s)

    async def incr_map(self, key: str, increments: dict[str, float], ttl_s: float) -> dict[str, float]:
        """Add to numeric fields of a shared map (HINCRBYFLOAT: atomic across replicas); returns the whole map."""
        name = self.k("{map:" + key + "}")
        p = self.client.pipeline(transaction=not self.cluster)
        for f, v in increments.items():
            p.hincrbyfloat(name, f, v)
        p.expire(name, max(1, int(ttl_s)))
        p.hgetall(name)
        out = await self._ask(p.execute)
        if isinstance(out, _Unanswered):
            self._fallback()
            return await self.local.incr_map(key, increments, ttl_s)
        return {k.decode(): float(v) for k, v in out[-1].items()}

    async def close(self) -> None:
        if not self._down_since:
            await self.sync()
        await self.client.aclose()
