"""The ``quality`` strategy's policy for one model group: which deployment serves a request category.

Rows come from the group's routing table file (``gateway bench`` writes it) and its inline ``categories``; a
row's model may name a deployment id, an upstream model, or the bench's model group (matched through that group's
upstream model). Category-less requests and unknown categories go to ``default`` (else the priciest deployment:
the strong model). A row's ``candidate`` gets ``canary_percent`` of the category's callers (sticky per caller).
A row's ``min_chars`` (a cost-aware proposal: ``gateway.quality.allocate``) keeps the category's prompts shorter
than that on the default: what they would save is worth less than the quality they would risk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.config import ModelGroup, QualityRouting


class TableError(ValueError):
    pass


SPEND_AWARE = "spend-aware"  # in a route's reason when the caller's spend pace chose a cheaper deployment


def prompt_chars(contents: Iterable[Any]) -> int:
    """The characters of a prompt's text (message contents: strings or lists of typed parts): what a row's
    ``min_chars`` is compared with, in the bench's proposal and on the request path alike."""
    n = 0
    for c in contents:
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict):
                    t = part.get("text")
                    if isinstance(t, str):
                        n += len(t)
    return n


class Row:
    """One category's route: the deployment serving it now (``benched`` is what the table chose; they differ
    once the closed loop has demoted it), the quality bar, and the bench evidence (the posterior's prior)."""

    __slots__ = (
        "benched",
        "candidate",
        "deployment",
        "explored",
        "min_chars",
        "n",
        "priors",
        "quality",
        "reason",
        "seen",
        "threshold",
    )

    def __init__(
        self,
        deployment: str,
        threshold: float | None,
        candidate: str | None,
        reason: str,
        quality: float | None = None,
        n: int = 0,
        min_chars: int = 0,
    ) -> None:
        self.deployment = self.benched = deployment
        self.min_chars = (
            min_chars  # the benched deployment serves prompts this long or longer; shorter: default
        )
        self.threshold = threshold
        self.candidate = candidate
        self.reason = reason
        self.quality = quality
        self.n = n
        self.seen = 0  # requests of this category routed here (this worker): the exploration budget's base
        self.explored = 0
        # deployment -> (bench quality, bench items): every measured model's prior (the chosen one's included)
        self.priors: dict[str, tuple[float, int]] = {} if quality is None else {deployment: (quality, n)}


def read_table(path: str | Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TableError(f"routing table {path}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("categories", {}), dict):
        raise TableError(f"routing table {path}: expected a mapping with categories")
    return doc


class QualityPolicy:
    """Category → deployment for one group (built at start and on every reload)."""

    def __init__(
        self, group: ModelGroup, groups: Mapping[str, ModelGroup], prices: Mapping[str, float]
    ) -> None:
        q = group.quality or QualityRouting()
        self.spec = q
        deps = group.deployments
        ids = {d.id for d in deps}
        by_model = {d.model: d.id for d in deps}

        def resolve(name: str, where: str) -> str:
            if name in ids:
                return name
            if name in by_model:
                return by_model[name]
            other = groups.get(name)
            if other is not None:
                for d in other.deployments:
                    if d.model in by_model:
                        return by_model[d.model]
            raise TableError(f"{where}: {name!r} is no deployment, upstream model or group of this group")

        doc = read_table(q.table) if q.table else {"categories": {}}
        self.default = (
            resolve(q.default, "quality.default")
            if q.default
            else max(deps, key=lambda d: prices.get(d.id, 0.0)).id
        )
        rows: dict[str, Row] = {}
        for cat, row in (doc.get("categories") or {}).items():
            r = row if isinstance(row, dict) else {"model": row}
            dep = resolve(str(r.get("model")), f"table {q.table}: {cat}")
            cand = resolve(str(r["candidate"]), f"table {q.table}: {cat}") if r.get("candidate") else None
            t = r.get("threshold")
            q_ = r.get("quality")
            row_ = rows[str(cat)] = Row(
                dep,
                None if t is None else float(t),
                cand,
                "table",
                None if q_ is None else float(q_),
                int(r.get("n") or 0),
                int(r.get("min_chars") or 0),
            )
            for name, m in (r.get("models") or {}).items():
                if isinstance(m, dict) and m.get("quality") is not None:
                    d = resolve(str(name), f"table {q.table}: {cat}.models")
                    row_.priors[d] = (float(m["quality"]), int(m.get("n") or 0))
        for cat, name in q.categories.items():
            rows[cat] = Row(resolve(name, f"quality.categories.{cat}"), None, None, "config")
        self.rows = rows
        # cheaper deployments first: what exploration tries (never the default's price or above)
        self.by_price = sorted(deps, key=lambda d: prices.get(d.id, 0.0))
        self.prices = dict(prices)
        self.explore = q.explore
        self.estimate: Callable[[str, str], float] | None = None  # (category, deployment) → mean (the loop's)

    def demote(self, category: str, to: str, why: str) -> None:
        row = self.rows[category]
        row.deployment, row.reason = to, why

    def known(self, category: str | None) -> bool:
        return category is not None and category in self.rows

    def choose(
        self,
        category: str | None,
        canary_bucket: float,
        thrifty: bool = False,
        chars: Callable[[], int] | None = None,
    ) -> tuple[str, str]:
        """(deployment id, why) for a category (None: category-less). ``thrifty`` (the caller's spend is on
        course to exhaust its budget before the period ends): the cheapest deployment whose estimated quality
        still meets the category's bar, on its mean rather than its lower bound. ``chars`` gives the prompt's
        length (asked only when the row has a ``min_chars``)."""
        row = self.rows.get(category) if category is not None else None
        if row is None:
            why = "no category" if category is None else f"category {category} not in table"
            return self.default, f"quality {why} → default {self.default}"
        row.seen += 1
        if row.min_chars and row.deployment == row.benched and not thrifty:
            n = chars() if chars is not None else 0
            if n < row.min_chars:
                return self.default, (
                    f"quality category={category} prompt {n} < {row.min_chars} chars → default {self.default}"
                )
        if thrifty and row.threshold is not None and self.estimate is not None:
            assert category is not None
            for d in self.by_price:
                if d.id == row.deployment or self.prices.get(d.id, 0.0) >= self.prices.get(
                    row.deployment, 0.0
                ):
                    break
                mean = self.estimate(category, d.id)
                if mean >= row.threshold:
                    return d.id, (
                        f"quality category={category} {SPEND_AWARE}: {d.id} mean {mean:.3f} >= {row.threshold:.3f}"
                    )
        if row.candidate is not None and canary_bucket < self.spec.canary_percent:
            return (
                row.candidate,
                f"quality category={category} canary {self.spec.canary_percent:g}% → {row.candidate}",
            )
        if self.explore and row.explored + 1 <= self.explore * row.seen:
            # bounded exploration: a cheaper deployment gets at most ``explore`` of the category's requests, so
            # its quality there keeps being measured (feedback updates its posterior)
            price = self.prices.get(row.deployment, 0.0)
            cheaper = [d.id for d in self.by_price if self.prices.get(d.id, 0.0) < price]
            if cheaper:
                row.explored += 1
                pick = cheaper[row.explored % len(cheaper)]
                return pick, f"quality category={category} explore ({self.explore:.0%} budget) → {pick}"
        t = f" threshold={row.threshold:.3f}" if row.threshold is not None else ""
        return row.deployment, f"quality category={category}{t} → {row.deployment} ({row.reason})"
