"""Which deployments may serve a request, and in what order: a pure function of the group, the caller and the
deployments' health. The router (``router.py``) only executes the plan this produces.

Hard constraints first (they are never relaxed): residency, the caller's version pin, the canary split, an
explicit ``only``/``exclude``, the context window. Then health (cooldown, open circuit, latency outliers).
Then the group's strategy orders what is left.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import ModelGroup
from gateway.routing.strategies import STRATEGIES, least_latency, quality_order


@dataclass(frozen=True, slots=True)
class Caller:
    """What about the caller constrains routing."""

    sticky: str = ""  # key id or user: what canary stickiness hashes
    residency: tuple[str, ...] = ()
    pin: str | None = None  # exact upstream model the caller is pinned to in this group
    # Prompt size in tokens, or an upper bound of it (the body's bytes: a BPE token is at least one byte) until
    # some deployment's context window makes an exact count worth its cost.
    prompt_bound: int = 0


def canary_bucket(sticky: str, group: str) -> float:
    """A stable number in [0, 100) per caller and group: the same caller always lands on the same side."""
    h = hashlib.blake2b(f"{group}\0{sticky}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % 10_000 / 100


def eligible(group_name: str, group: ModelGroup, targets: list[Any], caller: Caller) -> tuple[list[Any], str]:
    """Targets that satisfy the hard constraints, and a note on which constraint decided (may be empty)."""
    out = [t for t in targets if not caller.residency or t.dep.region in caller.residency]
    pin = caller.pin or group.pin
    note = ""
    if pin is not None:
        out = [t for t in out if t.dep.model == pin]
        note = f"pinned {pin}"
    elif group.canary is not None:
        c = group.canary
        in_canary = canary_bucket(caller.sticky, group_name) < c.percent
        out = [t for t in out if (t.dep.id == c.deployment) == in_canary] or out
        if in_canary and any(t.dep.id == c.deployment for t in out):
            note = f"canary {c.percent:g}%"
    return out, note


def fits_context(t: Any, prompt_tokens: int) -> bool:
    window = t.dep.context_window
    return window is None or prompt_tokens <= window


class QualityChooser(Protocol):
    def choose(
        self,
        category: str | None,
        canary_bucket: float,
        thrifty: bool = False,
        chars: Callable[[], int] | None = None,
    ) -> tuple[str, str]: ...


def order(
    group: ModelGroup,
    healthy: list[Any],
    rng: random.Random,
    stream: bool,
    now: float,
    quality: QualityChooser | None = None,
    category: str | None = None,
    sticky: str = "",
    thrifty: bool = False,
    chars: Callable[[], int] | None = None,
) -> tuple[list[Any], str]:
    if quality is not None:  # the ``quality`` strategy: the routing table's deployment for the category
        bucket = canary_bucket(sticky, category or "") if category else 100.0
        first, why = quality.choose(category, bucket, thrifty, chars)
        ordered = quality_order(healthy, first, lambda t: t.dep.id)
        if ordered[0].dep.id != first:
            why += f"; {first} unavailable here → {ordered[0].dep.id}"
        return ordered, why
    if group.strategy == "least_latency":
        return least_latency(
            healthy, rng, lambda t: t.health.latency_ms(stream), lambda t: now - t.health.last_attempt
        )
    return STRATEGIES[group.strategy](healthy, rng)


def reachable_groups(groups: Mapping[str, ModelGroup], group: str) -> list[str]:
    """The group and every group a request to it may end up in (fallbacks, context/content fallbacks, the
    degrade group), transitively."""
    seen: list[str] = []
    todo = [group]
    while todo:
        name = todo.pop()
        if name in seen or name not in groups:
            continue
        seen.append(name)
        g = groups[name]
        more = (g.context_fallback, g.content_policy_fallback, g.on_unavailable.group)
        todo += [*g.fallbacks, *(m for m in more if m is not None)]
    return seen
