"""Tier-1 alerts for several replicas sharing one Redis: detected on the fleet's traffic, one alert per incident.

Each replica's alert runner (one worker per replica, see :class:`~gateway.observability.alerts.AlertRunner`)
folds its new records into per-bucket contributions, as the detector would, and adds them to Redis hashes, one
per time bucket (``HINCRBYFLOAT``: the fleet's sums build up whatever the order of the replicas). One runner of
the fleet holds a lease (``SET NX PX``, renewed each tick by its owner): the leader reloads the recent buckets
of the fleet's sums into its detector, judges them, and delivers what changes (log, webhooks); the incident
state (firing alerts, when each was last resolved) is kept in Redis, so a new leader carries on without paging
again. Every replica mirrors the fleet's alerts into its own store, so ``GET /admin/alerts`` and the dashboard
of each replica show them.

A replica that cannot reach Redis keeps its contributions and adds them when Redis answers again (each batch
once, even if a copy sent into a hung Redis lands when it wakes; while Redis is out only a probe is sent);
meanwhile it judges its own traffic (see :class:`~gateway.observability.alerts.AlertRunner`). Back, it hands over
what it raised (:meth:`Fleet.handover`): an alert for an incident the fleet has no alert for becomes the fleet's;
one for an incident the fleet (or another replica) already paged for becomes an alias of that alert, closed by
the same recovery; and it bumps the fleet's epoch, so the leader reloads the sums its traffic was added to. A
leader back from an outage waits a few ticks before judging, so the other replicas have handed theirs over.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sqlite3
import time
from typing import Any

import msgspec
import orjson

from gateway.config import Config

log = logging.getLogger("gateway.alerts")
SEP = "\x1f"
MAX_OVERHEAD = 2000  # overhead samples per bucket (the p99 is judged on these)

# Take the lease if it is free, renew it if it is ours: 1 = we lead.
LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# An alert a replica raised (or held) while cut off from the fleet, handed over: 1 = it is now the fleet's
# alert for its incident, 0 = the fleet already had one (ours, if another id, becomes its alias) or it resolved.
HANDOVER = """
local old = redis.call('HGET', KEYS[2], ARGV[3])
if old and cjson.decode(old)['state'] == 'resolved' then
  return 0
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cjson.decode(cur)['id'] ~= ARGV[3] then
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
    redis.call('PEXPIRE', KEYS[4], ARGV[5])
  end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
"""

# One replica's contributions, added once: a batch whose marker exists was added already (a write sent into a
# hung Redis lands when it wakes, though its sender saw a timeout and sends the batch again). KEYS[1]: the marker;
# ARGV: ttl (ms), the overhead cap, then 'h', hash, field, value | 'o', list, n, n values.
PUSH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
local i, cap = 3, tonumber(ARGV[2])
while i <= #ARGV do
  local key = ARGV[i + 1]
  if ARGV[i] == 'h' then
    redis.call('HINCRBYFLOAT', key, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  else
    local n = tonumber(ARGV[i + 2])
    for j = i + 3, i + 2 + n do
      redis.call('RPUSH', key, ARGV[j])
    end
    redis.call('LTRIM', key, 0, cap - 1)
    i = i + 3 + n
  end
  redis.call('PEXPIRE', key, ARGV[1])
end
return 1
"""

# The later of two resolve times (a cooldown a replica started while cut off).
LATER = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""


