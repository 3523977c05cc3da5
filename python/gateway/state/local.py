"""The in-process state backend: rate limits in the Rust core, maps and counters in this worker's memory.

Same semantics as the Redis backend (``state/redis.py``), minus sharing: with several Granian workers and no
Redis every worker enforces its own limits, which the gateway says loudly at start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway import _core


@dataclass(slots=True)
class LimitCheck:
    """One bucket a request must fit in: ``capacity`` units per ``window_s`` seconds; ``cost`` units asked."""

    key: str
    capacity: float
    window_s: float
    cost: float
    scope: str = ""  # what a reject names: "key 'a' requests/min"
    kind: str = "requests"  # requests | tokens (for the x-ratelimit-* header names)


@dataclass(slots=True)
class LimitDecision:
    allowed: bool
    failed: int = -1  # index of the first check that did not fit
    retry_after_s: float = 0.0
    remaining: list[float] = field(default_factory=list)
    reset_s: list[float] = field(default_factory=list)


class LocalState:
    name = "local"

    def __init__(self) -> None:
        self.limiter = _core.RateLimiter()
        self.maps: dict[str, tuple[dict[str, str], float]] = {}
        self.counters: dict[str, tuple[int, float]] = {}  # key -> (value, expiry; 0 = never)

    # ------------------------------------------------------------ rate limits

    async def acquire(self, checks: list[LimitCheck], now: float | None = None) -> LimitDecision:
        allowed, failed, retry, remaining, reset = self.limiter.acquire(
            [(c.key, c.capacity, c.window_s, c.cost) for c in checks], now
        )
        return LimitDecision(allowed, failed, retry, remaining, reset)

    async def adjust(self, check: LimitCheck, delta: float) -> None:
        """Give units back (delta > 0) or charge more (delta < 0) once the real cost is known."""
        self.limiter.adjust(check.key, check.capacity, check.window_s, delta, None)

    # ------------------------------------------------------------ budgets (amounts in micro-dollars)

    async def reserve(self, scopes: list[tuple[str, int, int]], amount: int) -> tuple[bool, int, int]:
        """Reserve ``amount`` in every (key, limit, ttl_s) scope or in none: (ok, failed index, spent there).
        No await between check and charge, so it is atomic within this worker's event loop."""
        now = time.monotonic()
        for i, (key, limit, _) in enumerate(scopes):
            spent = self._spent(key, now)
            if spent + amount > limit:
                return False, i, spent
        for key, _, ttl in scopes:
            spent = self._spent(key, now)  # drops an expired period first
            expires = self.counters.get(key, (0, 0.0))[1] or (now + ttl if ttl else 0.0)
            self.counters[key] = (spent + amount, expires)
        return True, -1, 0

    async def settle(self, keys: list[str], delta: int) -> None:
        now = time.monotonic()
        for key in keys:
            _, expires = self.counters.get(key, (0, 0.0))
            self.counters[key] = (self._spent(key, now) + delta, expires)

    async def spent(self, key: str) -> int:
        return self._spent(key, time.monotonic())

    def _spent(self, key: str, now: float) -> int:
        value, expires = self.counters.get(key, (0, 0.0))
        if expires and expires < now:
            del self.counters[key]
            return 0
        return value

    # ------------------------------------------------------------ deployment cooldowns (this worker's own)

    async def set_cooldown(self, deployment: str, seconds: float) -> None:
        return None  # the worker's Health already holds it

    async def cooldowns(self, deployments: list[str]) -> dict[str, float]:
        return {}

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

    async def close(self) -> None:
        return None
