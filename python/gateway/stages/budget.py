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


def scopes_for(cfg: BudgetConfig, ctx: RequestContext) -> list[tuple[str, str, BudgetRule]]:
    """(label, id, rule) for every budget that applies to this request."""
    p = ctx.principal
    out: list[tuple[str, str, BudgetRule]] = []
    if p is not None:
        if p.tenant in cfg.tenants:
            out.append(("tenant", p.tenant, cfg.tenants[p.tenant]))
        if p.team and p.team in cfg.teams:
            out.append(("team", p.team, cfg.teams[p.team]))
        name = p.name or p.key_id
        if name in cfg.keys:
            out.append(("key", name, cfg.keys[name]))
    for tag in ctx.tags or ():
        if tag in cfg.tags:
            out.append(("tag", tag, cfg.tags[tag]))
    if ctx.agent and ctx.agent in cfg.agents:
        out.append(("agent", ctx.agent, cfg.agents[ctx.agent]))
    if ctx.agent_run and cfg.agent_run is not None:
        out.append(("agent run", f"{ctx.agent}/{ctx.agent_run}", cfg.agent_run))
    return out


def to_micros(usd: float) -> int:
    return math.ceil(usd * 1_000_000)


class BudgetStage(Stage):
    name = "budget"

    def __init__(self, cfg: BudgetConfig, state: Any, router: Any) -> None:
        self.cfg = cfg
        self.state = state
        self.router = router

    def predict_usd(self, req: ChatRequest, group: str) -> float:
        targets = self.router.targets[group]
        top_in = max(t.price.input for t in targets)
        top_out = max(t.price.output for t in targets)
        prompt = tokens.count_request(req, targets[0].dep.model, targets[0].dep.provider)
        return (prompt * top_in + (req.output_cap or self.cfg.default_output_tokens) * top_out) / 1_000_000

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        scopes = scopes_for(self.cfg, ctx)
        if not scopes:
            return
        group = ctx.scratch["group"]
        predicted = self.predict_usd(req, group)
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

    async def finish(self, ctx: RequestContext) -> None:
        reserved = ctx.scratch.get(RESERVED)
        if not reserved:
            return
        keys, amount = reserved
        await self.state.settle(keys, to_micros(ctx.cost) - amount)

    @staticmethod
    def _period(rule: BudgetRule) -> str:
        return f"{rule.window_s} s window" if rule.window_s else rule.period
