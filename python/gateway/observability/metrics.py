"""Prometheus metrics, derived from the finished request records off the request path, exact across workers.

Every worker's record-writer thread folds each finished :class:`~gateway.context.Record` into plain in-process
tables (counters, histograms with fixed buckets) and, once a second, writes them as one snapshot file into a
directory shared by the workers (``gateway serve`` makes it fresh at start). ``GET /metrics``, answered by any
worker, sums the snapshot files of every worker (its own from memory, so it is never behind itself): one scrape
sees every request of every worker, and a worker that died keeps its counts in the sum, so counters never go
back. Gauges (queue depth, circuit state, record backlog) are sampled per worker and summed or maxed over the
workers that are alive.

Why not prometheus-client's multiprocess mode: measured on this deployment's kernel, each counter increment
there costs ~23 us and each histogram observation ~54 us (a pid check and an mmap write per operation, under a
lock), i.e. ~0.4 ms of GIL time per request for the ~18 updates a request makes. Folding into dicts costs a few
microseconds per request; prometheus-client still renders the exposition format.

Names and labels follow the OpenTelemetry GenAI semantic conventions in Prometheus form
(``gen_ai_client_operation_duration_seconds`` with ``gen_ai_operation_name``, ``gen_ai_provider_name``,
``gen_ai_request_model``, ``gen_ai_response_model``, ``error_type``); the gateway's own metrics are ``gateway_*``.
Labels that name callers (tenant, team, key, tag, agent) appear only for the scopes configured in
``observability.metrics.label_scopes``, each capped at ``max_label_values`` distinct values (then ``other``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from gateway.config import Config, MetricsConfig
from gateway.context import Record

ENV_DIR = "GATEWAY_METRICS_DIR"
PUBLISH_EVERY_S = 1.0
GAUGE_MAX_AGE_S = 10.0  # a worker whose snapshot is older is gone: its gauges no longer count

# Bucket bounds: the GenAI conventions' advice for durations and token counts; finer ones for the overhead.
DURATION_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
OVERHEAD_S = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
)
UPSTREAM_S = (0.001, 0.0025, 0.005, *DURATION_S)
QUEUE_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

# name -> (kind, help, label names, buckets for histograms, gauge merge over workers)
SPECS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...], str]] = {}


def _spec(
    name: str,
    kind: str,
    doc: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...] = (),
    merge: str = "sum",
) -> str:
    SPECS[name] = (kind, doc, labels, buckets, merge)
    return name


GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")
REQUESTS = _spec(
    "gateway_requests",
    "counter",
    "Requests answered, by endpoint, status and error code.",
    ("endpoint", "status", "error_code", "gen_ai_request_model", "tenant"),
)
OP_DURATION = _spec(
    "gen_ai_client_operation_duration_seconds",
    "histogram",
    "GenAI operation duration as the caller sees it (gateway and upstream).",
    (*GENAI, "error_type"),
    DURATION_S,
)
TOKEN_USAGE = _spec(
    "gen_ai_client_token_usage",
    "histogram",
    "Tokens used per operation, by gen_ai_token_type (input/output).",
    (*GENAI, "gen_ai_token_type"),
    TOKENS,
)
TTFT = _spec(
    "gen_ai_server_time_to_first_token_seconds",
    "histogram",
    "Time to the first streamed token, from the request's arrival.",
    GENAI,
    TTFT_S,
)
CATEGORY_DURATION = _spec(
    "gateway_request_duration_seconds",
    "histogram",
    "Model requests' duration as the caller sees it, per request category (bounded like the caller labels).",
    ("category",),
    DURATION_S,
)
OVERHEAD = _spec(
    "gateway_overhead_seconds",
    "histogram",
    "Time spent in the gateway itself (total minus upstream time).",
    ("endpoint",),
    OVERHEAD_S,
)
UPSTREAM = _spec(
    "gateway_upstream_duration_seconds",
    "histogram",
    "Time spent waiting on upstream providers, per request.",
    ("gen_ai_provider_name", "deployment"),
    UPSTREAM_S,
)
TOKENS_TOTAL = _spec(
    "gateway_tokens",
    "counter",
    "Tokens by type (input, output, cached, reasoning), model and tenant.",
    ("gen_ai_token_type", "gen_ai_request_model", "tenant"),
)
COST = _spec(
    "gateway_cost_usd",
    "counter",
    "Cost in USD, by model and by each configured caller scope (scope=tenant|team|key|tag|agent, id).",
    ("scope", "id", "gen_ai_request_model"),
)
REJECTIONS = _spec(
    "gateway_rejections",
    "counter",
    "Requests the gateway refused, by reason (rate_limit, budget, approval, pii, policy, auth, invalid_request…).",
    ("reason", "error_code", "tenant"),
)
ROUTING = _spec(
    "gateway_routing_decisions",
    "counter",
    "Which deployment served each request of a model group, and why (strategy, failover, fallback, hedge).",
    ("group", "deployment", "reason"),
)
FAILOVERS = _spec(
    "gateway_failovers",
    "counter",
    "Requests served by another deployment or group after an upstream failure.",
    ("group", "deployment"),
)
UPSTREAM_ERRORS = _spec(
    "gateway_upstream_errors",
    "counter",
    "Failed upstream attempts by deployment and status (timeout as 'timeout').",
    ("deployment", "status"),
)
PII = _spec(
    "gateway_pii_detections",
    "counter",
    "PII entities found in prompts, by entity type and tenant.",
    ("entity", "tenant"),
)
CACHE = _spec(
    "gateway_cache_requests",
    "counter",
    "Requests by cache status (hit, semantic-hit, miss, bypass).",
    ("status",),
)
CACHE_SAVED = _spec(
    "gateway_cache_saved_usd",
    "counter",
    "What the answers served from the cache cost originally.",
    ("gen_ai_request_model",),
)
QUEUE_WAIT = _spec(
    "gateway_queue_wait_seconds", "histogram", "Time requests waited in the rate-limit queue.", (), QUEUE_S
)
RETRY_REFUSALS = _spec(
    "gateway_retry_budget_refusals", "counter", "Retries refused by a model group's retry budget.", ()
)
DEGRADED = _spec(
    "gateway_state_degraded_requests",
    "counter",
    "Requests decided on local state because the shared state (Redis) was unreachable.",
    (),
)
RECORDS = _spec("gateway_records_written", "counter", "Request records written to the store.", ())
SPILLED = _spec(
    "gateway_records_spilled", "counter", "Request records the store refused, kept in the spill file.", ()
)
TRACES = _spec(
    "gateway_traced_requests",
    "counter",
    "Sampled requests handed to the trace exporter (outcome=sent) or dropped because it fell behind (dropped).",
    ("outcome",),
)
BACKLOG = _spec(
    "gateway_record_backlog", "gauge", "Request records waiting for the writer thread.", (), merge="sum"
)
QUEUE_DEPTH = _spec("gateway_queue_depth", "gauge", "Requests waiting in rate-limit queues.", (), merge="sum")
CIRCUIT = _spec(
    "gateway_circuit_state",
    "gauge",
    "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (the worst over workers).",
    ("group", "deployment"),
    merge="max",
)
COOLDOWN = _spec(
    "gateway_deployment_cooldown_seconds",
    "gauge",
    "Seconds until a deployment that answered 429 is used again (the longest over workers).",
    ("deployment",),
    merge="max",
)
INFLIGHT = _spec(
    "gateway_upstream_inflight", "gauge", "Upstream requests in flight per deployment.", ("deployment",)
)
STATE_DOWN = _spec(
    "gateway_state_degraded",
    "gauge",
    "1 while a worker cannot reach the shared state (Redis) and decides locally.",
    (),
    merge="max",
)
CONTRACT = _spec(
    "gateway_contract_events",
    "counter",
    "Contract and state counters of the workers: queued, admitted, timed out, soft-budget alerts, "
    "redis_round_trips, redis_round_trip_seconds (their summed time), redis_errors, redis_skipped_while_down.",
    ("event",),
)
WORKERS = _spec("gateway_workers", "gauge", "Worker processes publishing metrics.", (), merge="sum")

REJECT_REASONS = {
    "rate_limited": "rate_limit",
    "budget_exceeded": "budget",
    "approval_required": "approval",
    "pii_rejected": "pii",
    "model_not_allowed": "policy",
    "residency_violation": "policy",
    "content_filtered": "content_filter",
    "prompt_injection": "injection",
    "missing_api_key": "auth",
    "invalid_api_key": "auth",
    "invalid_json": "invalid_request",
    "invalid_request": "invalid_request",
    "unsupported_feature": "invalid_request",
    "body_too_large": "invalid_request",
    "model_not_found": "invalid_request",
}
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
}
OPERATIONS = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
_FAILED = re.compile(r"(\w+) from (\S+?)(?:,|$)")

# A request's category: the record's ``category`` (x-gateway-category, metadata.category or the quality group's
# classifier), else its first tag (x-gateway-tags, metadata.tags). The same rule in SQL, for the dashboard and the reports that read the record store.
CATEGORY_SQL = "COALESCE(json_extract(b, '$.category'), json_extract(b, '$.tags[0]'), '(none)')"


def category_of(r: Record) -> str | None:
    """The request category of a record (see ``CATEGORY_SQL``)."""
    return r.category or (r.tags[0] if r.tags else None)


def reject_reason(code: str) -> str | None:
    """The rejection family of an error code, None for upstream failures (they are not the gateway saying no)."""
    if code in REJECT_REASONS:
        return REJECT_REASONS[code]
    if code.startswith(("upstream_", "no_healthy", "internal", "state_", "schema_", "client_")):
        return None
    return code


_REASONS: dict[str | None, str] = {}


def route_reason(route: str | None) -> str:
    """The routing reason without its details: weighted, only, failover, fallback, hedge, context_fallback…"""
    hit = _REASONS.get(route)
    if hit is None:
        hit = _route_reason(route)
        if len(_REASONS) < 10_000:
            _REASONS[route] = hit
    return hit


def _route_reason(route: str | None) -> str:
    if not route:
        return "none"
    head = route.split(" after ", 1)[0].strip()
    for prefix, name in (("fallback", "fallback"), ("hedge", "hedge"), ("context", "context_fallback")):
        if head.startswith(prefix):
            return name
    return head.split(" ", 1)[0][:32] or "none"


class Bounded:
    """Caps the distinct values of each label (per worker) so a caller can't blow up the series count."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: str | None) -> str:
        if not value:
            return ""
        seen = self.seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= self.cap:
            return "other"
        seen.add(value)
        return value


