"""Routing strategies: pure functions that order a group's available deployments, best first.

Each returns the ordered list and a short reason for the first choice (it goes into ``x-gateway-route``).
The router walks the list for failover, so the order past the first element matters too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def weight(self) -> float: ...
    @property
    def priority(self) -> int: ...
    @property
    def unit_cost(self) -> float: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def inflight(self) -> int: ...


T = TypeVar("T", bound=Candidate)


def weighted(cands: Sequence[T], rng: random.Random) -> tuple[list[T], str]:
    """Weighted random without replacement (Efraimidis-Spirakis keys)."""
    if len(cands) == 1:
        return list(cands), "only"
    keyed = sorted(
        cands, key=lambda c: rng.random() ** (1.0 / c.weight) if c.weight > 0 else -1.0, reverse=True
    )
    total = sum(c.weight for c in cands) or 1.0
    return keyed, f"weighted p={keyed[0].weight / total:.2f}"


def priority(cands: Sequence[T], rng: random.Random) -> tuple[list[T], str]:
    ordered = sorted(cands, key=lambda c: c.priority)
    return ordered, f"priority {ordered[0].priority}"


def lowest_cost(cands: Sequence[T], rng: random.Random) -> tuple[list[T], str]:
    ordered = sorted(cands, key=lambda c: c.unit_cost)
    return ordered, f"lowest_cost ${ordered[0].unit_cost:.4g}/Mtok"


def least_busy(cands: Sequence[T], rng: random.Random) -> tuple[list[T], str]:
    ordered = sorted(cands, key=lambda c: (c.inflight, rng.random()))
    return ordered, f"least_busy inflight={ordered[0].inflight}"


TOLERANCE = 0.25  # deployments within 25% of the fastest EWMA count as equally fast and share the traffic
PROBE_EVERY_S = 0.5  # a slower deployment gets one request per this interval (per worker) to track recovery


def least_latency(
    cands: Sequence[T],
    rng: random.Random,
    latency: Callable[[T], float] = lambda c: c.latency_ms,
    idle_s: Callable[[T], float] = lambda c: 0.0,
) -> tuple[list[T], str]:
    """Least latency by EWMA, with two guards against herding: deployments within ``TOLERANCE`` of the fastest
    share traffic at random (tiny EWMA differences are noise), and a slower deployment idle for
    ``PROBE_EVERY_S`` gets one probe, so its EWMA follows its recovery while callers almost never wait on it
    (a time budget, not a share of traffic). Unmeasured deployments go first."""
    if len(cands) == 1:
        return list(cands), "only"
    lat = {id(c): latency(c) for c in cands}
    by_latency = sorted(cands, key=lambda c: lat[id(c)])
    unmeasured = [c for c in cands if lat[id(c)] == 0.0]
    best = lat[id(by_latency[0])]
    fast = [c for c in by_latency if lat[id(c)] <= best * (1 + TOLERANCE)]
    stale = [c for c in by_latency[len(fast) :] if idle_s(c) >= PROBE_EVERY_S]
    if unmeasured:
        first = rng.choice(unmeasured)
        reason = "least_latency unmeasured"
    elif stale:
        first = max(stale, key=idle_s)
        reason = f"least_latency probe ewma={lat[id(first)]:.0f}ms"
    else:
        first = rng.choice(fast)
        reason = f"least_latency ewma={lat[id(first)]:.0f}ms"
    return [first, *(c for c in by_latency if c is not first)], reason


def quality_order(cands: Sequence[T], first: str, dep_id: Callable[[T], str]) -> list[T]:
    """The ``quality`` strategy's order: the deployment its routing table chose first, then the rest priciest
    first (when the chosen one is down, the stronger model is the safer failover)."""
    chosen = [c for c in cands if dep_id(c) == first]
    return chosen + sorted((c for c in cands if dep_id(c) != first), key=lambda c: -c.unit_cost)


STRATEGIES: dict[str, Callable[..., tuple[list, str]]] = {
    "weighted": weighted,
    "priority": priority,
    "lowest_cost": lowest_cost,
    "least_busy": least_busy,
    "least_latency": least_latency,
}
