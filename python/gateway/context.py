"""Per-request state that every stage reads and writes, and the record it becomes when the request ends.

What crosses packages travels in typed fields of :class:`RequestContext` (the model group, the deployment that
served, the approval token, the session id, the body's size, the shared prompt-token counts and scopes).
``scratch`` is only for state private to one stage (the PII vault, a stage's reservation): a key in it is read
by the module that wrote it and nobody else. The one way to move a request to another model group is
:meth:`RequestContext.reroute`, which refuses a group the caller's key may not use or that has no deployment in
the caller's regions.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

from gateway.errors import GatewayError
from gateway.types import ChatRequest, ChatResponse, Principal, Usage

if TYPE_CHECKING:
    from gateway.routing.target import Target
    from gateway.scopes import Scope


class GroupAccess(NamedTuple):
    """What :meth:`RequestContext.may_route` needs to know about a model group: the names a key's allow-list
    may list it under (its own and its aliases) and the regions its deployments are in."""

    names: frozenset[str]
    regions: frozenset[str | None]


NO_GROUPS: Mapping[str, GroupAccess] = {}


class Acceptance(Protocol):
    """A predicate a stage hands the router (``ctx.accept``) for answers it must not pass on (e.g. output that
    does not match the requested JSON schema): the router asks the same deployment again ``retries`` times, then,
    with ``fallback``, the group's other deployments, and raises ``failure`` when none was accepted."""

    retries: int
    fallback: bool

    def check(self, ctx: RequestContext, deployment: str, resp: ChatResponse) -> bool:
        """True to accept ``resp``; False rejects it (the predicate records why, e.g. in ``ctx.flags``)."""
        ...

    def failure(self, ctx: RequestContext) -> GatewayError:
        """The caller's error when no answer was accepted."""
        ...


class Record(msgspec.Struct):
    """One structured record per request: the contract that the audit log, dashboards and spend reports read.

    Never holds prompt or completion text, PII values or credentials: only who, what, how much, how long.
    """

    request_id: str
    ts: float  # unix seconds at arrival
    endpoint: str  # chat | embeddings | messages | count_tokens | models
    dialect: str  # openai | anthropic
    status: int
    key_id: str | None = None
    tenant: str | None = None
    team: str | None = None
    user: str | None = None
    tags: list[str] | None = None
    agent: str | None = None
    agent_run: str | None = None
    model_requested: str | None = None
    model_served: str | None = None  # deployment id
    upstream_model: str | None = None
    provider: str | None = None
    region: str | None = None
    stream: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0
    ttfb_ms: float | None = None
    route: str | None = None
    category: str | None = None  # the request's task category (given by the caller or inferred)
    cache: str = "off"  # hit | semantic-hit | miss | bypass | off
    cache_similarity: float | None = None  # semantic hits: the neighbour's cosine similarity
    cache_saved_usd: float = 0.0  # hits: what the original call cost
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    flags: dict[str, Any] | None = None


# The W3C traceparent the next upstream call of this task sends (set by the router just before it calls a
# provider, read synchronously by Provider.post before its first await); None when the request is not traced.
UPSTREAM_TRACEPARENT: ContextVar[str | None] = ContextVar("upstream_traceparent", default=None)


class Attempt:
    """One upstream attempt of a traced request, for its span: where, why, when, and how it ended."""

    __slots__ = ("deployment", "end_ns", "error", "model", "provider", "reason", "start_ns", "status")

    def __init__(self, deployment: str, provider: str, model: str, reason: str, start_ns: int) -> None:
        self.deployment = deployment
        self.provider = provider
        self.model = model
        self.reason = reason
        self.start_ns = start_ns
        self.end_ns: int | None = None
        self.status: int | None = None
        self.error: str | None = None


# Request ids: a random per-process prefix plus a counter. Unique across workers and replicas, and free of
# per-request system calls (uuid4 reads the OS's random source every time, which is slow in sandboxed kernels).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def reseed_request_ids() -> None:
    """Called in each forked worker so two workers never share a prefix."""
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


