"""The shared state backend: rate limits, budget reservations and PII vaults in Redis, so every worker of every
replica enforces the same limits.

Each decision is one Lua script (atomic on the server, one round trip): token buckets are checked and charged
all-or-nothing across every scope a request touches; budgets are reserved in every scope or in none. The server's
clock (``TIME``) is the only clock, so replicas never disagree about refills. All keys carry the ``{gw}`` hash tag:
on Redis Cluster they share one slot, which keeps multi-scope scripts legal (and bounds this backend to one shard).

When Redis is unreachable the ``on_redis_failure`` policy decides: ``fail_open`` answers from the in-process
backend (limits per worker, the record flagged ``state_degraded``), ``fail_closed`` rejects with 503
``state_unavailable``. Short socket timeouts mean a dead Redis costs a request at most ~0.5 s, never a hang;
the client reconnects on its own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.state.local import LimitCheck, LimitDecision, LocalState

log = logging.getLogger("gateway.state")

# KEYS: one bucket per check. ARGV: n, then per check capacity, window_s, cost. Returns
# {allowed, failed_index (1-based, 0 = none), retry_after_ms, remaining..., reset_ms...}. A bucket is a hash
# {tokens, ts_ms}; it refills at capacity/window per ms and starts full.
ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = tonumber(ARGV[1])
local state, remaining, reset = {}, {}, {}
local failed, retry = 0, 0
for i = 1, n do
  local cap = tonumber(ARGV[2 + (i - 1) * 3])
  local win = tonumber(ARGV[3 + (i - 1) * 3]) * 1000
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  tokens = math.min(cap, tokens + (now - ts) * cap / win)
  state[i] = {tokens, cap, win, cost}
  if failed == 0 and tokens < cost then
    failed = i
    if cost > cap then retry = -1 else retry = math.ceil((cost - tokens) * win / cap) end
  end
end
for i = 1, n do
  local tokens, cap, win, cost = state[i][1], state[i][2], state[i][3], state[i][4]
  if failed == 0 then
    tokens = tokens - cost
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', now)
    redis.call('PEXPIRE', KEYS[i], win * 2)
  end
  remaining[i] = tostring(tokens)
  reset[i] = math.ceil((cap - tokens) * win / cap)
end
local out = {failed == 0 and 1 or 0, failed, retry}
for i = 1, n do out[#out + 1] = remaining[i] end
for i = 1, n do out[#out + 1] = reset[i] end
return out
"""

# KEYS: one bucket. ARGV: capacity, window_s, delta (>0 refunds, <0 charges, may go below zero).
ADJUST = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local cap, win, delta = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000, tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
tokens = math.min(cap, math.min(cap, tokens + (now - ts) * cap / win) + delta)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], win * 2)
return tostring(tokens)
"""

# KEYS: one spend counter per scope (micro-dollars). ARGV: amount, then per key its limit and ttl_s (0 = none).
# All-or-nothing: returns {1} when reserved everywhere, else {0, failed_index, spent_there}.
RESERVE = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spent + amount > tonumber(ARGV[2 * i]) then return {0, i, spent} end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[2 * i + 1])
  if ttl > 0 and redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return {1}
"""


def tagged(key: str) -> str:
    return "{gw}:" + key


