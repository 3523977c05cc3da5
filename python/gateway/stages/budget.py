"""Budgets: USD per period (UTC day, month, a rolling window of seconds, lifetime) per tenant, team, key, user,
feature tag, agent and agent run — reserved before the call, settled after it.

Before routing, the request's worst-case cost is predicted: exact prompt tokens plus its output bound
(``max_tokens``; else ``default_output_tokens``; else the largest output cap in the price table among the
deployments that may serve; else 4096), priced at the most expensive of those deployments — the group's and those
of the groups it may fall back to, because which one will serve is not known yet. That amount is reserved
atomically in every applicable scope (all or nothing: one Lua script in Redis, one event-loop step locally), so
concurrent requests can never overspend a budget by more than what is reserved. After the answer (errors,
streams and client disconnects included: ``finish`` runs for all of them) the reservation is corrected to the
actual cost. Amounts are integer nano-dollars, so counters are exact and sum to the records.

Over a budget, the rule's ``on_exceed`` decides: ``reject`` (429 ``budget_exceeded``) or ``downgrade`` (route to
the cheaper ``downgrade_to`` group instead, recorded in the flags). Past ``soft_usd`` a request is served but
flagged ``budget_soft_limit``, counted (``budget_soft_alerts``) and logged once per scope and period per worker.
A request predicted above a scope's ``max_request_usd`` needs an approval token (see ``approvals.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from gateway import approvals, tokens
from gateway.config import BudgetConfig, BudgetRule
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.pricing import MICRO, NANO, lookup, to_micros, to_nanos
from gateway.scopes import TENANT_SCOPED, Scope, scopes_of
from gateway.state.types import Charge, StateBackend
from gateway.telemetry.metrics import METRICS
from gateway.types import ChatRequest

if TYPE_CHECKING:
    from gateway.routing.target import Target

log = logging.getLogger("gateway.budget")
RESERVED = "budget_reserved"  # ctx.scratch: (charges, nano-dollars)
SLICES = 12  # a rolling window is counted in this many time slices
DEFAULT_OUTPUT_TOKENS = 4096
MAX_DOWNGRADES = 3
IDLE_TTL_S = 90 * 86400


def charge_for(scope: Scope, rule: BudgetRule, now: float, idle_ttl_s: int = IDLE_TTL_S) -> Charge:
    """The counter a scope's budget is kept in for the period that contains ``now`` (unix seconds, UTC).

    Every counter expires: periods and windows when they are over, a lifetime counter of an id the caller
    chooses (user, tag, agent, run) after ``idle_ttl_s`` without a request (each request renews it), so callers
    minting ids cannot grow the state without bound. Tenants, teams and keys keep their lifetime counters."""
    base = f"{scope.tag}:budn"  # nano-dollars (":bud" counters held micro-dollars)
    limit = to_nanos(rule.usd)
    if rule.window_s:
        step = max(1, math.ceil(rule.window_s / SLICES))
        hi = int(now // step)
        # slices lo..hi cover at least the last window_s seconds (at most one slice more)
        return Charge(
            f"{base}:w{rule.window_s}",
            limit,
            rule.window_s + 2 * step,
            hi - math.ceil(rule.window_s / step),
            hi,
        )
    if rule.period == "lifetime":
        return Charge(f"{base}:life", limit, idle_ttl_s if scope.kind in TENANT_SCOPED else 0)
    if rule.period == "day":
        return Charge(f"{base}:{period_name('day', int(now // 60))}", limit, 3 * 86400)
    return Charge(f"{base}:{period_name('month', int(now // 60))}", limit, 63 * 86400)


@lru_cache(maxsize=8)
def period_name(period: str, minute: int) -> str:
    """``d2026-11-27`` / ``m2026-11`` for the UTC minute ``minute`` (cached: formatting a date on every request
    costs more than the rest of the budget decision)."""
    d = datetime.fromtimestamp(minute * 60, UTC)
    return f"d{d:%Y-%m-%d}" if period == "day" else f"m{d:%Y-%m}"


def period_end(rule: BudgetRule, now: float) -> float | None:
    """When the budget's current period ends (unix seconds); None for lifetime and rolling windows."""
    if rule.window_s or rule.period == "lifetime":
        return None
    d = datetime.fromtimestamp(now, UTC)
    if rule.period == "day":
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        return start.timestamp() + 86400
    return datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC).timestamp()


def projected_usd(rule: BudgetRule, spent_usd: float, now: float) -> float | None:
    """Spend at the end of the current day/month period if it goes on at this period's rate so far (None for
    lifetime budgets, rolling windows, and the first minute of a period: too early to tell a rate)."""
    end = period_end(rule, now)
    if end is None:
        return None
    d = datetime.fromtimestamp(now, UTC)
    start = (
        datetime(d.year, d.month, d.day, tzinfo=UTC)
        if rule.period == "day"
        else datetime(d.year, d.month, 1, tzinfo=UTC)
    ).timestamp()
    elapsed = now - start
    return spent_usd * (end - start) / elapsed if elapsed >= 60 else None


