"""What the state backends exchange with their callers: rate-limit checks and decisions, budget charges and
reservations, and the key naming both backends share.

Keys are logical (``{tenant:acme}:bud:m:2026-11``); the Redis backend adds its prefix. The part in braces is the
scope the key belongs to and doubles as the Redis Cluster hash tag: all keys of one scope land in one slot, so a
script that touches several keys of one scope is always legal; keys of different scopes are touched by one script
per scope on a cluster (see ``state/redis.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.state.policies import Policies


def scope_tag(kind: str, ident: str) -> str:
    """``{kind:ident}``: a scope's hash tag. Braces inside the id would end the tag early, so they are replaced."""
    return "{" + f"{kind}:{ident}".replace("{", "(").replace("}", ")") + "}"


def tag_of(key: str) -> str:
    """The hash tag of a key (what Redis Cluster hashes), or the whole key when it has none."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def group_by_tag(keys: list[str]) -> list[list[int]]:
    """Indexes of ``keys`` grouped by hash tag, in order of first appearance: one script call per group."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(tag_of(k), []).append(i)
    return list(groups.values())


@dataclass(slots=True)
class LimitCheck:
    """One bucket a request must fit in: ``capacity`` units per ``window_s`` seconds; ``cost`` units asked."""

    key: str
    capacity: float
    window_s: float
    cost: float
    scope: str = ""  # what a reject names: "key 'a' requests per minute"
    kind: str = "requests"  # requests | tokens (for the x-ratelimit-* header names)


@dataclass(slots=True)
class LimitDecision:
    allowed: bool
    failed: int = -1  # index of the first check that did not fit
    retry_after_s: float = 0.0  # -1: the cost exceeds the capacity, it never fits
    remaining: list[float] = field(default_factory=list)
    reset_s: list[float] = field(default_factory=list)
    degraded: bool = False  # answered by the in-process fallback while Redis was unreachable


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget counter a reservation is made in, in integer nano-dollars.

    A counter is a hash of slots. A calendar period or a lifetime uses slot 0 of a key named after the period; a
    rolling window sums slots ``lo..hi`` (time slices of the window) and charges slot ``hi``.
    """

    key: str
    limit: int
    ttl_s: int = 0  # 0: never expires
    lo: int = 0
    hi: int = 0


@dataclass(slots=True)
class Reservation:
    ok: bool
    failed: int = -1  # index of the charge that would have been overspent
    spent: list[int] = field(
        default_factory=list
    )  # ok: each counter after the reservation; else the failing one
    degraded: bool = False


class StateBackend(Protocol):
    """The one interface of shared state (``LocalState`` in-process, ``RedisState`` across replicas): same
    semantics either way. Stages, the router and the admin API see only this."""

    name: str  # local | redis
    policies: Policies  # run-time budget and limit rules, set by ``make_state``

    @property
    def degraded(self) -> bool:
        """True while decisions are answered without the shared backend (Redis unreachable)."""
        ...

    # rate limits (GCRA buckets), all or nothing
    async def acquire(self, checks: list[LimitCheck], now: float | None = None) -> LimitDecision: ...
    async def adjust(self, check: LimitCheck, delta: float) -> None: ...

    # budgets: reserve before the call, settle (delta = actual - reserved) after it
    async def reserve(self, charges: list[Charge], amount: int) -> Reservation: ...
    async def settle(self, charges: list[Charge], delta: int) -> None: ...
    async def spent(self, charge: Charge) -> int: ...
    async def sync(self) -> None: ...

    # deployment cooldowns shared by every replica (a 429 seen anywhere)
    async def set_cooldown(self, deployment: str, seconds: float) -> None: ...
    async def cooldowns(self, deployments: list[str] | None = None) -> dict[str, float]: ...
    async def clear_cooldowns(self, deployments: list[str]) -> None: ...

    # single-use approval tokens
    async def put_approval(self, token_hash: str, key_id: str, max_micros: int, ttl_s: float) -> None: ...
    async def take_approval(self, token_hash: str, key_id: str, cost_micros: int) -> bool: ...

    # run-time rules (admin API), metrics snapshots, small maps (the PII session vault)
    async def load_policies(self) -> dict[tuple[str, str, str], dict[str, Any]] | None: ...
    async def put_policy(self, kind: str, scope: str, ident: str, rule: dict[str, Any] | None) -> None: ...
    async def publish_metrics(self, worker: str, snapshot: dict[str, Any], ttl_s: float) -> None: ...
    async def read_metrics(self, max_age_s: float) -> dict[str, dict[str, Any]]: ...
    async def get_map(self, key: str) -> dict[str, str]: ...
    async def put_map(self, key: str, mapping: dict[str, str], ttl_s: float) -> None: ...
    async def incr_map(self, key: str, increments: dict[str, float], ttl_s: float) -> dict[str, float]: ...
    async def close(self) -> None: ...