class RedisState:
    name = "redis"

    def __init__(self, url: str, on_failure: str = "fail_open") -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=5, max_connections=64
        )
        self.on_failure = on_failure
        self.local = LocalState()  # the safety net under fail_open
        self._acquire = self.client.register_script(ACQUIRE)
        self._adjust = self.client.register_script(ADJUST)
        self._reserve = self.client.register_script(RESERVE)
        self._down_since = 0.0

    def _degraded(self, e: BaseException) -> None:
        if not self._down_since:
            log.error("redis unavailable (%s): %s", type(e).__name__, self.on_failure)
        self._down_since = self._down_since or time.monotonic()
        if self.on_failure == "fail_closed":
            raise GatewayError(
                "state_unavailable",
                "The gateway's shared state (Redis) is unreachable and this gateway is configured to fail closed; "
                "retry in a few seconds.",
                headers={"retry-after": "2"},
            ) from None

    def _up(self) -> None:
        if self._down_since:
            log.warning("redis reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = 0.0

    @property
    def degraded(self) -> bool:
        return bool(self._down_since)

    # ------------------------------------------------------------ rate limits

    async def acquire(self, checks: list[LimitCheck], now: float | None = None) -> LimitDecision:
        args: list[Any] = [len(checks)]
        for c in checks:
            args += [c.capacity, c.window_s, c.cost]
        try:
            out = await self._acquire(keys=[tagged(c.key) for c in checks], args=args)
        except (RedisError, OSError) as e:
            self._degraded(e)
            return await self.local.acquire(checks)
        self._up()
        n = len(checks)
        allowed, failed, retry_ms = int(out[0]), int(out[1]) - 1, int(out[2])
        remaining = [float(x) for x in out[3 : 3 + n]]
        reset = [int(x) / 1000 for x in out[3 + n : 3 + 2 * n]]
        return LimitDecision(
            bool(allowed), failed, -1.0 if retry_ms < 0 else retry_ms / 1000, remaining, reset
        )

    async def adjust(self, check: LimitCheck, delta: float) -> None:
        try:
            await self._adjust(keys=[tagged(check.key)], args=[check.capacity, check.window_s, delta])
        except (RedisError, OSError) as e:
            self._degraded(e)
            await self.local.adjust(check, delta)

    # ------------------------------------------------------------ budgets (amounts in micro-dollars)

    async def reserve(self, scopes: list[tuple[str, int, int]], amount: int) -> tuple[bool, int, int]:
        """Reserve ``amount`` in every (key, limit, ttl_s) scope or in none: (ok, failed index, spent there)."""
        args: list[Any] = [amount]
        for _, limit, ttl in scopes:
            args += [limit, ttl]
        try:
            out = await self._reserve(keys=[tagged(k) for k, _, _ in scopes], args=args)
        except (RedisError, OSError) as e:
            self._degraded(e)
            return await self.local.reserve(scopes, amount)
        self._up()
        if int(out[0]) == 1:
            return True, -1, 0
        return False, int(out[1]) - 1, int(out[2])

    async def settle(self, keys: list[str], delta: int) -> None:
        """Correct a reservation by ``delta`` (actual - reserved) in every scope it was made in."""
        if not delta:
            return
        try:
            async with self.client.pipeline(transaction=True) as p:
                for k in keys:
                    p.incrby(tagged(k), delta)
                await p.execute()
        except (RedisError, OSError) as e:
            self._degraded(e)
            await self.local.settle(keys, delta)

    async def spent(self, key: str) -> int:
        try:
            return int(await self.client.get(tagged(key)) or 0)
        except (RedisError, OSError) as e:
            self._degraded(e)
            return await self.local.spent(key)

    # ------------------------------------------------------------ deployment cooldowns shared by every replica

    async def set_cooldown(self, deployment: str, seconds: float) -> None:
        until_ms = int((time.time() + seconds) * 1000)
        try:
            await self.client.set(tagged(f"cool:{deployment}"), until_ms, px=max(1, int(seconds * 1000)))
        except (RedisError, OSError) as e:
            self._degraded(e)

    async def cooldowns(self, deployments: list[str]) -> dict[str, float]:
        """Deployment -> cooldown end (unix seconds), for those some replica has cooled down."""
        try:
            values = await self.client.mget([tagged(f"cool:{d}") for d in deployments])
        except (RedisError, OSError):
            return {}
        return {d: int(v) / 1000 for d, v in zip(deployments, values, strict=True) if v is not None}

    # ------------------------------------------------------------ small maps with a TTL (PII vaults)

    async def get_map(self, key: str) -> dict[str, str]:
        try:
            raw = await self.client.hgetall(tagged(key))
        except (RedisError, OSError) as e:
            self._degraded(e)
            return await self.local.get_map(key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def put_map(self, key: str, mapping: dict[str, str], ttl_s: float) -> None:
        try:
            async with self.client.pipeline(transaction=True) as p:
                p.hset(tagged(key), mapping=mapping)
                p.expire(tagged(key), int(ttl_s))
                await p.execute()
        except (RedisError, OSError) as e:
            self._degraded(e)
            await self.local.put_map(key, mapping, ttl_s)

    async def close(self) -> None:
        await self.client.aclose()