class Tables:
    """One worker's counters (one-element lists, so a plan can hold them) and histograms (bucket counts,
    +Inf, sum), updated only by its record-writer thread."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self.hists: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self.gauges: dict[str, dict[tuple[str, ...], float]] = {}
        by_kind: dict[str, dict[str, Any]] = {
            "counter": self.counters,
            "histogram": self.hists,
            "gauge": self.gauges,
        }
        for name, (kind, *_rest) in SPECS.items():
            by_kind[kind][name] = {}

    def cell(self, name: str, labels: tuple[str, ...]) -> list[float]:
        t = self.counters[name]
        c = t.get(labels)
        if c is None:
            c = t[labels] = [0.0]
        return c

    def row(self, name: str, labels: tuple[str, ...]) -> tuple[list[float], tuple[float, ...]]:
        t = self.hists[name]
        bounds = SPECS[name][3]
        row = t.get(labels)
        if row is None:
            row = t[labels] = [0.0] * (len(bounds) + 2)
        return row, bounds

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        row, bounds = self.row(name, labels)
        row[bisect_left(bounds, value)] += 1
        row[-1] += value

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": {n: [[list(k), v[0]] for k, v in t.items()] for n, t in self.counters.items() if t},
            "hists": {n: [[list(k), v] for k, v in t.items()] for n, t in self.hists.items() if t},
            "gauges": {n: [[list(k), v] for k, v in t.items()] for n, t in self.gauges.items() if t},
        }


Plan = tuple[
    list[list[float]], list[tuple[list[float], str]], list[tuple[list[float], tuple[float, ...], str, float]]
]


class GatewayMetrics:
    """This worker's metrics: ``observe`` records (writer thread), ``sample`` live gauges, ``publish`` to the
    shared directory; ``render`` answers a scrape with the sum over every worker."""

    def __init__(self, cfg: MetricsConfig, directory: str | Path | None) -> None:
        self.cfg = cfg
        self.scopes = set(cfg.label_scopes)
        self.bound = Bounded(cfg.max_label_values)
        self.tables = Tables()
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self.dir = Path(directory) if directory else None
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self._published = 0.0
        self._gw: Any = None

    def attach(self, gw: Any) -> None:
        """The worker's gateway, read for live gauges (queue depth, circuits, backlog)."""
        self._gw = gw
        self.worker = f"{socket.gethostname()}-{os.getpid()}"

    # ------------------------------------------------------------ from records (writer thread)

    def __call__(self, contexts: list[Any], records: list[Record]) -> None:
        """The record writer's observer: fold a batch in, then publish at most once a second."""
        for r in records:
            self.observe(r)
        now = time.monotonic()
        if now - self._published >= PUBLISH_EVERY_S or (records and self._published == 0.0):
            self._published = now
            self.sample()
            self.publish()

    def observe(self, r: Record) -> None:
        """Fold one record in. What depends only on the record's labels (who, which model, which route, which
        outcome) is resolved once into a plan of table cells; a record then costs a few additions."""
        key = (
            r.endpoint, r.status, r.error_code, r.tenant, r.team, r.key_id, r.model_requested, r.upstream_model,
            r.model_served, r.provider, r.route, r.stream, r.agent, tuple(r.tags) if r.tags else None, r.cache,
            bool(r.attempts), bool(r.cost_usd), r.category,
        )  # fmt: skip
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 50_000:
                self._plans.clear()
            plan = self._plans[key] = self._plan(r)
        units, values, hists = plan
        for cell in units:
            cell[0] += 1.0
        for cell, attr in values:
            cell[0] += getattr(r, attr)
        for row, bounds, attr, scale in hists:
            v = getattr(r, attr)
            if v is not None:
                v *= scale
                row[bisect_left(bounds, v)] += 1
                row[-1] += v
        if r.flags:
            self._flags(r, r.flags)

    def _plan(self, r: Record) -> Plan:
        t, b = self.tables, self.bound
        units: list[list[float]] = []
        values: list[tuple[list[float], str]] = []
        hists: list[tuple[list[float], tuple[float, ...], str, float]] = []
        tenant = b("tenant", r.tenant) if "tenant" in self.scopes else ""
        model = b("model", r.model_requested) if r.error_code != "model_not_found" else "unknown"
        code = r.error_code or ""
        units.append(t.cell(REQUESTS, (r.endpoint, str(r.status), code, model, tenant)))
        units.append(t.cell(RECORDS, ()))
        if code and r.status >= 400:
            reason = reject_reason(code)
            if reason is not None:
                units.append(t.cell(REJECTIONS, (reason, code, tenant)))
        if r.cache and r.cache != "off":
            units.append(t.cell(CACHE, (b("cache", r.cache),)))
            if r.cache.endswith("hit"):
                values.append((t.cell(CACHE_SAVED, (model,)), "cache_saved_usd"))
        if r.endpoint in OPERATIONS or r.endpoint == "count_tokens":
            hists.append((*t.row(OVERHEAD, (r.endpoint,)), "overhead_ms", 0.001))
        op = OPERATIONS.get(r.endpoint)
        if op is None or r.model_requested is None:
            return units, values, hists
        provider = PROVIDER_NAMES.get(r.provider or "", r.provider or "")
        base = (op, provider, model, b("response_model", r.upstream_model))
        error = code if r.status >= 400 else ""
        hists.append((*t.row(OP_DURATION, (*base, error)), "latency_ms", 0.001))
        hists.append(
            (*t.row(CATEGORY_DURATION, (b("category", category_of(r)) or "none",)), "latency_ms", 0.001)
        )
        if r.status < 400:
            hists.append((*t.row(TOKEN_USAGE, (*base, "input")), "input_tokens", 1.0))
            if op == "chat":
                hists.append((*t.row(TOKEN_USAGE, (*base, "output")), "output_tokens", 1.0))
        for kind in ("input", "output", "cached", "reasoning"):
            values.append((t.cell(TOKENS_TOTAL, (kind, model, tenant)), f"{kind}_tokens"))
        if r.stream:
            hists.append((*t.row(TTFT, base), "ttfb_ms", 0.001))
        deployment = b("deployment", r.model_served)
        if r.attempts:
            hists.append((*t.row(UPSTREAM, (provider, deployment)), "upstream_ms", 0.001))
        if r.cost_usd:
            ids: list[tuple[str, str | None]] = [("tenant", r.tenant), ("team", r.team), ("key", r.key_id)]
            ids += [("tag", tag) for tag in r.tags or ()]
            ids.append(("agent", r.agent))
            for scope, ident in ids:
                if scope in self.scopes and ident:
                    values.append((t.cell(COST, (scope, b(scope, ident), model)), "cost_usd"))
            values.append((t.cell(COST, ("all", "", model)), "cost_usd"))
        reason = route_reason(r.route)
        if r.model_served:
            units.append(t.cell(ROUTING, (model, deployment, reason)))
        failed = _FAILED.findall(r.route.split(" after ", 1)[1]) if r.route and " after " in r.route else []
        for status, dep in failed:
            units.append(t.cell(UPSTREAM_ERRORS, (b("deployment", dep), status)))
        if r.model_served and (failed or reason == "fallback"):
            units.append(t.cell(FAILOVERS, (model, deployment)))
        return units, values, hists

    def _flags(self, r: Record, flags: dict[str, Any]) -> None:
        """What only some requests carry: PII counts, queueing, retries refused, every attempt failed."""
        t, b = self.tables, self.bound
        pii = flags.get("pii")
        if isinstance(pii, dict):
            tenant = b("tenant", r.tenant) if "tenant" in self.scopes else ""
            for entity, n in pii.items():
                t.cell(PII, (b("entity", str(entity)), tenant))[0] += float(n)
        queued = flags.get("queued_ms")
        if isinstance(queued, int | float):
            t.observe(QUEUE_WAIT, (), queued / 1000)
        if flags.get("retry_budget_exhausted"):
            t.cell(RETRY_REFUSALS, ())[0] += 1
        if flags.get("state_degraded"):
            t.cell(DEGRADED, ())[0] += 1
        notes = flags.get("failed_attempts")
        if isinstance(notes, list) and not (r.route and " after " in r.route):
            for status, dep in _FAILED.findall(", ".join(map(str, notes))):
                t.cell(UPSTREAM_ERRORS, (b("deployment", dep), status))[0] += 1
        if flags.get("degraded_to") and r.model_served:
            model = self.bound("model", r.model_requested)
            t.cell(FAILOVERS, (model, self.bound("deployment", r.model_served)))[0] += 1

    # ------------------------------------------------------------ live gauges and publishing

    def sample(self) -> None:
        """Gauges of this worker, read from its gateway (writer thread: reads only plain attributes)."""
        g, gw = self.tables.gauges, self._gw
        g[WORKERS] = {(): 1.0}
        if gw is None:
            return
        with contextlib.suppress(Exception):  # a gauge is never worth a failed write
            from gateway.telemetry.metrics import METRICS

            g[BACKLOG] = {(): float(len(gw.records.pending))}
            g[QUEUE_DEPTH] = {(): float(METRICS.values.get("queue_depth", 0))}
            self.tables.cell(SPILLED, ())[0] = float(gw.records.spilled)
            for k, v in METRICS.values.items():
                if k != "queue_depth":
                    self.tables.cell(CONTRACT, (k,))[0] = float(v)
            g[STATE_DOWN] = {(): 1.0 if getattr(gw.state, "degraded", False) else 0.0}
            tracer = getattr(getattr(gw, "obs", None), "tracer", None)
            if tracer is not None:
                self.tables.cell(TRACES, ("sent",))[0] = float(tracer.sent)
                self.tables.cell(TRACES, ("dropped",))[0] = float(tracer.dropped)
            now = time.monotonic()
            circuit: dict[tuple[str, ...], float] = {}
            cool: dict[tuple[str, ...], float] = {}
            inflight: dict[tuple[str, ...], float] = {}
            for group, targets in gw.router.targets.items():
                for tgt in targets:
                    h, dep = tgt.health, tgt.dep.id
                    circuit[(group, dep)] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}.get(h.state, 0.0)
                    cool[(dep,)] = max(0.0, h.cooldown_until - now)
                    inflight[(dep,)] = float(h.inflight)
            g[CIRCUIT], g[COOLDOWN], g[INFLIGHT] = circuit, cool, inflight

    def publish(self) -> None:
        if self.dir is None:
            return
        body = orjson.dumps({"worker": self.worker, "ts": time.time(), **self.tables.to_json()})
        tmp = self.dir / f".{self.worker}.tmp"
        with contextlib.suppress(OSError):
            tmp.write_bytes(body)
            tmp.replace(self.dir / f"{self.worker}.json")

    # ------------------------------------------------------------ reading (scrape, alerts, dashboard)

    def snapshots(self) -> list[dict[str, Any]]:
        """Every worker's latest tables; this worker's straight from memory."""
        own = {"worker": self.worker, "ts": time.time(), **self.tables.to_json()}
        out = [own]
        if self.dir is not None:
            for p in self.dir.glob("*.json"):
                if p.stem == self.worker:
                    continue
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    out.append(orjson.loads(p.read_bytes()))
        return out

    def read(self) -> Merged:
        return Merged(self.snapshots())

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.read()))
        return generate_latest(registry)


