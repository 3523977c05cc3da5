"""Rate limits: requests and tokens per window (a minute unless ``window_s`` says otherwise) per tenant, team, key,
user, feature tag, agent, agent run and model group, checked all-or-nothing; and the provider quotas of
deployments (``Deployment.rpm/tpm``), which the router checks before it tries one (``routing/quota.py``).

Buckets are GCRA (start full, refill continuously): any interval of L seconds admits at most
``rpm + rpm * L / window_s`` requests. Tokens are reserved before the call (exact prompt tokens + the request's
``max_tokens`` when given) and settled after it (the difference is given back, or charged as debt when the answer
was longer than reserved), so concurrent requests can never overrun a TPM limit by more than what they reserved.

Over a limit, ``on_exceed`` decides: ``reject`` (429 ``rate_limited`` naming the scope, with ``Retry-After`` and
``x-ratelimit-*``), ``queue`` (wait up to ``max_wait_s`` for a turn, fair between callers: ``fairqueue.py``) or
``fallback`` (when a model group's own limit is hit, route to ``fallback_group`` instead).
"""

from __future__ import annotations

import math
import time

from gateway import tokens
from gateway.config import LimitRule, LimitsConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.scopes import Scope, model_scope, scopes_of
from gateway.stages.fairqueue import FairQueue
from gateway.state.types import LimitCheck, LimitDecision, StateBackend, tag_of
from gateway.types import ChatRequest

RESERVED = "limits_reserved"  # ctx.scratch: [(check, reserved tokens)]


def per(window_s: float) -> str:
    return "minute" if window_s == 60 else f"{window_s:g} s"


def checks_for(rules: list[tuple[Scope, LimitRule]], prompt_tokens: int) -> list[LimitCheck]:
    """The buckets a request must fit in: one requests and one tokens bucket per scope whose rule sets them."""
    out = []
    for s, rule in rules:
        w = rule.window_s
        if rule.rpm:
            name = f"{s.label} requests per {per(w)}"
            out.append(LimitCheck(f"{s.tag}:rl:rpm:{w:g}", rule.rpm, w, 1, name, "requests"))
        if rule.tpm:
            name = f"{s.label} tokens per {per(w)}"
            out.append(LimitCheck(f"{s.tag}:rl:tpm:{w:g}", rule.tpm, w, prompt_tokens, name, "tokens"))
    return out


