"""Budget and limit rules: the config's values, overlaid with the rules an admin set at run time.

Run-time rules are written by the admin API to the SQLite store and, with Redis, to Redis, so every worker of every
replica sees them; each worker re-reads them at most once per ``REFRESH_S`` (one HGETALL, or one SQLite query).
An id of ``"*"`` is the default for every id of a scope. Lookup order for a scope: each candidate id (most
specific first) at run time, then in config; then ``"*"`` at run time, then in config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from gateway.config import BudgetConfig, BudgetRule, Config, LimitRule, LimitsConfig

log = logging.getLogger("gateway.state")

REFRESH_S = 1.0
BUDGET_SCOPES = ("tenant", "team", "key", "user", "tag", "agent", "agent_run")
LIMIT_SCOPES = (*BUDGET_SCOPES, "model")
Rules = dict[str, dict[str, Any]]  # scope -> id -> rule


FIELDS = {  # scope -> the config field holding its rules (the same names in budgets and limits)
    "tenant": "tenants",
    "team": "teams",
    "key": "keys",
    "user": "users",
    "tag": "tags",
    "agent": "agents",
    "agent_run": "agent_runs",
}


def budget_rules(cfg: BudgetConfig) -> Rules:
    return {scope: dict(getattr(cfg, field)) for scope, field in FIELDS.items()}


def limit_rules(cfg: LimitsConfig) -> Rules:
    rules: Rules = {scope: dict(getattr(cfg, field)) for scope, field in FIELDS.items()}
    rules["model"] = dict(cfg.per_model)
    if cfg.per_key is not None:
        rules["key"].setdefault("*", cfg.per_key)
    if cfg.per_tenant is not None:
        rules["tenant"].setdefault("*", cfg.per_tenant)
    return rules


def lookup(runtime: Rules, config: Rules, scope: str, ids: tuple[str, ...]) -> Any:
    """The rule for the first of ``ids`` that has one (run time before config), else the scope's ``"*"``."""
    rt, cf = runtime.get(scope, {}), config.get(scope, {})
    for ident in (*ids, "*"):
        if ident in rt:
            return rt[ident]
        if ident in cf:
            return cf[ident]
    return None


def decode(raw: dict[tuple[str, str, str], dict[str, Any]]) -> tuple[Rules, Rules]:
    """Run-time rows -> (budget rules, limit rules); a row that no longer decodes is skipped, loudly."""
    budgets: Rules = {}
    limits: Rules = {}
    for (kind, scope, ident), body in raw.items():
        if kind not in ("budget", "limit"):
            continue  # other kinds (compliance) are decoded by their owners, see Policies.raw
        typ, into = (BudgetRule, budgets) if kind == "budget" else (LimitRule, limits)
        try:
            into.setdefault(scope, {})[ident] = msgspec.convert(body, typ)
        except msgspec.ValidationError as e:
            log.error("ignoring the run-time %s rule for %s %s: %s", kind, scope, ident, e)
    return budgets, limits


class Policies:
    def __init__(self, cfg: Config, state: Any) -> None:
        self.state = state
        self.config_budgets = budget_rules(cfg.stages.budget)
        self.config_limits = limit_rules(cfg.stages.limits)
        self.budgets: Rules = {}
        self.limits: Rules = {}
        # kind -> scope -> id -> body, for kinds other than budget/limit; a new object exactly when they changed
        self.raw: dict[str, Rules] = {}
        self._next = 0.0

    def due(self) -> bool:
        """Whether ``refresh`` would read the shared state now (at most once a second per worker)."""
        return time.monotonic() >= self._next

    async def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + REFRESH_S  # set before the await: one refresh in flight per worker
        raw = await self.state.load_policies()
        if raw is not None:  # None: the shared state is unreachable, keep the last known rules
            self.budgets, self.limits = decode(raw)
            other: dict[str, Rules] = {}
            for (kind, scope, ident), body in raw.items():
                if kind not in ("budget", "limit"):
                    other.setdefault(kind, {}).setdefault(scope, {})[ident] = body
            if other != self.raw:  # replaced only on a change: its owners cache what they derive from it
                self.raw = other

    def budget(self, scope: str, *ids: str) -> BudgetRule | None:
        return lookup(self.budgets, self.config_budgets, scope, ids)

    def limit(self, scope: str, *ids: str) -> LimitRule | None:
        return lookup(self.limits, self.config_limits, scope, ids)

    def any_budgets(self) -> bool:
        return any(self.budgets.values()) or any(self.config_budgets.values())

    def any_limits(self) -> bool:
        return any(self.limits.values()) or any(self.config_limits.values())

    async def put(self, kind: str, scope: str, ident: str, rule: Any | None) -> None:
        """Set (or with None, remove) a run-time rule; this worker sees it at once, the others within 1 s."""
        body = msgspec.to_builtins(rule) if rule is not None and not isinstance(rule, dict) else rule
        await self.state.put_policy(kind, scope, ident, body)
        await self.refresh(force=True)

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for kind, rules in (("budget", self.budgets), ("limit", self.limits)):
            for scope, by_id in sorted(rules.items()):
                for ident, rule in sorted(by_id.items()):
                    out.append({"kind": kind, "scope": scope, "id": ident, "rule": msgspec.to_builtins(rule)})
        return out