class Fleet:
    """The Redis side of fleet-wide alerting, for one replica's alert runner (a thread: a sync client)."""

    def __init__(self, config: Config) -> None:
        import redis

        state = config.state
        assert state.redis_url
        self.cfg = config.observability.alerts
        self.client: Any = redis.Redis.from_url(
            state.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        p = f"{state.key_prefix}:alerts"
        self.k_bucket, self.k_over = f"{p}:b:", f"{p}:o:"
        self.k_lease, self.k_active, self.k_resolved = f"{p}:leader", f"{p}:active", f"{p}:resolved"
        self.k_all, self.k_updated = f"{p}:all", f"{p}:updated"
        self.k_also, self.k_epoch, self.k_batch = f"{p}:also:", f"{p}:epoch", f"{p}:batch:"
        self.me = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self.lease = self.client.register_script(LEASE)
        self._handover = self.client.register_script(HANDOVER)
        self._later = self.client.register_script(LATER)
        self._push = self.client.register_script(PUSH)
        self.epoch: bytes | None = None  # the fleet's epoch the leader's sums were loaded at
        self.ttl_s = int(self.cfg.history_s + self.cfg.window_s + 4 * self.cfg.spike_window_s + 120)
        self.leading = False
        self.loaded_to: int | None = None  # the newest bucket the leader has loaded
        self.mirrored = 0.0

    # ------------------------------------------------------------ every replica

    def push(self, series: dict[tuple[str, str], Any], overhead: dict[int, list[float]], batch: str) -> None:
        """Add one replica's contributions (a collecting detector's buckets) to the fleet's sums, once per
        ``batch`` however often it is sent."""
        args: list[Any] = [self.ttl_s * 1000, MAX_OVERHEAD]
        for (signal, subject), s in series.items():
            for b, row in s.buckets.items():
                for i, v in enumerate(row):
                    args += ["h", f"{self.k_bucket}{b}", f"{signal}{SEP}{subject}{SEP}{i}", v]
        for b, values in overhead.items():
            if values:
                args += ["o", f"{self.k_over}{b}", len(values), *values]
        self._push(keys=[f"{self.k_batch}{batch}"], args=args)

    def mirror(self, conn: sqlite3.Connection, store: Any) -> None:
        """The fleet's alerts updated since the last look, into this replica's store."""
        since = self.mirrored
        ids = self.client.zrangebyscore(self.k_updated, since, "+inf", withscores=True)
        if not ids:
            return
        bodies = self.client.hmget(self.k_all, [i for i, _ in ids])
        for body in bodies:
            if body:
                store(conn, orjson.loads(body))
        conn.commit()
        self.mirrored = max(score for _, score in ids)

    def handover(self, alerts: list[Any], resolved: dict[tuple[str, str], float]) -> int:
        """A replica back from an outage: its alerts (raised, resolved or held meanwhile) and cooldowns to the
        fleet, then a new epoch. Returns how many of its firing alerts became the fleet's."""
        n, ms = 0, self.ttl_s * 1000
        for a in alerts:
            key, body = f"{a.signal}{SEP}{a.subject}", msgspec.json.encode(a)
            if a.state == "firing":
                keys = [self.k_active, self.k_all, self.k_updated, f"{self.k_also}{key}"]
                n += int(self._handover(keys=keys, args=[key, body, a.id, a.updated_at, ms]))
            else:
                self.client.hset(self.k_all, a.id, body)
                self.client.zadd(self.k_updated, {a.id: a.updated_at})
        for (signal, subject), ts in resolved.items():
            self._later(keys=[self.k_resolved], args=[f"{signal}{SEP}{subject}", ts])
        self.client.incr(self.k_epoch)
        return n

    # ------------------------------------------------------------ the leader

    def lead(self) -> bool:
        """Take or keep the lease; a runner that just became the leader reloads the incident state."""
        ms = int(max(3 * self.cfg.every_s, 5.0) * 1000)
        now_leading = bool(self.lease(keys=[self.k_lease], args=[self.me, ms]))
        epoch = self.client.get(self.k_epoch)
        if now_leading and (not self.leading or epoch != self.epoch):  # or a replica's outage was added
            self.loaded_to = None
        self.epoch = epoch
        self.leading = now_leading
        return now_leading

    def load(self, detector: Any, cb: int) -> None:
        """The fleet's sums of the buckets that may still change (all retained ones on taking the lead) into
        ``detector``, replacing what it held for them."""
        hist = detector.hist + detector.k + detector.fast + 2
        if self.loaded_to is None:
            lo = cb - hist
            self._load_state(detector)
        else:  # buckets still filling: what replicas add within a few of their ticks after the bucket ended
            lo = self.loaded_to - math.ceil((3 * self.cfg.every_s + self.cfg.lag_s) / detector.bs) - 1
        hi = cb + 1
        pipe = self.client.pipeline(transaction=False)
        for b in range(lo, hi + 1):
            pipe.hgetall(f"{self.k_bucket}{b}")
            pipe.lrange(f"{self.k_over}{b}", 0, -1)
        res = pipe.execute()
        for j, b in enumerate(range(lo, hi + 1)):
            rows: dict[tuple[str, str], list[float]] = {}
            for field, value in res[2 * j].items():
                signal, subject, i = field.decode().split(SEP)
                row = rows.setdefault((signal, subject), [])
                k = int(i)
                row.extend([0.0] * (k + 1 - len(row)))
                row[k] = float(value)
            detector.load(b, rows, [float(v) for v in res[2 * j + 1]])
        self.loaded_to = hi

    def _load_state(self, detector: Any) -> None:
        from gateway.observability.alerts import Alert

        for key, body in self.client.hgetall(self.k_active).items():
            a = msgspec.json.decode(body, type=Alert)
            detector.active[tuple(key.decode().split(SEP, 1))] = a
        for key, ts in self.client.hgetall(self.k_resolved).items():
            detector.last_resolved[tuple(key.decode().split(SEP, 1))] = float(ts)

    def take_aliases(self, a: Any) -> list[Any]:
        """The alerts replicas raised for the incident ``a`` resolves while they were cut off: resolved too."""
        key = f"{self.k_also}{a.signal}{SEP}{a.subject}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hvals(key)
        pipe.delete(key)
        bodies = pipe.execute()[0]
        out = []
        for body in bodies:
            alias = msgspec.json.decode(body, type=type(a))
            out.append(
                msgspec.structs.replace(
                    alias,
                    state="resolved",
                    updated_at=a.updated_at,
                    resolved_at=a.resolved_at,
                    value=a.value,
                    message=f"resolved: {alias.message}",
                )
            )
        return out

    def record(self, a: Any) -> None:
        """An alert raised or resolved by the leader: the fleet's incident state and its list of alerts."""
        key = f"{a.signal}{SEP}{a.subject}"
        body = msgspec.json.encode(a)
        pipe = self.client.pipeline(transaction=True)
        if a.state == "firing":
            pipe.hset(self.k_active, key, body)
        else:
            pipe.hdel(self.k_active, key)
            pipe.hset(self.k_resolved, key, a.updated_at)
        pipe.hset(self.k_all, a.id, body)
        pipe.zadd(self.k_updated, {a.id: a.updated_at})
        old = time.time() - 30 * 86400
        stale = self.client.zrangebyscore(self.k_updated, "-inf", old)
        if stale:
            pipe.hdel(self.k_all, *stale)
            pipe.zremrangebyscore(self.k_updated, "-inf", old)
        pipe.execute()

    def refresh(self, detector: Any) -> None:
        """Firing alerts whose value moved: the fleet's copy follows (``updated_at``), once per tick."""
        pipe = self.client.pipeline(transaction=False)
        for (signal, subject), a in detector.active.items():
            body = msgspec.json.encode(a)
            pipe.hset(self.k_active, f"{signal}{SEP}{subject}", body)
            pipe.hset(self.k_all, a.id, body)
            pipe.zadd(self.k_updated, {a.id: a.updated_at})
        pipe.execute()