class Merged:
    """The sum over workers: counters and histograms of every worker ever seen, gauges of the live ones."""

    def __init__(self, snaps: Iterable[dict[str, Any]]) -> None:
        self.counters: dict[str, dict[tuple[str, ...], float]] = {}
        self.hists: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self.gauges: dict[str, dict[tuple[str, ...], float]] = {}
        now = time.time()
        for snap in snaps:
            for name, rows in snap.get("counters", {}).items():
                t = self.counters.setdefault(name, {})
                for labels, v in rows:
                    k = tuple(labels)
                    t[k] = t.get(k, 0.0) + v
            for name, rows in snap.get("hists", {}).items():
                t2 = self.hists.setdefault(name, {})
                for labels, v in rows:
                    k = tuple(labels)
                    cur = t2.get(k)
                    t2[k] = list(v) if cur is None else [a + c for a, c in zip(cur, v, strict=False)]
            if now - snap.get("ts", 0) > GAUGE_MAX_AGE_S:
                continue
            for name, rows in snap.get("gauges", {}).items():
                merge = SPECS.get(name, ("", "", (), (), "sum"))[4]
                t3 = self.gauges.setdefault(name, {})
                for labels, v in rows:
                    k = tuple(labels)
                    t3[k] = v if k not in t3 else (max(t3[k], v) if merge == "max" else t3[k] + v)

    def counter(self, name: str, **match: str) -> float:
        """The sum of a counter's series whose labels match ``match``."""
        idx = _indexes(name, match)
        return sum(v for k, v in self.counters.get(name, {}).items() if all(k[i] == m for i, m in idx))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """A counter summed per value of one label."""
        pos = SPECS[name][2].index(label)
        idx = _indexes(name, match)
        out: dict[str, float] = {}
        for k, v in self.counters.get(name, {}).items():
            if all(k[i] == m for i, m in idx):
                out[k[pos]] = out.get(k[pos], 0.0) + v
        return out

    def quantile(self, name: str, q: float, **match: str) -> float | None:
        """A quantile of a histogram over the matching series (linear within the bucket, as PromQL does)."""
        bounds = SPECS[name][3]
        idx = _indexes(name, match)
        total = [0.0] * (len(bounds) + 2)
        for k, row in self.hists.get(name, {}).items():
            if all(k[i] == m for i, m in idx):
                total = [a + c for a, c in zip(total, row, strict=False)]
        return bucket_quantile(bounds, total[:-1], q)


