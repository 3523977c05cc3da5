"""The closed loop: what callers and the gateway learn about answers updates per category x deployment quality
estimates, and a deployment whose estimate falls below its category's bar is demoted.

Each (group, category, deployment) has a Beta posterior: its prior is the bench's measurement (the routing
table's quality over its items, counted as at most ``prior_weight`` items), and every signal adds its score to alpha
and the rest to beta. Signals are explicit feedback (``POST /v1/feedback``: a score or thumbs) and automatic ones
(an answer that failed the requested JSON schema, a refusal, the caller asking the same prompt again soon after).
The counts live in the state backend (Redis when configured: every replica sees the same posteriors, and each
adopts the others' every sync). When the lower end of the 95% interval of the deployment serving a category falls
below the row's threshold, the category moves to the group's default (the strong model) and the worker that saw
it happen raises an alert and records it; when the benched deployment's bound recovers (exploration keeps
measuring it), the category moves back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from gateway.quality.table import QualityPolicy
from gateway.state.types import StateBackend

log = logging.getLogger("gateway.quality")
TTL_S = 90 * 86400.0
Z = 1.959963984540054


def beta_lower(a: float, b: float) -> float:
    """The lower end of a Beta(a, b)'s central 95% interval (normal approximation: good past a few counts)."""
    n = a + b
    mean = a / n
    sd = math.sqrt(a * b / (n * n * (n + 1)))
    return max(0.0, mean - Z * sd)


def _field(category: str, deployment: str, which: str) -> str:
    return f"{category}\x1f{deployment}\x1f{which}"