def ratelimit_headers(checks: list[LimitCheck], d: LimitDecision) -> dict[str, str]:
    """OpenAI-style ``x-ratelimit-*`` headers for the tightest requests and tokens buckets."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        idx = [i for i, c in enumerate(checks) if c.kind == kind]
        if not idx or not d.remaining:
            continue
        i = d.failed if d.failed in idx else min(idx, key=lambda j: d.remaining[j] / checks[j].capacity)
        headers[f"x-ratelimit-limit-{kind}"] = str(int(checks[i].capacity))
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(d.remaining[i])))
        headers[f"x-ratelimit-reset-{kind}"] = f"{d.reset_s[i]:.3f}s"
    return headers


def reject(
    check: LimitCheck,
    d: LimitDecision,
    headers: dict[str, str],
    waited_s: float = 0.0,
    fell_back: tuple[str, str] | None = None,
) -> GatewayError:
    kind, _, ident = tag_of(check.key).partition(":")
    remaining = max(0, math.floor(d.remaining[d.failed])) if d.remaining else 0
    details = {
        "scope": kind,
        "id": ident,
        "limit": check.scope,
        "capacity": check.capacity,
        "window_s": check.window_s,
        "remaining": remaining,
        "requested": check.cost,
    }
    if d.retry_after_s < 0:  # waiting never helps: a 400, not a 429 that SDKs would retry forever
        return GatewayError(
            "invalid_request",
            f"This request needs {check.cost:.0f} {check.kind}, more than the {check.scope} limit of "
            f"{check.capacity:.0f} allows at all; send a smaller request (lower max_tokens).",
            param="max_tokens" if check.kind == "tokens" else None,
            headers=headers,
            details=details,
        )
    retry = max(1, math.ceil(d.retry_after_s))
    headers["retry-after"] = str(retry)
    waited = f" after waiting {waited_s:.1f} s in the queue" if waited_s else ""
    if fell_back:
        waited += (
            f" (model group '{fell_back[0]}' was at its limit, so the fallback '{fell_back[1]}' was tried)"
        )
        details["fallback_tried"] = fell_back[1]
    return GatewayError(
        "rate_limited",
        f"Rate limit reached for {check.scope}{waited}: limit {check.capacity:.0f}, remaining {remaining}. "
        f"Retry after {d.retry_after_s:.1f} s (Retry-After), or spread requests out.",
        headers=headers,
        details={**details, "retry_after_s": round(d.retry_after_s, 3)},
    )


class LimitsStage(Stage):
    name = "limits"

    def __init__(self, cfg: LimitsConfig, state: StateBackend) -> None:
        self.cfg = cfg
        self.state = state
        self.policies = state.policies
        self.queue = FairQueue(state)

    @property
    def waiting(self) -> int:
        """Requests queued in this worker right now (the queue-depth metric)."""
        return self.queue.depth

    def rules(self, ctx: RequestContext, req: ChatRequest, group: str) -> list[tuple[Scope, LimitRule]]:
        out = []
        for s in (*scopes_of(ctx, req), model_scope(group)):
            rule = self.policies.limit(s.kind, *s.names)
            if rule is not None and (rule.rpm or rule.tpm):
                out.append((s, rule))
        return out

    def checks(self, ctx: RequestContext, req: ChatRequest, group: str) -> tuple[list[LimitCheck], int]:
        rules = self.rules(ctx, req, group)
        reserve = 0
        if any(r.tpm for _, r in rules):
            reserve = tokens.prompt_tokens(ctx, req, req.model) + (req.output_cap or 0)
        return checks_for(rules, reserve), reserve

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        await self.policies.refresh()
        group = ctx.group
        assert group is not None  # the edge resolved it
        checks, reserve = self.checks(ctx, req, group)
        if not checks:
            return
        d = await self.state.acquire(checks)
        waited = 0.0
        fell_back: tuple[str, str] | None = None
        if not d.allowed:
            mode = self.cfg.on_exceed
            failed = checks[d.failed]
            fallback = self.cfg.fallback_group
            if mode == "queue" and 0 <= d.retry_after_s <= self.cfg.max_wait_s:
                started = time.monotonic()
                ctx.flags["queue_depth_at_entry"] = self.queue.depth + 1
                caller = ctx.principal.key_id if ctx.principal else ""
                d = await self.queue.wait(caller, checks, d, self.cfg.max_wait_s)
                waited = time.monotonic() - started
                ctx.flags["queued_ms"] = round(waited * 1000, 1)
            elif (
                mode == "fallback"
                and fallback
                and fallback != group
                and tag_of(failed.key).startswith("model:")
                and ctx.reroute(fallback, f"rate limit of {failed.scope}")
            ):
                ctx.flags["rate_limit_fallback"] = {"limit": failed.scope, "from": group, "to": fallback}
                fell_back = (group, fallback)
                group = fallback
                checks, reserve = self.checks(ctx, req, group)
                d = await self.state.acquire(checks) if checks else LimitDecision(True)
        if d.degraded:
            ctx.flags["state_degraded"] = True
        headers = ratelimit_headers(checks, d)
        if not d.allowed:
            raise reject(checks[d.failed], d, headers, waited, fell_back)
        ctx.response_headers.update(headers)
        ctx.scratch[RESERVED] = [(c, reserve) for c in checks if c.kind == "tokens"]

    async def finish(self, ctx: RequestContext) -> None:
        reserved = ctx.scratch.get(RESERVED)
        if not reserved:
            return
        used = ctx.usage.input_tokens + ctx.usage.output_tokens if ctx.deployment else 0
        for check, amount in reserved:
            if used != amount:
                await self.state.adjust(check, amount - used)