def bucket_quantile(bounds: tuple[float, ...], counts: list[float], q: float) -> float | None:
    n = sum(counts)
    if n == 0:
        return None
    rank, seen = q * n, 0.0
    for i, c in enumerate(counts):
        if seen + c >= rank and c:
            if i >= len(bounds):
                return bounds[-1]
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * (rank - seen) / c
        seen += c
    return bounds[-1]


def _indexes(name: str, match: dict[str, str]) -> list[tuple[int, str]]:
    labels = SPECS[name][2]
    return [(labels.index(k), v) for k, v in match.items()]


class _Collector:
    """Hands the merged tables to prometheus-client's exposition writer."""

    def __init__(self, merged: Merged) -> None:
        self.m = merged

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for name, (kind, doc, labels, bounds, _merge) in SPECS.items():
            if kind == "counter":
                fam: Any = CounterMetricFamily(name, doc, labels=labels)
                for k, v in self.m.counters.get(name, {}).items():
                    fam.add_metric(list(k), v)
            elif kind == "gauge":
                fam = GaugeMetricFamily(name, doc, labels=labels)
                for k, v in self.m.gauges.get(name, {}).items():
                    fam.add_metric(list(k), v)
            else:
                fam = HistogramMetricFamily(name, doc, labels=labels)
                for k, row in self.m.hists.get(name, {}).items():
                    acc, buckets = 0.0, []
                    for le, c in zip((*(_le(x) for x in bounds), "+Inf"), row[:-1], strict=True):
                        acc += c
                        buckets.append((le, acc))
                    fam.add_metric(list(k), buckets, row[-1])
            yield fam


