"""Rate limits: requests and tokens per minute, per key, tenant and model group, all-or-nothing.

Tokens are reserved before the call (exact prompt tokens + the request's ``max_tokens`` when given) and settled
after it (the difference is given back, or charged as debt when the answer was longer than reserved), so
concurrent requests can never overrun a TPM limit by more than what they reserved. Per-deployment quotas are
enforced by the router (a deployment over its provider quota is skipped, not the request rejected).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

from gateway import tokens
from gateway.config import LimitRule, LimitsConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.state.local import LimitCheck, LimitDecision
from gateway.types import ChatRequest

RESERVED = "limits_reserved"  # ctx.scratch: [(check, reserved tokens)]


def checks_for(scopes: list[tuple[str, str, LimitRule | None]], prompt_tokens: int) -> list[LimitCheck]:
    """The buckets a request must fit in: one RPM and one TPM bucket per scope that has a rule."""
    out = []
    for key, label, rule in scopes:
        if rule is None:
            continue
        per = "minute" if rule.window_s == 60 else f"{rule.window_s:g} s"
        if rule.rpm:
            name = f"{label} requests per {per}"
            out.append(LimitCheck(f"rl:{key}:rpm", rule.rpm, rule.window_s, 1, name, "requests"))
        if rule.tpm:
            name = f"{label} tokens per {per}"
            out.append(LimitCheck(f"rl:{key}:tpm", rule.tpm, rule.window_s, prompt_tokens, name, "tokens"))
    return out


def ratelimit_headers(checks: list[LimitCheck], d: LimitDecision) -> dict[str, str]:
    """OpenAI-style ``x-ratelimit-*`` headers for the tightest requests and tokens buckets."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        idx = [i for i, c in enumerate(checks) if c.kind == kind]
        if not idx:
            continue
        i = d.failed if d.failed in idx else min(idx, key=lambda j: d.remaining[j] / checks[j].capacity)
        headers[f"x-ratelimit-limit-{kind}"] = str(int(checks[i].capacity))
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(d.remaining[i])))
        headers[f"x-ratelimit-reset-{kind}"] = f"{d.reset_s[i]:.3f}s"
    return headers


def reject(check: LimitCheck, d: LimitDecision, headers: dict[str, str]) -> GatewayError:
    if d.retry_after_s < 0:
        return GatewayError(
            "rate_limited",
            f"This request needs {check.cost:.0f} {check.kind}, more than the {check.scope} limit of "
            f"{check.capacity:.0f} allows at all; send a smaller request (lower max_tokens).",
            headers=headers,
        )
    retry = max(1, math.ceil(d.retry_after_s))
    headers["retry-after"] = str(retry)
    return GatewayError(
        "rate_limited",
        f"Rate limit reached for {check.scope}: limit {check.capacity:.0f}, remaining "
        f"{max(0, math.floor(d.remaining[d.failed] if d.remaining else 0))}. Retry after {d.retry_after_s:.1f} s.",
        headers=headers,
    )


class LimitsStage(Stage):
    name = "limits"

    def __init__(self, cfg: LimitsConfig, state: Any) -> None:
        self.cfg = cfg
        self.state = state
        self.waiting = 0  # requests queued in this worker right now (the queue-depth metric)

    def scopes(self, ctx: RequestContext, group: str) -> list[tuple[str, str, LimitRule | None]]:
        p = ctx.principal
        assert p is not None
        key_name = p.name or p.key_id
        return [
            (f"key:{p.key_id}", f"key '{key_name}'", self.cfg.keys.get(key_name, self.cfg.per_key)),
            (
                f"tenant:{p.tenant}",
                f"tenant '{p.tenant}'",
                self.cfg.tenants.get(p.tenant, self.cfg.per_tenant),
            ),
            (f"model:{group}", f"model '{group}'", self.cfg.per_model.get(group)),
        ]

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        group = ctx.scratch["group"]
        scopes = self.scopes(ctx, group)
        if not any(r is not None for _, _, r in scopes):
            return
        needs_tokens = any(r is not None and r.tpm for _, _, r in scopes)
        reserve = 0
        if needs_tokens:
            reserve = tokens.count_request(req, req.model) + (req.output_cap or 0)
        checks = checks_for(scopes, reserve)
        d = await self.state.acquire(checks)
        if not d.allowed and self.cfg.on_exceed == "queue":
            d = await self.wait_in_queue(ctx, checks, d)
        headers = ratelimit_headers(checks, d)
        if not d.allowed:
            fallback = self.cfg.fallback_group
            if self.cfg.on_exceed == "fallback" and fallback and fallback != group:
                ctx.flags["rate_limit_fallback"] = {"limit": checks[d.failed].scope, "to": fallback}
                ctx.scratch["group"] = fallback
                return await self.pre(ctx, req)
            raise reject(checks[d.failed], d, headers)
        ctx.response_headers.update(headers)
        ctx.scratch[RESERVED] = [(c, reserve) for c in checks if c.kind == "tokens"]

    async def wait_in_queue(
        self, ctx: RequestContext, checks: list[LimitCheck], d: LimitDecision
    ) -> LimitDecision:
        """Wait for the bucket to refill, up to ``max_wait_s``. Each waiter sleeps until its own retry time plus a
        little jitter and tries again, so waiters are admitted roughly in arrival order as tokens come back."""
        deadline = time.monotonic() + self.cfg.max_wait_s
        self.waiting += 1
        ctx.flags["queue_depth_at_entry"] = self.waiting
        started = time.monotonic()
        try:
            while not d.allowed and 0 <= d.retry_after_s <= deadline - time.monotonic():
                await asyncio.sleep(d.retry_after_s + random.uniform(0, 0.01))
                d = await self.state.acquire(checks)
        finally:
            self.waiting -= 1
        ctx.flags["queued_ms"] = round((time.monotonic() - started) * 1000, 1)
        return d

    async def finish(self, ctx: RequestContext) -> None:
        reserved = ctx.scratch.get(RESERVED)
        if not reserved:
            return
        used = ctx.usage.input_tokens + ctx.usage.output_tokens if ctx.deployment else 0
        for check, amount in reserved:
            if used != amount:
                await self.state.adjust(check, amount - used)