class QualityLoop:
    """Posteriors and demotions for every ``quality`` group of a worker."""

    def __init__(
        self,
        policies: Mapping[str, QualityPolicy],
        state: StateBackend | None,
        on_change: Any = None,
    ) -> None:
        self.policies = policies
        self.state = state
        self.counts: dict[str, dict[str, float]] = {g: {} for g in policies}  # observed alpha/beta per field
        self.on_change = on_change  # called with each demotion/restoration event (alert delivery)
        # (key id, prompt hash) -> (when, group, category, deployment) of recent answers (caller-retry signal)
        self.recent: dict[tuple[str, str], tuple[float, str, str, str]] = {}
        for group, policy in policies.items():
            policy.estimate = self._mean_for(group)

    def _mean_for(self, group: str) -> Any:
        def mean(category: str, deployment: str) -> float:
            a, b = self.posterior(group, category, deployment)
            return a / (a + b)

        return mean

    # ------------------------------------------------------------ estimates

    def posterior(self, group: str, category: str, deployment: str) -> tuple[float, float]:
        policy = self.policies[group]
        row = policy.rows.get(category)
        a = b = 1.0
        prior = row.priors.get(deployment) if row is not None else None
        if prior is not None:
            w = min(float(prior[1]), policy.spec.prior_weight)
            a, b = 1.0 + prior[0] * w, 1.0 + (1 - prior[0]) * w
        c = self.counts[group]
        return a + c.get(_field(category, deployment, "a"), 0.0), b + c.get(
            _field(category, deployment, "b"), 0.0
        )

    def lower(self, group: str, category: str, deployment: str) -> float:
        return beta_lower(*self.posterior(group, category, deployment))

    def snapshot(self, group: str) -> dict[str, dict[str, Any]]:
        """Per category: who serves it, its bar, and every deployment's estimate (for the admin API)."""
        policy = self.policies[group]
        out: dict[str, dict[str, Any]] = {}
        for cat, row in policy.rows.items():
            deps = {d.id for d in policy.by_price}
            est = {}
            for d in sorted(deps):
                a, b = self.posterior(group, cat, d)
                est[d] = {
                    "mean": round(a / (a + b), 4),
                    "lower": round(beta_lower(a, b), 4),
                    "n": round(a + b - 2, 2),
                }
            out[cat] = {
                "deployment": row.deployment,
                "benched": row.benched,
                "threshold": row.threshold,
                "estimates": est,
            }
        return out

    # ------------------------------------------------------------ signals

    async def observe(
        self, group: str, category: str | None, deployment: str, score: float, source: str
    ) -> dict[str, Any] | None:
        """Add one signal (``score`` in [0, 1]); returns the demotion/restoration it caused, if any."""
        policy = self.policies.get(group)
        if policy is None or category is None or category not in policy.rows or not policy.spec.feedback:
            return None
        score = min(1.0, max(0.0, score))
        inc = {_field(category, deployment, "a"): score, _field(category, deployment, "b"): 1.0 - score}
        if self.state is not None:
            fields = await self.state.incr_map(f"quality:{group}", inc, TTL_S)
            self.counts[group] = fields
        else:
            c = self.counts[group]
            for f, v in inc.items():
                c[f] = c.get(f, 0.0) + v
        event = self._check(group, category)
        if event is not None:
            event["source"] = source
            if self.on_change is not None:
                self.on_change(event)
        return event

    def remember(self, key_id: str, prompt_hash: str, group: str, category: str, deployment: str) -> None:
        """An answered request, so the same caller asking the same prompt again soon counts against it."""
        now = time.monotonic()
        if len(self.recent) > 50_000:
            self.recent = {k: v for k, v in self.recent.items() if now - v[0] < RETRY_WINDOW_S}
        self.recent[(key_id, prompt_hash)] = (now, group, category, deployment)

    def retried(self, key_id: str, prompt_hash: str) -> tuple[str, str, str] | None:
        """The earlier answer's (group, category, deployment) when this is a retry of a recent prompt."""
        hit = self.recent.get((key_id, prompt_hash))
        if hit is None or time.monotonic() - hit[0] > RETRY_WINDOW_S:
            return None
        return hit[1], hit[2], hit[3]

    # ------------------------------------------------------------ demotion

    def _check(self, group: str, category: str) -> dict[str, Any] | None:
        policy = self.policies[group]
        row = policy.rows[category]
        if row.threshold is None:
            return None
        c = self.counts[group]
        signals = c.get(_field(category, row.benched, "a"), 0.0) + c.get(
            _field(category, row.benched, "b"), 0.0
        )
        if signals < policy.spec.min_signals:
            return None
        if row.deployment == row.benched and row.benched != policy.default:
            lo = self.lower(group, category, row.benched)
            if lo < row.threshold:
                why = f"demoted: lower bound {lo:.3f} < {row.threshold:.3f}"
                policy.demote(category, policy.default, why)
                return self._event("demoted", group, category, row.benched, policy.default, lo, row.threshold)
        elif row.deployment != row.benched:
            lo = self.lower(group, category, row.benched)
            if lo >= row.threshold:
                policy.demote(category, row.benched, "table")
                return self._event(
                    "restored", group, category, policy.default, row.benched, lo, row.threshold
                )
        return None

    def _event(
        self, kind: str, group: str, category: str, frm: str, to: str, lo: float, threshold: float
    ) -> dict[str, Any]:
        a, b = self.posterior(group, category, frm if kind == "demoted" else to)
        return {
            "event": kind,
            "group": group,
            "category": category,
            "from": frm,
            "to": to,
            "lower": round(lo, 4),
            "threshold": threshold,
            "signals": round(a + b - 2, 2),
        }

    async def sync(self) -> None:
        """Adopt the shared counts (other workers' and replicas' signals); demote silently (they alerted)."""
        if self.state is None:
            return
        for group, policy in self.policies.items():
            fields = await self.state.get_map(f"quality:{group}")
            if fields:
                self.counts[group] = {k: float(v) for k, v in fields.items()}
                for cat in policy.rows:
                    self._check(group, cat)

    async def run_sync(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sync()
            except Exception:  # the loop must outlive a bad read; routing keeps its last view
                log.exception("quality posteriors: sync failed")


RETRY_WINDOW_S = 120.0