def _le(x: float) -> str:
    return repr(float(x))


# ---------------------------------------------------------------- process set-up


def prepare_dir(cfg: Config, port: int) -> str | None:
    """Called once by ``gateway serve`` before the workers start: a fresh shared directory for this server."""
    if not cfg.observability.metrics.enabled:
        return None
    d = cfg.observability.metrics.dir or str(Path(cfg.store.sqlite_path).parent / f"metrics-{port}")
    shutil.rmtree(d, ignore_errors=True)
    Path(d).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = d
    return d


def serve_port(cfg: Config, directory: str, host: str) -> Any:
    """``observability.metrics.port``: ``GET /metrics`` on a port of its own, answered by ``gateway serve``'s
    supervising process from the workers' shared snapshots (a thread; the workers' event loops never see these
    scrapes). Honours ``require_admin_key``. Returns the HTTP server (``shutdown()`` stops it)."""
    import http.server
    import threading

    from gateway.observability.http import PROM_TYPE, may_read

    port = cfg.observability.metrics.port
    metrics = GatewayMetrics(cfg.observability.metrics, directory)
    metrics.worker = f"{socket.gethostname()}-{os.getpid()}-supervisor"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                return self._answer(404, b'{"error": "only GET /metrics is served on this port"}')
            if cfg.observability.metrics.require_admin_key and not may_read(cfg, self.headers):
                return self._answer(
                    401, b'{"error": "GET /metrics needs the admin key or the dashboard key"}'
                )
            self._answer(200, metrics.render(), PROM_TYPE)

        def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port or 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server


def for_worker(cfg: Config) -> GatewayMetrics | None:
    """This worker's metrics (None when disabled); shared through the directory ``gateway serve`` prepared."""
    if not cfg.observability.metrics.enabled:
        return None
    d = os.environ.get(ENV_DIR)
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
    return GatewayMetrics(cfg.observability.metrics, d)
