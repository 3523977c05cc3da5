"""Cost-aware routing for an overall quality goal: which categories, and which of their prompts, a cheaper model
serves.

A category's quality gap (the reference model's bench score minus the cheaper model's, per item) is measured on
enough items to be trusted; what moving one request saves is not a category constant: it grows with the prompt
(input tokens are priced) and, through the answer's length, with the task. So the quality lost per dollar saved
is ranked per *bench item* (its category's gap over its own saving, predicted from its prompt's length), items are
moved in that order while the whole keeps ``target`` of the reference's quality, and each category gets the
prompt length from which its requests go to the cheaper model (``min_chars``; 0: all of them). At request time
that is one comparison of the prompt's length with the row's ``min_chars``.

The greedy cut is optimistic on the items it was fitted on (a category whose gap happened to look small is
moved first), so the goal the cut aims at is raised until the routing, fitted on k-1 folds of the bench items and
applied to the k-th, keeps ``target`` across the folds: the proposal's quality is checked out of sample before
any held-out item is seen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Obs:
    """One bench item: its category, its prompt's length, and each model's score and cost on it."""

    category: str
    chars: int
    score: dict[str, float]
    cost: dict[str, float]


@dataclass
class Move:
    """A category's route: ``model`` serves its prompts of ``min_chars`` characters or more (the rest stay on
    the reference model)."""

    model: str
    min_chars: int
    gap: float  # reference quality minus this model's, per item (bench)


@dataclass
class Allocation:
    moves: dict[str, Move]
    aimed: float  # the goal the fitted cut aims at (>= target)
    cv_kept: float  # quality kept out of fold (k-fold over the bench items)
    cv_saved: float
    folds: int
    notes: list[str] = field(default_factory=list)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ~ a + b x`` (b >= 0: a longer prompt never costs less); the mean when x does not vary."""
    if len(x) < 2 or float(np.ptp(x)) == 0.0:
        return float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        return float(y.mean()), 0.0
    return float(a), float(b)


def _fit(obs: Sequence[Obs], reference: str, aim: float) -> dict[str, Move]:
    by: dict[str, list[Obs]] = defaultdict(list)
    for o in obs:
        by[o.category].append(o)
    total_ref = sum(o.score[reference] for o in obs)
    allowed = (1 - aim) * total_ref
    # per category: the cheaper model with the least loss per dollar, its gap and its saving as a line in chars
    options: dict[str, tuple[str, float, float, float]] = {}
    for cat, os_ in by.items():
        x = np.array([o.chars for o in os_], dtype=np.float64)
        best: tuple[float, str, float, float, float] | None = None
        models = {m for o in os_ for m in o.score if m != reference}
        for m in sorted(models):
            have = [o for o in os_ if m in o.score and reference in o.score]
            if len(have) < len(os_):
                continue
            gap = float(np.mean([o.score[reference] - o.score[m] for o in os_]))
            a, b = _line(x, np.array([o.cost[reference] - o.cost[m] for o in os_]))
            mean_saving = a + b * float(x.mean())
            if mean_saving <= 0:
                continue
            ratio = max(gap, 0.0) / mean_saving
            if best is None or ratio < best[0]:
                best = (ratio, m, gap, a, b)
        if best is not None:
            options[cat] = best[1:]
    # every item's loss per dollar saved, from its category's gap and its own predicted saving
    ranked: list[tuple[float, float, str]] = []
    for cat, (_, gap, a, b) in options.items():
        for o in by[cat]:
            saving = a + b * o.chars
            if saving > 0:
                ranked.append((max(gap, 0.0) / saving, max(gap, 0.0), cat))
    ranked.sort()
    used, cut = 0.0, -1.0
    for ratio, loss, _ in ranked:
        if used + loss > allowed:
            break
        used += loss
        cut = ratio
    moves: dict[str, Move] = {}
    if cut < 0:
        return moves
    for cat, (m, gap, a, b) in options.items():
        if gap <= 0:
            moves[cat] = Move(m, 0, gap)
            continue
        # gap / (a + b chars) <= cut  <=>  chars >= (gap / cut - a) / b
        if cut == 0:
            continue
        need = gap / cut
        if b > 0:
            lo = max(0, math.ceil((need - a) / b))
            if lo <= max(o.chars for o in by[cat]):
                moves[cat] = Move(m, lo, gap)
        elif a >= need:
            moves[cat] = Move(m, 0, gap)
    return moves


def apply(moves: dict[str, Move], o: Obs, reference: str) -> str:
    mv = moves.get(o.category)
    return mv.model if mv is not None and o.chars >= mv.min_chars else reference


def _kept_saved(obs: Sequence[Obs], served: Sequence[str], reference: str) -> tuple[float, float]:
    q_ref = sum(o.score[reference] for o in obs)
    c_ref = sum(o.cost[reference] for o in obs)
    q = sum(o.score[m] for o, m in zip(obs, served, strict=True))
    c = sum(o.cost[m] for o, m in zip(obs, served, strict=True))
    return (q / q_ref if q_ref else 1.0), (1 - c / c_ref if c_ref else 0.0)


def allocate(
    obs: Sequence[Obs], reference: str, target: float, folds: int = 5, seed: int = 0, step: float = 0.0025
) -> Allocation:
    """The cheapest routing (per category: a model and the prompt length from which it serves) whose quality,
    checked by ``folds``-fold cross-validation over the bench items, keeps ``target`` of ``reference``'s."""
    obs = [o for o in obs if reference in o.score]
    order = np.random.default_rng(seed).permutation(len(obs))
    parts = [order[i::folds] for i in range(folds)] if len(obs) >= 2 * folds else []
    aim, kept, saved = target, 1.0, 0.0
    while parts:
        served: list[str] = [""] * len(obs)
        for k, part in enumerate(parts):
            train = [obs[i] for j, p in enumerate(parts) if j != k for i in p]
            moves = _fit(train, reference, aim)
            for i in part:
                served[i] = apply(moves, obs[i], reference)
        kept, saved = _kept_saved(obs, served, reference)
        if kept >= target or aim >= 1.0:
            break
        aim = min(1.0, aim + step)
    return Allocation(_fit(obs, reference, aim), aim, kept, saved, folds if parts else 0)