class RequestContext:
    """Everything known about one request as it moves through the pipeline."""

    __slots__ = (
        "accept",
        "agent",
        "agent_run",
        "approval",
        "attempt_log",
        "attempts",
        "body_bytes",
        "cache",
        "cache_saved_usd",
        "cache_similarity",
        "category",
        "cost",
        "deployment",
        "dialect",
        "ended",
        "endpoint",
        "error",
        "flags",
        "group",
        "groups",
        "headers",
        "model",
        "pii_override",
        "principal",
        "provider",
        "region",
        "req",
        "request_id",
        "reroutes",
        "response_headers",
        "route",
        "scopes",
        "scratch",
        "session",
        "stage_log",
        "started",
        "started_wall",
        "status",
        "stream",
        "tags",
        "target",
        "thrifty",
        "token_counts",
        "trace",
        "ttfb",
        "upstream_model",
        "upstream_ns",
        "usage",
    )

    def __init__(self, endpoint: str, dialect: str, groups: Mapping[str, GroupAccess] = NO_GROUPS) -> None:
        self.request_id = new_request_id()
        self.started = time.perf_counter_ns()
        self.started_wall = time.time()
        self.ended: int | None = None
        self.endpoint = endpoint
        self.dialect = dialect
        self.principal: Principal | None = None
        self.req: ChatRequest | None = None
        self.model: str | None = None  # the model group asked for
        self.deployment: str | None = None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.region: str | None = None
        self.route: str | None = None
        self.attempts = 0
        self.stream = False
        self.usage = Usage()
        self.cost = 0.0
        self.upstream_ns = 0
        self.ttfb: int | None = None
        self.status = 200
        self.error: tuple[str, str] | None = None
        self.cache = "off"
        self.cache_similarity: float | None = None
        self.cache_saved_usd = 0.0
        self.tags: list[str] | None = None
        self.agent: str | None = None
        self.agent_run: str | None = None
        self.flags: dict[str, Any] = {}
        self.response_headers: dict[str, str] = {}
        # tracing (observability/tracing.py), only for sampled requests: the trace, each upstream attempt and
        # each stage's (name, start, end) in perf_counter ns
        self.trace: Any = None
        self.attempt_log: list[Attempt] = []
        self.stage_log: list[tuple[str, int, int]] = []
        # Hand-offs between packages (typed; never through ``scratch``):
        self.groups = groups  # every model group's names and regions, for ``may_route`` (the router's table)
        self.group: str | None = None  # the model group the request is routed to now (``reroute`` moves it)
        self.reroutes: list[tuple[str, str, str]] = []  # (from group, to group, reason), in order
        self.target: Target | None = None  # the deployment that served (set by the router; prices its cost)
        self.headers: Any = None  # the request's headers (RSGI), for stages that read per-request options
        self.approval: str | None = None  # ``x-gateway-approval``: a one-time approval token for the budget
        self.session: str | None = None  # ``x-gateway-session``: the caller's conversation id (PII vault)
        # the task category (``x-gateway-category`` / ``metadata.category``, or the quality group's classifier when
        # confident): what the ``quality`` strategy routes by, and a label of the record
        self.category: str | None = None
        # the caller's spend is on course to exhaust a budget before its period ends (the budget stage says so):
        # the ``quality`` strategy then picks the cheapest deployment that still meets the category's bar
        self.thrifty = False
        self.body_bytes = 0  # the request body's size: an upper bound of its prompt tokens
        self.token_counts: dict[tuple[str, bool], int] = {}  # prompt tokens per (encoding, exact), once
        self.scopes: list[Scope] | None = None  # who the request is, as budget/limit scopes (``scopes_of``)
        self.accept: Acceptance | None = None  # what answers the router may pass on (set by a stage)
        # (profile name, PiiConfig): the PII policy of the request's compliance profile (compliance → pii stage)
        self.pii_override: tuple[str, Any] | None = None
        self.scratch: dict[str, Any] = {}  # state private to one stage (e.g. the PII vault); see module doc

    # ------------------------------------------------------------ moving between model groups

    def may_route(self, group: str) -> bool:
        """Whether this caller may be served by ``group``: its key's model allow-list names the group (or one of
        its aliases), and, when the key is bound to regions, the group has a deployment in one of them. Every
        path that changes the group (fallbacks, downgrades, rate-limit fallback, budget downgrade) asks this."""
        p = self.principal
        if p is None:
            return True
        access = self.groups.get(group)
        if p.models:
            names = access.names if access is not None else (group,)
            if not any(p.may_use(n) for n in names):
                return False
        if p.residency and access is not None:
            return any(r in p.residency for r in access.regions)
        return True

    def note_refused(self, group: str, reason: str) -> None:
        """Record (once per group) that a move to ``group`` was refused: the record shows what was not done."""
        refused: list[dict[str, str]] = self.flags.setdefault("reroute_refused", [])
        if all(r["to"] != group for r in refused):
            refused.append({"to": group, "why": reason})

    def reroute(self, group: str, reason: str) -> bool:
        """Move the request to model group ``group`` (``reason`` says why, e.g. ``budget downgrade``).

        Returns False, and changes nothing, when the caller may not use that group (``may_route``): the caller
        then answers as if there were no such fallback (reject, or the original error). On success the group,
        the request's ``model`` and ``reroutes`` are updated."""
        if not self.may_route(group):
            self.note_refused(group, reason)
            return False
        self.reroutes.append((self.group or "", group, reason))
        self.group = group
        if self.req is not None:
            self.req.model = group
        return True

    def elapsed_ms(self) -> float:
        return ((self.ended or time.perf_counter_ns()) - self.started) / 1e6

    def record(self) -> Record:
        """Built by the record writer thread after the request ended (``ended`` is set), off the hot path."""
        total = self.elapsed_ms()
        upstream = self.upstream_ns / 1e6
        p = self.principal
        return Record(
            request_id=self.request_id,
            ts=self.started_wall,
            endpoint=self.endpoint,
            dialect=self.dialect,
            status=self.status,
            key_id=p.key_id if p else None,
            tenant=p.tenant if p else None,
            team=p.team if p else None,
            user=self.req.user if self.req is not None else None,
            tags=self.tags,
            agent=self.agent,
            agent_run=self.agent_run,
            model_requested=self.model,
            model_served=self.deployment,
            upstream_model=self.upstream_model,
            provider=self.provider,
            region=self.region,
            stream=self.stream,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cached_tokens=self.usage.cached_tokens,
            cache_creation_tokens=self.usage.cache_creation_tokens,
            reasoning_tokens=self.usage.reasoning_tokens,
            usage_estimated=self.usage.estimated,
            cost_usd=self.cost,
            latency_ms=round(total, 3),
            upstream_ms=round(upstream, 3),
            overhead_ms=round(max(0.0, total - upstream), 3),
            ttfb_ms=round(self.ttfb / 1e6, 3) if self.ttfb is not None else None,
            route=self.route,
            category=self.category,
            cache=self.cache,
            cache_similarity=self.cache_similarity,
            cache_saved_usd=self.cache_saved_usd,
            attempts=self.attempts,
            error_code=self.error[0] if self.error else None,
            error_message=self.error[1] if self.error else None,
            flags=self.flags or None,
        )
