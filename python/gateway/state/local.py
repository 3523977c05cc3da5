"""The in-process state backend: rate limits in the Rust core, budget counters and maps in this worker's memory.

Same semantics as the Redis backend (``state/redis.py``), minus sharing: with several Granian workers and no
Redis every worker enforces its own limits and budgets, which the gateway says loudly at start-up. What must be
shared by every worker even without Redis — run-time policies, approval tokens, metrics snapshots — goes to the
SQLite store when one is given (one file per host).

Every method is atomic within the worker: there is no ``await`` between a check and its charge.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway import _core
from gateway.state.types import Charge, LimitCheck, LimitDecision, Reservation

if TYPE_CHECKING:
    from gateway.state.policies import Policies

# Buckets untouched this long are forgotten (a full bucket is forgotten losslessly): longer than any window.
IDLE_TTL_S = 7200.0


class LocalState:
    name = "local"
    policies: Policies  # run-time rules, set by ``make_state``

    def __init__(self, store: Any = None) -> None:
        self.limiter = _core.RateLimiter(IDLE_TTL_S)
        self.store = store
        self.maps: dict[str, tuple[dict[str, str], float]] = {}
        # budget counter -> (slot -> nano-dollars, expiry; 0 = never)
        self.counters: dict[str, tuple[dict[int, int], float]] = {}
        self.cools: dict[str, float] = {}  # deployment -> cooldown end (unix seconds)
        # approval tokens when there is no store: hash -> (key id, max micro-dollars, expiry)
        self.approvals: dict[str, tuple[str, int, float]] = {}

    # ------------------------------------------------------------ rate limits

    async def acquire(self, checks: list[LimitCheck], now: float | None = None) -> LimitDecision:
        allowed, failed, retry, remaining, reset = self.limiter.acquire(
            [(c.key, c.capacity, c.window_s, c.cost) for c in checks], now
        )
        return LimitDecision(allowed, failed, retry, remaining, reset)

    async def adjust(self, check: LimitCheck, delta: float) -> None:
        """Give units back (delta > 0) or charge more (delta < 0) once the real cost is known."""
        if delta:
            self.limiter.adjust(check.key, check.capacity, check.window_s, delta, None)

    # ------------------------------------------------------------ budgets (nano-dollars)

    async def reserve(self, charges: list[Charge], amount: int) -> Reservation:
        """Reserve ``amount`` in every counter or in none."""
        return self.reserve_now(charges, amount)

    def reserve_now(
        self, charges: list[Charge], amount: int, seed: dict[str, int] | None = None
    ) -> Reservation:
        """``seed``: a starting value for counters this worker has not seen (the last spend Redis reported)."""
        now = time.monotonic()
        spent = []
        for i, c in enumerate(charges):
            s = self._sum(c, now)
            if s == 0 and seed and c.key in seed:
                s = seed[c.key]
                self.counters[c.key] = ({c.hi: s}, now + c.ttl_s if c.ttl_s else 0.0)
            if amount > 0 and s + amount > c.limit:
                return Reservation(False, i, [s])
            spent.append(s + amount)
        for c in charges:
            slots, _ = self.counters.get(c.key, ({}, 0.0))
            slots[c.hi] = slots.get(c.hi, 0) + amount
            if c.hi > c.lo:  # a rolling window: forget slices that left it
                for old in [f for f in slots if f < c.lo]:
                    del slots[old]
            self.counters[c.key] = (slots, now + c.ttl_s if c.ttl_s else 0.0)
        return Reservation(True, -1, spent)

    async def settle(self, charges: list[Charge], delta: int) -> None:
        """Correct a reservation by ``delta`` (actual - reserved) in the slot each counter was charged in."""
        if not delta:
            return
        now = time.monotonic()
        for c in charges:
            hit = self.counters.get(c.key)
            if hit is None or (hit[1] and hit[1] < now):
                continue  # the period is over: nothing to correct
            hit[0][c.hi] = hit[0].get(c.hi, 0) + delta

    async def spent(self, charge: Charge) -> int:
        return self._sum(charge, time.monotonic())

    async def sync(self) -> None:
        """Corrections apply at once here (the Redis backend sends them in batches)."""

    def _sum(self, c: Charge, now: float) -> int:
        hit = self.counters.get(c.key)
        if hit is None:
            return 0
        if hit[1] and hit[1] < now:
            del self.counters[c.key]
            return 0
        slots = hit[0]
        return sum(v for f, v in slots.items() if c.lo <= f <= c.hi)

    # ------------------------------------------------------------ deployment cooldowns (this worker's own)

    async def set_cooldown(self, deployment: str, seconds: float) -> None:
        self.cools[deployment] = max(self.cools.get(deployment, 0.0), time.time() + seconds)

    async def cooldowns(self, deployments: list[str] | None = None) -> dict[str, float]:
        """Deployment -> cooldown end (unix seconds), for those still cooling."""
        now = time.time()
        return {
            d: until
            for d, until in self.cools.items()
            if until > now and (deployments is None or d in deployments)
        }

    async def clear_cooldowns(self, deployments: list[str]) -> None:
        for d in deployments:
            self.cools.pop(d, None)

    # ------------------------------------------------------------ approval tokens (single use)

    async def put_approval(self, token_hash: str, key_id: str, max_micros: int, ttl_s: float) -> None:
        if self.store is not None:
            self.store.put_approval(token_hash, key_id, max_micros / 1e6, ttl_s)
        else:
            self.approvals[token_hash] = (key_id, max_micros, time.time() + ttl_s)

    async def take_approval(self, token_hash: str, key_id: str, cost_micros: int) -> bool:
        """Spend the token if it is unused, unexpired, for this key and covers the cost (atomically)."""
        if self.store is not None:
            return bool(self.store.take_approval(token_hash, key_id, cost_micros / 1e6))
        hit = self.approvals.get(token_hash)
        if hit is None or hit[0] != key_id or hit[1] < cost_micros or hit[2] < time.time():
            return False
        del self.approvals[token_hash]
        return True

    # ------------------------------------------------------------ policies set at run time, metrics snapshots

    async def load_policies(self) -> dict[tuple[str, str, str], dict[str, Any]] | None:
        """(kind, scope, id) -> rule for every budget and limit set through the admin API."""
        return self.store.policies() if self.store is not None else {}

    async def put_policy(self, kind: str, scope: str, ident: str, rule: dict[str, Any] | None) -> None:
        if self.store is not None:
            self.store.put_policy(kind, scope, ident, rule)

    async def publish_metrics(self, worker: str, snapshot: dict[str, Any], ttl_s: float) -> None:
        if self.store is not None:
            self.store.put_metrics(worker, snapshot)

    async def read_metrics(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        return self.store.metrics(max_age_s) if self.store is not None else {}

    # ------------------------------------------------------------ small maps with a TTL (PII vaults)

    async def get_map(self, key: str) -> dict[str, str]:
        hit = self.maps.get(key)
        if hit is None:
            return {}
        if hit[1] < time.monotonic():
            del self.maps[key]
            return {}
        return dict(hit[0])

    async def put_map(self, key: str, mapping: dict[str, str], ttl_s: float) -> None:
        if len(self.maps) > 100_000:
            now = time.monotonic()
            self.maps = {k: v for k, v in self.maps.items() if v[1] >= now}
        self.maps[key] = (dict(mapping), time.monotonic() + ttl_s)

    async def incr_map(self, key: str, increments: dict[str, float], ttl_s: float) -> dict[str, float]:
        """Add to numeric fields of a map; returns the whole map after the addition (as floats)."""
        hit = self.maps.get(key)
        now = time.monotonic()
        fields = dict(hit[0]) if hit is not None and hit[1] >= now else {}
        for f, v in increments.items():
            fields[f] = str(float(fields.get(f, 0.0)) + v)
        self.maps[key] = (fields, now + ttl_s)
        return {f: float(v) for f, v in fields.items()}

    @property
    def degraded(self) -> bool:
        return False

    async def close(self) -> None:
        return None
