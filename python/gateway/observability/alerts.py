"""Tier-1 anomaly detection over the request records: alert immediately, once per incident, and say when it's over.

Signals (thresholds in ``observability.alerts``):

- ``provider_errors``: failed upstream attempts (5xx, timeouts) / attempts per deployment (= model x provider)
  over the window, above ``error_rate`` with at least ``min_requests`` attempts; or, for a provider that starts
  failing, ``min_failures`` failures at that rate within the spike window. While its circuit breaker is open a
  deployment gets only probes: the alert stays as long as every attempt in the window fails.
- ``rate_limit``: any rate-limit breach: the gateway's 429s per tenant and the providers' 429s per deployment,
  ``rate_limit_rejects`` or more in the window.
- ``cost_spike``: the spend rate per tenant, key and agent over the last ``spike_window_s`` against the baseline
  the detector learnt for that caller (a trimmed mean of its earlier buckets): ``cost_spike`` times the baseline,
  a robust z-score of at least ``z``, and at least ``cost_min_usd_per_min``. A runaway agent loop pages within
  one spike window.
- ``pii_spike``: a caller's (key's) PII detections per request over the spike window against its own baseline.
- ``overhead_p99``: the gateway's own p99 overhead over the window above ``overhead_p99_ms``.

A baseline is learnt only after ``min_history_s`` of a caller's traffic; while an alert is firing its baseline
is frozen (a runaway loop does not become the new normal). An incident is one alert (deduplicated on signal and
subject); it resolves when the condition has been false for a whole window, with a recovery notice, and the
same alert is not raised again within ``cooldown_s``. The :class:`Detector` is a pure function of the records
it is fed and the clock it is given (tests replay hours in seconds); the :class:`AlertRunner` feeds it from the
store, in the one worker holding the alerts lock, and delivers to the log, the store (``GET /admin/alerts``,
the dashboard) and webhooks (generic JSON or Slack-compatible).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import sqlite3
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import orjson

from gateway.config import AlertsConfig, AlertWebhook, Config

log = logging.getLogger("gateway.alerts")
_FAILED = re.compile(r"(\w+) from (\S+?)(?:,|$)")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id          TEXT PRIMARY KEY,
    tier        INTEGER NOT NULL,
    signal      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_at);
"""


class Alert(msgspec.Struct):
    """One incident: raised once, updated while it lasts, resolved once."""

    id: str
    tier: int
    signal: str
    subject: str
    state: str  # firing | resolved
    started_at: float
    updated_at: float
    value: float
    threshold: float
    baseline: float | None = None
    message: str = ""
    resolved_at: float | None = None
    detected_after_s: float | None = None  # from the first bucket that breached to the alert
    # the replica that raised it on its own traffic while the fleet's sums were out of reach (Redis down)
    replica: str | None = None


class _Series:
    """Per-bucket sums for one subject of one signal, with the first bucket it was seen in."""

    __slots__ = ("buckets", "first", "sums")

    def __init__(self, first: int) -> None:
        self.first = first
        self.buckets: dict[int, list[float]] = {}
        self.sums = [0.0, 0.0]  # over the whole life of the series: a cheap first look at the baseline

    def lifetime_mean(self, cb: int, i: int = 0) -> float:
        return self.sums[i] / max(1, cb - self.first + 1)

    def add(self, b: int, *values: float) -> None:
        for i, v in enumerate(values):
            self.sums[i] += v
        row = self.buckets.get(b)
        if row is None:
            self.buckets[b] = list(values)
        else:
            for i, v in enumerate(values):
                row[i] += v
        self.first = min(self.first, b)

    def get(self, b: int, i: int = 0) -> float:
        row = self.buckets.get(b)
        return row[i] if row else 0.0

    def total(self, lo: int, hi: int, i: int = 0) -> float:
        """Sum over buckets lo..hi inclusive."""
        return sum(self.get(b, i) for b in range(lo, hi + 1))

    def prune(self, before: int) -> None:
        for b in [b for b in self.buckets if b < before]:
            del self.buckets[b]