def describe_period(rule: BudgetRule) -> str:
    if rule.window_s:
        return f"rolling {rule.window_s} s"
    return {"day": "day (UTC)", "month": "month (UTC)", "lifetime": "lifetime"}[rule.period]


def output_bound(req: ChatRequest, upstream_models: list[str], default: int | None) -> int:
    """The most output tokens the request can produce: its own cap, the configured default, the price table's
    output cap of the models that may serve (the largest), else 4096."""
    if req.output_cap:
        return req.output_cap
    if default is not None:
        return default
    caps = [int(row["max_output"]) for m in upstream_models if (row := lookup(m)) and row.get("max_output")]
    return max(caps) if caps else DEFAULT_OUTPUT_TOKENS


def predicted_usd(prompt_tokens: int, output_tokens: int, prices: list[tuple[float, float]]) -> float:
    """Worst case: the highest input and the highest output price (USD per million) among the candidates."""
    top_in = max((p[0] for p in prices), default=0.0)
    top_out = max((p[1] for p in prices), default=0.0)
    return (prompt_tokens * top_in + output_tokens * top_out) / MICRO


class BudgetStage(Stage):
    name = "budget"

    def __init__(
        self, cfg: BudgetConfig, state: StateBackend, reachable: Callable[[str], Sequence[Target]]
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.policies = state.policies
        self.candidates = reachable  # the router's deployments a request to a group may end up on
        self._alerted: set[str] = set()  # soft-limit counters already logged by this worker

    def predict_usd(self, ctx: RequestContext, req: ChatRequest, group: str) -> float:
        targets = self.candidates(group)
        first = targets[0].dep
        prompt = tokens.prompt_tokens(ctx, req, first.model, first.provider)
        out = output_bound(req, [t.dep.model for t in targets], self.cfg.default_output_tokens)
        return predicted_usd(prompt, out, [(t.price.input, t.price.output) for t in targets])

    def applicable(self, ctx: RequestContext, req: ChatRequest) -> list[tuple[Scope, BudgetRule]]:
        out = []
        for s in scopes_of(ctx, req):
            rule = self.policies.budget(s.kind, *s.names)
            if rule is not None:
                out.append((s, rule))
        return out

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        await self.policies.refresh()
        scopes = self.applicable(ctx, req)
        if not scopes:
            return
        group = ctx.group
        assert group is not None  # the edge resolved it
        now = time.time()
        token = ctx.approval
        for _ in range(MAX_DOWNGRADES + 1):
            predicted = self.predict_usd(ctx, req, group)
            amount = to_nanos(predicted)
            ceiling = self.ceiling(scopes, predicted)
            if ceiling is not None and not token:
                raise self.approval_required(ctx, predicted, ceiling, None)
            charges = [charge_for(s, r, now, self.cfg.idle_ttl_s) for s, r in scopes]
            res = await self.state.reserve(charges, amount)
            if res.degraded:
                ctx.flags["state_degraded"] = True
            if res.ok:
                break
            scope, rule = scopes[res.failed]
            if (
                rule.on_exceed == "downgrade"
                and rule.downgrade_to
                and rule.downgrade_to != group
                and ctx.reroute(rule.downgrade_to, f"budget of {scope.label}")
            ):
                ctx.flags.setdefault("budget_downgraded", []).append(
                    {"scope": scope.label, "from": group, "to": rule.downgrade_to}
                )
                group = rule.downgrade_to
                continue
            raise self.exceeded(scope, rule, res.spent[0], predicted, now)
        else:  # pragma: no cover - a downgrade cycle longer than MAX_DOWNGRADES
            raise self.exceeded(scope, rule, res.spent[0], predicted, now)
        if ceiling is not None:
            assert token is not None
            if not await approvals.redeem(self.state, token, self.key_id(ctx), to_micros(predicted)):
                await self.state.settle(charges, -amount)
                raise self.approval_required(ctx, predicted, ceiling, token)
            ctx.flags["cost_approved"] = round(predicted, 6)
        ctx.scratch[RESERVED] = (charges, amount)
        left = min(c.limit - s for c, s in zip(charges, res.spent, strict=True))
        ctx.response_headers["x-gateway-budget-remaining-usd"] = f"{max(0, left) / NANO:.6f}"
        self.soft_limits(ctx, scopes, charges, res.spent)
        self.pace(ctx, scopes, res.spent, now)

    @staticmethod
    def pace(
        ctx: RequestContext, scopes: list[tuple[Scope, BudgetRule]], spent: list[int], now: float
    ) -> None:
        """Spend on course to exhaust a budget before its period ends: the request is marked ``thrifty`` (a
        ``quality`` group then serves it with the cheapest deployment that still meets its category's bar)."""
        for (scope, rule), s in zip(scopes, spent, strict=True):
            projected = projected_usd(rule, s / NANO, now)
            if projected is not None and projected > rule.usd:
                ctx.thrifty = True
                ctx.flags["budget_pace"] = {
                    "scope": scope.label,
                    "projected_usd": round(projected, 4),
                    "usd": rule.usd,
                }
                return

    def soft_limits(
        self,
        ctx: RequestContext,
        scopes: list[tuple[Scope, BudgetRule]],
        charges: list[Charge],
        spent: list[int],
    ) -> None:
        for (scope, rule), charge, s in zip(scopes, charges, spent, strict=True):
            if rule.soft_usd is None or s <= to_nanos(rule.soft_usd):
                continue
            ctx.flags.setdefault("budget_soft_limit", []).append(scope.label)
            METRICS.inc("budget_soft_alerts")
            if charge.key not in self._alerted:
                self._alerted.add(charge.key)
                log.warning(
                    "budget alert: %s passed its soft limit: $%.4f of soft $%.2f / hard $%.2f per %s",
                    scope.label,
                    s / NANO,
                    rule.soft_usd,
                    rule.usd,
                    describe_period(rule),
                )

    async def finish(self, ctx: RequestContext) -> None:
        reserved = ctx.scratch.get(RESERVED)
        if not reserved:
            return
        charges, amount = reserved
        # shielded: a cancelled request (client gone) must still give back what it did not spend
        await asyncio.shield(self.state.settle(charges, to_nanos(ctx.cost) - amount))

    # ------------------------------------------------------------ decisions and their errors

    @staticmethod
    def key_id(ctx: RequestContext) -> str:
        return ctx.principal.key_id if ctx.principal else ""

    @staticmethod
    def ceiling(scopes: list[tuple[Scope, BudgetRule]], predicted: float) -> tuple[Scope, float] | None:
        """The tightest per-request ceiling the prediction is over, if any."""
        over = [
            (s, r.max_request_usd)
            for s, r in scopes
            if r.max_request_usd is not None and predicted > r.max_request_usd
        ]
        return min(over, key=lambda x: x[1]) if over else None

    def approval_required(
        self, ctx: RequestContext, predicted: float, ceiling: tuple[Scope, float], token: str | None
    ) -> GatewayError:
        scope, limit = ceiling
        key_id = self.key_id(ctx)
        ask = math.ceil(predicted * 100) / 100
        why = (
            " The x-gateway-approval token sent is unknown, used, expired, for another key or too small."
            if token
            else ""
        )
        return GatewayError(
            "approval_required",
            f"This request may cost up to ${predicted:.4f}, above the ${limit:.2f} per-request ceiling of "
            f"{scope.label}.{why} Lower max_tokens, or ask an admin for an approval token "
            f'(POST /admin/approvals {{"key_id": "{key_id}", "max_usd": {ask:.2f}}}) and send it once as the '
            "x-gateway-approval header.",
            details={
                "scope": scope.kind,
                "id": scope.ident,
                "estimate_usd": round(predicted, 6),
                "ceiling_usd": limit,
                "key_id": key_id,
                "approval": {"endpoint": "POST /admin/approvals", "key_id": key_id, "max_usd": ask},
            },
        )

    @staticmethod
    def exceeded(scope: Scope, rule: BudgetRule, spent: int, predicted: float, now: float) -> GatewayError:
        end = period_end(rule, now)
        resets = f" (the period resets at {datetime.fromtimestamp(end, UTC):%Y-%m-%dT%H:%MZ})" if end else ""
        left = max(0.0, rule.usd - spent / NANO)
        return GatewayError(
            "budget_exceeded",
            f"The budget of {scope.label} would be exceeded: limit ${rule.usd:.2f} per {describe_period(rule)}, "
            f"spent ${spent / NANO:.4f} (${left:.4f} left), this request may cost up to ${predicted:.4f}. "
            f"Lower max_tokens, wait for spend to leave the period{resets}, or ask an admin to raise the budget "
            f"(PUT /admin/budgets/{scope.kind}/{scope.ident}).",
            details={
                "scope": scope.kind,
                "id": scope.ident,
                "limit_usd": rule.usd,
                "spent_usd": spent / NANO,
                "remaining_usd": round(left, 6),
                "request_max_usd": round(predicted, 6),
                "period": describe_period(rule),
                "resets_at": end,
            },
        )
