"""Budgets: USD per period per tenant, team, key, feature tag, agent and agent run — reserved before the call,
settled after it.

Before routing, the request's worst-case cost is predicted: exact prompt tokens plus its output bound
(``max_tokens``, else ``default_output_tokens``), priced at the most expensive deployment the group may use (the
deployment that will serve is not known yet). That amount is reserved atomically in every applicable scope (a Lua
script in Redis, one event-loop step locally), so concurrent requests can never overspend by more than what is
reserved. After the answer (streams and disconnects included) the reservation is corrected to the actual cost.
Amounts are integer micro-dollars so the counters are exact.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway import tokens
from gateway.config import BudgetConfig, BudgetRule
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.types import ChatRequest

log = logging.getLogger("gateway.budget")
RESERVED = "budget_reserved"  # ctx.scratch: (keys, micro-dollars)


def period_key(rule: BudgetRule, now: float) -> tuple[str, int]:
    """The counter suffix for the current period, and a TTL that outlives it."""
    if rule.window_s:
        return f"w{rule.window_s}:{int(now // rule.window_s)}", 2 * rule.window_s
    if rule.period == "lifetime":
        return "all", 0
    d = datetime.fromtimestamp(now, UTC)
    if rule.period == "day":
        return d.strftime("%Y-%m-%d"), 2 * 86400
    return d.strftime("%Y-%m"), 35 * 86400


Rules = dict[str, dict[str, BudgetRule]]  # scope -> id -> rule; scope "agent_run" uses the id "*"
SCOPES = ("tenant", "team", "key", "tag", "agent", "agent_run")


def rules_from_config(cfg: BudgetConfig) -> Rules:
    return {
        "tenant": dict(cfg.tenants),
        "team": dict(cfg.teams),
        "key": dict(cfg.keys),
        "tag": dict(cfg.tags),
        "agent": dict(cfg.agents),
        "agent_run": {"*": cfg.agent_run} if cfg.agent_run is not None else {},
    }


def scopes_for(rules: Rules, ctx: RequestContext) -> list[tuple[str, str, BudgetRule]]:
    """(label, id, rule) for every budget that applies to this request."""
    p = ctx.principal
    wanted: list[tuple[str, str, str]] = []  # (scope, rule id, label id)
    if p is not None:
        wanted += [
            ("tenant", p.tenant, p.tenant),
            ("team", p.team or "", p.team or ""),
            ("key", p.name or p.key_id, p.name or p.key_id),
        ]
    wanted += [("tag", t, t) for t in ctx.tags or ()]
    if ctx.agent:
        wanted.append(("agent", ctx.agent, ctx.agent))
        if ctx.agent_run:
            wanted.append(("agent_run", "*", f"{ctx.agent}/{ctx.agent_run}"))
    return [
        (scope.replace("_", " "), label, rules[scope][rid])
        for scope, rid, label in wanted
        if rid in rules[scope]
    ]


def to_micros(usd: float) -> int:
    return math.ceil(usd * 1_000_000)


class BudgetStage(Stage):
    name = "budget"

    def __init__(self, cfg: BudgetConfig, state: Any, router: Any, store: Any) -> None:
        self.cfg = cfg
        self.state = state
        self.router = router
        self.store = store
        self._rules = rules_from_config(cfg)
        self._rules_at = 0.0

    def rules(self) -> Rules:
        """Config rules overlaid with those set at run time through the admin API (re-read every 2 s)."""
        now = time.monotonic()
        if now - self._rules_at > 2.0:
            self._rules_at = now
            merged = rules_from_config(self.cfg)
            for (scope, ident), rule in self.store.budgets().items():
                merged.setdefault(scope, {})[ident] = msgspec.convert(rule, BudgetRule)
            self._rules = merged
        return self._rules

    def predict_usd(self, req: ChatRequest, group: str) -> float:
        targets = self.router.targets[group]
        top_in = max(t.price.input for t in targets)
        top_out = max(t.price.output for t in targets)
        prompt = tokens.count_request(req, targets[0].dep.model, targets[0].dep.provider)
        return (prompt * top_in + (req.output_cap or self.cfg.default_output_tokens) * top_out) / 1_000_000

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        scopes = scopes_for(self.rules(), ctx)
        if not scopes:
            return
        group = ctx.scratch["group"]
        predicted = self.predict_usd(req, group)
        self.check_approval(ctx, scopes, predicted)
        amount = to_micros(predicted)
        now = time.time()
        keyed = []
        for label, ident, rule in scopes:
            suffix, ttl = period_key(rule, now)
            keyed.append((f"bud:{label}:{ident}:{suffix}", to_micros(rule.usd), ttl))
        ok, failed, spent = await self.state.reserve(keyed, amount)
        if not ok:
            label, ident, rule = scopes[failed]
            if rule.on_exceed == "downgrade" and rule.downgrade_to and rule.downgrade_to != group:
                ctx.flags["budget_downgraded"] = {"scope": f"{label} {ident}", "to": rule.downgrade_to}
                ctx.scratch["group"] = rule.downgrade_to
                return await self.pre(ctx, req)
            raise GatewayError(
                "budget_exceeded",
                f"The budget of {label} '{ident}' is exhausted: limit ${rule.usd:.2f} per {self._period(rule)}, "
                f"spent ${spent / 1e6:.4f}, this request may cost up to ${predicted:.4f}. Lower max_tokens, wait "
                "for the next period, or ask an admin to raise the budget.",
                details={
                    "scope": label,
                    "id": ident,
                    "limit_usd": rule.usd,
                    "spent_usd": spent / 1e6,
                    "request_max_usd": predicted,
                },
            )
        ctx.scratch[RESERVED] = ([k for k, _, _ in keyed], amount)
        for (label, ident, rule), (key, _, _) in zip(scopes, keyed, strict=True):
            if rule.soft_usd is not None:
                spent_now = await self.state.spent(key)
                if spent_now > to_micros(rule.soft_usd):
                    ctx.flags.setdefault("budget_soft_limit", []).append(f"{label} {ident}")
                    log.warning(
                        "soft budget passed: %s %s at $%.4f of $%.2f",
                        label,
                        ident,
                        spent_now / 1e6,
                        rule.soft_usd,
                    )

    def check_approval(
        self, ctx: RequestContext, scopes: list[tuple[str, str, BudgetRule]], predicted: float
    ) -> None:
        """A request over a scope's per-request ceiling needs a single-use approval token bound to its key."""
        over = [
            (label, ident, r)
            for label, ident, r in scopes
            if r.max_request_usd is not None and predicted > r.max_request_usd
        ]
        if not over:
            return
        key_id = ctx.principal.key_id if ctx.principal else ""
        token = ctx.scratch.get("approval")
        if token and self.store.use_approval(token, key_id, predicted):
            ctx.flags["cost_approved"] = round(predicted, 6)
            return
        label, ident, rule = over[0]
        raise GatewayError(
            "approval_required",
            f"This request may cost up to ${predicted:.4f}, above the ${rule.max_request_usd:.2f} per-request "
            f"ceiling of {label} '{ident}'. Ask an admin for an approval token (POST /admin/approvals with "
            f'{{"key_id": "{key_id}", "max_usd": {math.ceil(predicted * 100) / 100:.2f}}}) and send it once as '
            "the x-gateway-approval header"
            + (" (the token sent was invalid, used or too small)." if token else "."),
            details={"estimate_usd": predicted, "ceiling_usd": rule.max_request_usd, "key_id": key_id},
        )

    async def finish(self, ctx: RequestContext) -> None:
        reserved = ctx.scratch.get(RESERVED)
        if not reserved:
            return
        keys, amount = reserved
        await self.state.settle(keys, to_micros(ctx.cost) - amount)

    @staticmethod
    def _period(rule: BudgetRule) -> str:
        return f"{rule.window_s} s window" if rule.window_s else rule.period