class Detector:
    """Tier-1 signals over a stream of records (dicts with the Record's fields)."""

    def __init__(self, cfg: AlertsConfig, config: Config | None = None) -> None:
        self.cfg = cfg
        self.bs = cfg.bucket_s
        self.k = max(1, round(cfg.window_s / self.bs))  # buckets in the window
        self.fast = max(1, round(cfg.spike_window_s / self.bs))
        self.min_hist = max(self.fast, round(cfg.min_history_s / self.bs))
        self.hist = max(self.min_hist * 2, round(cfg.history_s / self.bs))
        self.series: dict[tuple[str, str], _Series] = {}
        self.overhead: dict[int, list[float]] = {}
        self.active: dict[tuple[str, str], Alert] = {}
        self.quiet: dict[tuple[str, str], int] = {}  # evaluations an active alert's condition was false
        self.last_resolved: dict[tuple[str, str], float] = {}
        self.deployments: dict[str, str] = {}  # deployment id -> "group/provider"
        # active alerts this detector must not resolve: the fleet's, seen by a replica cut off from the fleet
        self.held: set[tuple[str, str]] = set()
        self.origin: str | None = None  # set on a replica's own detector: its alerts name the replica
        if config is not None:
            for name, g in config.models.items():
                for d in g.deployments:
                    self.deployments[d.id] = f"{name} on {d.provider}"

    # ------------------------------------------------------------ feeding

    def _s(self, signal: str, subject: str, b: int) -> _Series:
        s = self.series.get((signal, subject))
        if s is None:
            s = self.series[(signal, subject)] = _Series(b)
        return s

    def add(self, r: dict[str, Any]) -> None:
        b = int(r["ts"] // self.bs)
        status, code = r.get("status", 200), r.get("error_code") or ""
        flags = r.get("flags") or {}
        tenant, key, agent = r.get("tenant"), r.get("key_id"), r.get("agent")
        # upstream attempts: the one that served, and the failures noted by the router
        notes = flags.get("failed_attempts")
        text = ", ".join(notes) if isinstance(notes, list) else ""
        route = r.get("route") or ""
        if " after " in route:
            text = route.split(" after ", 1)[1]
        for st, dep in _FAILED.findall(text) if text else ():
            if st == "429":
                self._s("rate_limit", f"deployment {dep}", b).add(b, 1)
            self._s("provider_errors", dep, b).add(b, 1.0, 1.0 if st != "429" else 0.0)
        served = r.get("model_served")
        if served and status < 500:
            self._s("provider_errors", served, b).add(b, 1.0, 0.0)
        if code == "rate_limited" and tenant:
            self._s("rate_limit", f"tenant {tenant}", b).add(b, 1)
        if r.get("endpoint") not in ("chat", "embeddings", "count_tokens"):
            return
        cost = r.get("cost_usd") or 0.0
        for subject in (
            f"tenant {tenant}" if tenant else None,
            f"key {key}" if key else None,
            f"agent {tenant}/{agent}" if agent else None,
        ):
            if subject:
                self._s("cost_spike", subject, b).add(b, cost)
        if key:
            pii = flags.get("pii")
            hits = sum(pii.values()) if isinstance(pii, dict) else 0
            if code == "pii_rejected" and not hits:
                hits = 1
            self._s("pii_spike", f"key {key}", b).add(b, 1.0, float(hits))
        over = self.overhead.setdefault(b, [])
        if len(over) < 2000:
            over.append(r.get("overhead_ms") or 0.0)

    def load(self, b: int, rows: dict[tuple[str, str], list[float]], overhead: list[float]) -> None:
        """Bucket ``b`` of every series replaced by ``rows`` (a fleet's sums, see fleet.py)."""
        for s in self.series.values():
            old = s.buckets.pop(b, None)
            if old:
                for i, v in enumerate(old):
                    s.sums[i] -= v
        for (signal, subject), values in rows.items():
            self._s(signal, subject, b).add(b, *values)
        if overhead:
            self.overhead[b] = overhead[:2000]
        else:
            self.overhead.pop(b, None)

    # ------------------------------------------------------------ judging

    def evaluate(self, now: float) -> list[Alert]:
        """Alerts raised or resolved by the buckets complete at ``now``; call every few seconds."""
        cb = int((now - self.cfg.lag_s) // self.bs) - 1  # the last complete bucket
        lo = cb - self.k + 1
        breaches: dict[tuple[str, str], tuple[float, float, float | None, str]] = {}
        for (signal, subject), s in self.series.items():
            hit = getattr(self, f"_judge_{signal}")(s, subject, lo, cb)
            if hit is not None:
                breaches[(signal, subject)] = hit
        hit = self._judge_overhead(lo, cb)
        if hit is not None:
            breaches[("overhead_p99", "gateway")] = hit
        events = self._transition(breaches, now, cb)
        self._prune(cb)
        return events

    def _judge_provider_errors(self, s: _Series, subject: str, lo: int, cb: int) -> Any:
        attempts, failures = s.total(lo, cb, 0), s.total(lo, cb, 1)
        lo_f = cb - self.fast + 1
        f_attempts, f_failures = s.total(lo_f, cb, 0), s.total(lo_f, cb, 1)
        if attempts >= self.cfg.min_requests and failures / attempts >= self.cfg.error_rate:
            rate, n, span = failures / attempts, attempts, self.cfg.window_s
        elif f_failures >= self.cfg.min_failures and f_failures / f_attempts >= self.cfg.error_rate:
            # a provider that starts failing: a burst of failures pages before the window's rate shows it
            rate, n, span = f_failures / f_attempts, f_attempts, self.cfg.spike_window_s
        elif ("provider_errors", subject) in self.active and failures and failures == attempts:
            # its circuit open, the deployment gets only probes, and fails every one: not a recovery
            rate, n, span = 1.0, attempts, self.cfg.window_s
        else:
            return None
        where = self.deployments.get(subject, subject)
        msg = f"{rate:.0%} of {int(n)} upstream attempts to {subject} ({where}) failed in {span:.0f}s"
        return rate, self.cfg.error_rate, None, msg

    def _judge_rate_limit(self, s: _Series, subject: str, lo: int, cb: int) -> Any:
        n = s.total(lo, cb)
        if n < self.cfg.rate_limit_rejects:
            return None
        who = "the gateway refused" if subject.startswith("tenant") else "the provider answered 429 to"
        return (
            n,
            float(self.cfg.rate_limit_rejects),
            None,
            f"{who} {int(n)} requests of {subject} in {self.cfg.window_s:.0f}s",
        )

    def _baseline(self, s: _Series, key: tuple[str, str], cb: int, i: int = 0) -> list[float] | None:
        """The subject's earlier bucket values (zeros included), frozen at the start of an active alert."""
        end = cb - self.fast
        a = self.active.get(key)
        if a is not None:
            end = min(end, int(a.started_at // self.bs) - self.fast - 1)
        start = max(s.first, end - self.hist + 1)
        if end - start + 1 < self.min_hist:
            return None
        return [s.get(b, i) for b in range(start, end + 1)]

    def _judge_cost_spike(self, s: _Series, subject: str, lo: int, cb: int) -> Any:
        current = s.total(cb - self.fast + 1, cb) / self.fast
        per_min = current / self.bs * 60
        if per_min < self.cfg.cost_min_usd_per_min or current < self.cfg.cost_spike * 0.5 * s.lifetime_mean(
            cb
        ):
            return None  # far from a spike: spare the baseline
        history = self._baseline(s, ("cost_spike", subject), cb)
        if history is None:
            return None
        trimmed = sorted(history)[: max(1, math.ceil(len(history) * 0.95))]
        base = statistics.fmean(trimmed)
        spread = statistics.pstdev(trimmed) / math.sqrt(self.fast)
        z = (current - base) / (spread + 1e-12)
        if current < self.cfg.cost_spike * base or z < self.cfg.z:
            return None
        ratio = current / base if base else math.inf
        msg = f"spend of {subject} is ${per_min:.4f}/min, " + (
            f"{ratio:.0f}x its baseline of ${base / self.bs * 60:.4f}/min"
            if base
            else "from a baseline of $0"
        )
        return per_min, self.cfg.cost_spike, base / self.bs * 60, msg

    def _judge_pii_spike(self, s: _Series, subject: str, lo: int, cb: int) -> Any:
        lo_f = cb - self.fast + 1
        reqs, hits = s.total(lo_f, cb, 0), s.total(lo_f, cb, 1)
        if hits < self.cfg.pii_min_hits or not reqs:
            return None
        key = ("pii_spike", subject)
        reqs_h = self._baseline(s, key, cb, 0)
        if reqs_h is None:
            return None
        hits_h = self._baseline(s, key, cb, 1) or []
        base = sum(hits_h) / sum(reqs_h) if sum(reqs_h) else 0.0
        rate = hits / reqs
        expected = max(base, self.cfg.pii_floor) * reqs
        z = (hits - expected) / math.sqrt(expected + 1.0)  # how unlikely this many hits are at the baseline
        if rate < self.cfg.pii_spike * max(base, self.cfg.pii_floor) or z < self.cfg.z:
            return None
        msg = f"{subject} sent {rate:.2f} PII entities per request over {self.cfg.spike_window_s:.0f}s (baseline {base:.2f})"
        return rate, self.cfg.pii_spike, base, msg

    def _judge_overhead(self, lo: int, cb: int) -> Any:
        values = [v for b in range(lo, cb + 1) for v in self.overhead.get(b, ())]
        if len(values) < max(self.cfg.min_requests, 100):  # below 100 requests a p99 is just the slowest one
            return None
        values.sort()
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        if p99 <= self.cfg.overhead_p99_ms:
            return None
        return (
            p99,
            self.cfg.overhead_p99_ms,
            None,
            f"gateway p99 overhead is {p99:.1f} ms over {len(values)} requests",
        )

    def _transition(
        self, breaches: dict[tuple[str, str], tuple[float, float, float | None, str]], now: float, cb: int
    ) -> list[Alert]:
        events: list[Alert] = []
        for key, (value, threshold, baseline, msg) in breaches.items():
            a = self.active.get(key)
            self.quiet.pop(key, None)
            if a is not None:
                a.value, a.updated_at = value, now
                continue
            if now - self.last_resolved.get(key, -math.inf) < self.cfg.cooldown_s:
                continue  # the same incident flapping: no second page
            a = Alert(
                id=f"{key[0]}:{key[1]}:{int(now)}" + (f":{self.origin}" if self.origin else ""),
                tier=1,
                signal=key[0],
                subject=key[1],
                state="firing",
                started_at=now,
                updated_at=now,
                value=value,
                threshold=threshold,
                baseline=baseline,
                message=msg,
                replica=self.origin,
            )
            self.active[key] = a
            events.append(msgspec.structs.replace(a))
        for key in [k for k in self.active if k not in breaches and k not in self.held]:
            n = self.quiet[key] = self.quiet.get(key, 0) + 1
            if n * self.cfg.every_s < self.cfg.window_s:
                continue
            a = self.active.pop(key)
            self.quiet.pop(key, None)
            self.last_resolved[key] = now
            a.state, a.updated_at, a.resolved_at = "resolved", now, now
            a.message = f"resolved: {a.message}"
            events.append(msgspec.structs.replace(a))
        return events

    def _prune(self, cb: int) -> None:
        keep = cb - self.hist - self.k - self.fast - 2
        for key in list(self.series):
            s = self.series[key]
            s.prune(keep)
            if not s.buckets and key not in self.active:
                del self.series[key]
        for b in [b for b in self.overhead if b < cb - self.k - 1]:
            del self.overhead[b]


# ---------------------------------------------------------------- the runner: store → detector → delivery

COLUMNS = (
    "ts",
    "endpoint",
    "status",
    "error_code",
    "tenant",
    "key_id",
    "agent",
    "model_served",
    "route",
    "cost_usd",
    "overhead_ms",
    "flags",
)


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def store_alert(conn: sqlite3.Connection, a: Alert) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alerts (id, tier, signal, subject, state, started_at, updated_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a.id,
            a.tier,
            a.signal,
            a.subject,
            a.state,
            a.started_at,
            a.updated_at,
            msgspec.json.encode(a).decode(),
        ),
    )


def read_alerts(
    conn: sqlite3.Connection, state: str | None = None, since: float = 0.0, limit: int = 200
) -> list[dict[str, Any]]:
    sql = "SELECT body FROM alerts WHERE updated_at >= ?"
    args: list[Any] = [since]
    if state:
        sql += " AND state = ?"
        args.append(state)
    sql += " ORDER BY started_at DESC LIMIT ?"
    args.append(limit)
    try:
        return [orjson.loads(b) for (b,) in conn.execute(sql, args)]
    except sqlite3.OperationalError:  # no alert was ever stored
        return []


def render_webhook(a: Alert, hook: AlertWebhook) -> bytes:
    body = msgspec.to_builtins(a)
    if hook.format == "slack":
        icon = ":rotating_light:" if a.state == "firing" else ":white_check_mark:"
        where = (
            f" (seen by replica {a.replica} alone: the fleet's sums were out of reach)" if a.replica else ""
        )
        return orjson.dumps({"text": f"{icon} [tier {a.tier}] {a.signal} {a.subject}: {a.message}{where}"})
    return orjson.dumps({"source": "ai-gateway", **body})


class AlertRunner:
    """Reads new records from the store every ``every_s``, runs the detector, delivers its alerts.

    Runs in one worker only (the one holding ``<store>.alerts.lock``), so an incident is detected on the sum of
    every worker's traffic and delivered once. With ``state.redis_url`` (and ``alerts.shared``), the runners of
    every replica add their traffic to the fleet's sums in Redis and one of them judges and delivers
    (:mod:`gateway.observability.fleet`).

    While Redis is unreachable a replica does not go blind: it judges its own traffic (``local``, a detector fed
    every record all along, so its baselines are ready), without paging again for the fleet's incidents still
    firing (held: their recovery is the fleet's to announce). When Redis answers again it hands its alerts over
    to the fleet (one incident stays one alert; each page still gets its one recovery notice) and the fleet's
    sums, which its traffic of the outage is added to, are judged again."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cfg = config.observability.alerts
        self.detector = Detector(self.cfg, config)
        self.db = config.store.sqlite_path
        self._stop = threading.Event()
        self._lock_file: Any = None
        self.thread: threading.Thread | None = None
        self.seq = 0
        self.fleet: Any = None
        self.collect: Detector | None = None  # this replica's contributions not yet in the fleet's sums
        self.local: Detector | None = None  # this replica's own traffic, judged while Redis is unreachable
        self.degraded = False
        self.raised: dict[str, Alert] = {}  # what ``local`` raised or resolved while degraded, by id
        self.unsent: list[
            tuple[str, Detector]
        ] = []  # contributions sent (maybe) but not acknowledged, by batch
        self.grace_until = 0.0  # back from an outage, the leader waits for the replicas' hand-overs
        if self.cfg.shared and config.state.redis_url:
            from gateway.observability.fleet import Fleet

            self.fleet = Fleet(config)
            self.collect = Detector(self.cfg, config)
            self.local = Detector(self.cfg, config)

    def start(self) -> None:
        """Every worker starts one; only the one holding the lock detects (another takes over if it dies)."""
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)
        if self._lock_file is not None:
            self._lock_file.close()

    def _take_lock(self) -> bool:
        f = Path(self.db).with_suffix(".alerts.lock").open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock_file = f
        return True

    def _run(self) -> None:
        while not self._take_lock():
            if self._stop.wait(max(self.cfg.every_s, 5.0)):
                return
        conn = sqlite3.connect(self.db, timeout=30.0, isolation_level=None)
        ensure_schema(conn)
        row = conn.execute("SELECT MAX(seq) FROM records").fetchone()
        # learn from the last history window already in the store, so a restart does not start blind
        since = time.time() - self.cfg.history_s
        first = conn.execute("SELECT MIN(seq) FROM records WHERE ts >= ?", (since,)).fetchone()
        self.seq = (first[0] - 1) if first and first[0] else (row[0] or 0)
        while not self._stop.wait(self.cfg.every_s):
            try:
                self.tick(conn, time.time())
            except Exception:
                log.exception("the alert detector failed; it carries on")
        conn.close()

    def tick(self, conn: sqlite3.Connection, now: float) -> list[Alert]:
        fields = ", ".join(f"json_extract(b, '$.{c}')" for c in COLUMNS)
        rows = conn.execute(
            f"SELECT seq, {fields} FROM (SELECT seq, CAST(body AS TEXT) AS b FROM records WHERE seq > ?)"
            " ORDER BY seq",
            (self.seq,),
        ).fetchall()
        sink = self.detector if self.collect is None else self.collect
        for row in rows:
            self.seq = row[0]
            rec = dict(zip(COLUMNS, row[1:], strict=True))
            if rec["flags"]:
                rec["flags"] = orjson.loads(rec["flags"])
            sink.add(rec)
            if self.local is not None:
                self.local.add(rec)
        if self.fleet is not None:
            return self._fleet_tick(conn, now)
        events = self.detector.evaluate(now)
        for a in events:
            self.deliver(conn, a)
        return events

    def _fleet_tick(self, conn: sqlite3.Connection, now: float) -> list[Alert]:
        """Add this replica's traffic to the fleet's sums; the leader judges them and delivers. Without Redis:
        judge this replica's own traffic."""
        import redis

        fleet, events = self.fleet, []
        assert self.collect is not None and self.local is not None
        cb = int((now - self.cfg.lag_s) // self.local.bs) - 1
        try:
            if self.degraded:
                # only a probe while Redis is out: a write sent into a hung Redis lands when it wakes
                fleet.client.ping()
                self._rejoin(now)
            if self.collect.series or self.collect.overhead:
                self.unsent.append((os.urandom(8).hex(), self.collect))
                self.collect = Detector(self.cfg, self.config)
            while self.unsent:
                batch, c = self.unsent[0]
                fleet.push(c.series, c.overhead, batch)
                self.unsent.pop(0)
            if fleet.lead():
                if fleet.loaded_to is None:  # (again) the leader: start from the fleet's state
                    self.detector = Detector(self.cfg, self.config)
                fleet.load(self.detector, cb)
                if now >= self.grace_until:
                    for a in self.detector.evaluate(now):
                        # a recovery also closes the pages replicas raised for this incident while cut off
                        for b in [a, *(fleet.take_aliases(a) if a.state == "resolved" else ())]:
                            fleet.record(b)
                            self.deliver(conn, b)
                            events.append(b)
                    fleet.refresh(self.detector)
            fleet.mirror(conn, lambda c, body: store_alert(c, msgspec.convert(body, Alert)))
        except redis.RedisError as e:
            if not self.degraded:
                self._degrade(conn, now, e)
            for c in (self.collect, *(c for _, c in self.unsent)):
                c._prune(cb)  # kept for Redis's return, as long as the fleet would keep it
            for a in self.local.evaluate(now):
                self.raised[a.id] = a
                self.deliver(conn, a)
                events.append(a)
            return events
        self.local._prune(cb)
        return events

    def _degrade(self, conn: sqlite3.Connection, now: float, e: Exception) -> None:
        """Redis is out of reach: from now on this replica judges its own traffic. The fleet's incidents it
        knows of (its mirror; the leader's own) stay firing without a second page, and its cooldowns hold."""
        assert self.local is not None
        log.warning(
            "fleet alerts: Redis is unreachable (%s); detecting on this replica's own traffic until it answers",
            e,
        )
        known = [msgspec.convert(b, Alert) for b in read_alerts(conn, "firing", 0.0, 1000)]
        known += [
            msgspec.convert(b, Alert) for b in read_alerts(conn, "resolved", now - self.cfg.cooldown_s, 1000)
        ]
        known += list(self.detector.active.values()) if self.fleet.leading else []
        self.degraded, self.raised = True, {}
        self.fleet.leading, self.fleet.loaded_to = False, None
        local = self.local
        local.active, local.quiet, local.held, local.last_resolved = {}, {}, set(), {}
        local.origin = self.fleet.me.rsplit("-", 1)[-1]
        for a in sorted(known, key=lambda a: a.updated_at):
            key = (a.signal, a.subject)
            if a.tier != 1:
                continue
            if a.state == "firing":
                local.active[key] = msgspec.structs.replace(a)
                local.held.add(key)
            else:
                local.active.pop(key, None)
                local.held.discard(key)
                local.last_resolved[key] = a.resolved_at or a.updated_at

    def _rejoin(self, now: float) -> None:
        """Redis answers again: this replica's alerts of the outage go to the fleet, the leader reloads."""
        assert self.local is not None
        local = self.local
        held = [a for key, a in local.active.items() if key in local.held]
        n = self.fleet.handover([*self.raised.values(), *held], local.last_resolved)
        log.info(
            "fleet alerts: Redis answers again; back to detection on the fleet's traffic (%d alerts handed over)",
            n,
        )
        self.degraded, self.raised = False, {}
        self.grace_until = now + max(3 * self.cfg.every_s, 5.0)  # the other replicas' next ticks
        local.active, local.quiet, local.held, local.last_resolved, local.origin = {}, {}, set(), {}, None

    def deliver(self, conn: sqlite3.Connection, a: Alert) -> None:
        (log.warning if a.state == "firing" else log.info)(
            "alert tier %d %s %s [%s]: %s", a.tier, a.signal, a.subject, a.state, a.message
        )
        store_alert(conn, a)
        for hook in self.cfg.webhooks:
            if a.tier > hook.min_tier:
                continue
            req = urllib.request.Request(
                hook.url, data=render_webhook(a, hook), headers={"content-type": "application/json"}
            )
            try:
                urllib.request.urlopen(req, timeout=5).close()
            except OSError as e:
                log.warning("alert webhook %s failed: %s", hook.url.split("?")[0], e)
