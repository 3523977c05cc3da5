"""Who a request is, as the scopes budgets and limits apply to: tenant → team → key, plus the request's ``user``,
its feature tags and its agent and agent run.

Tags and the agent come from headers (``x-gateway-tags: a,b``, ``x-gateway-agent: agent-id/run-id``, parsed at the
edge) or from the body's ``metadata`` (``tags``: list or comma string; ``agent``: ``"id"`` or ``"id/run"``;
``agent_run``). Ids the caller chooses (user, tag, agent, run) are namespaced by tenant, so one tenant can never
spend another's budget by naming its agent; rules can still be set by the bare name (``tags: {search: ...}``
applies to tag ``search`` in every tenant, each with its own counter) or the qualified one (``acme/search``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.state.types import scope_tag
from gateway.types import ChatRequest

TENANT_SCOPED = ("user", "tag", "agent", "agent_run")  # ids the caller chooses: counted per tenant
MAX_TAGS = 8  # each tag is one more counter per request: a caller cannot make a request arbitrarily expensive
MAX_ID = 128  # the longest user, tag, agent or run id (each is part of a counter's name)


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # tenant | team | key | user | tag | agent | agent_run | model
    ident: str  # the counter's id
    names: tuple[str, ...]  # ids a rule may be set under, most specific first
    label: str  # what an error says: "tenant 'acme'"

    @property
    def tag(self) -> str:
        return scope_tag(self.kind, self.ident)


def merge_identity(ctx: RequestContext, req: ChatRequest) -> None:
    """Tags and agent from ``metadata`` when the headers did not give them (headers win); idempotent."""
    md: Any = req.metadata
    if not isinstance(md, dict):
        return
    raw = md.get("tags")
    tags = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else []
    extra = [t.strip() for t in tags if isinstance(t, str) and t.strip()]
    if extra:
        ctx.tags = list(dict.fromkeys([*(ctx.tags or ()), *extra]))
    if ctx.agent is None:
        agent = md.get("agent") or md.get("agent_id")
        if isinstance(agent, str) and agent:
            ctx.agent, _, run = agent.partition("/")
            named = run or md.get("agent_run") or md.get("run_id")
            ctx.agent_run = named if isinstance(named, str) and named else None


def request_scopes(ctx: RequestContext) -> list[Scope]:
    """Every identity of the request, most general first."""
    p = ctx.principal
    if p is None:
        return []
    t = p.tenant
    out = [Scope("tenant", t, (t,), f"tenant '{t}'")]
    if p.team:
        out.append(Scope("team", p.team, (p.team,), f"team '{p.team}'"))
    name = p.name or p.key_id
    out.append(Scope("key", p.key_id, (name, p.key_id) if p.name else (p.key_id,), f"key '{name}'"))
    user = ctx.req.user if ctx.req is not None else None
    if user:
        out.append(Scope("user", f"{t}/{user}", _names(t, user), f"user '{user}'"))
    for tag in ctx.tags or ():
        out.append(Scope("tag", f"{t}/{tag}", _names(t, tag), f"tag '{tag}'"))
    if ctx.agent:
        a = ctx.agent
        out.append(Scope("agent", f"{t}/{a}", _names(t, a), f"agent '{a}'"))
        if ctx.agent_run:
            run = f"{a}/{ctx.agent_run}"
            names = _names(t, run, slashes=1)
            out.append(
                Scope("agent_run", f"{t}/{run}", (*names, a) if "/" not in a else names, f"agent run '{run}'")
            )
    return out


def _names(tenant: str, ident: str, slashes: int = 0) -> tuple[str, ...]:
    """The ids a rule for a caller-chosen ``ident`` may be set under: the tenant's own (``tenant/ident``) and,
    when ``ident`` cannot be read as another tenant's qualified id, the bare one (a rule for every tenant).
    A bare id has no "/" of its own (an agent run: exactly the one between agent and run), so a caller naming
    its tag ``acme/vip`` gets tenant ``globex``'s rules for that tag, never acme's rule for ``vip``."""
    own = f"{tenant}/{ident}"
    return (own, ident) if ident.count("/") == slashes else (own,)


def scopes_of(ctx: RequestContext, req: ChatRequest) -> list[Scope]:
    """The request's scopes, worked out once per request (the limits and budget stages both need them)."""
    hit = ctx.scopes
    if hit is None:
        merge_identity(ctx, req)
        check_ids(ctx)
        hit = ctx.scopes = request_scopes(ctx)
    return hit


def check_ids(ctx: RequestContext) -> None:
    """Each id the caller chooses becomes a counter (a Redis key): bounded in length, count and characters."""
    user = ctx.req.user if ctx.req is not None else None
    tags = ctx.tags or ()
    if len(tags) > MAX_TAGS:
        raise GatewayError(
            "invalid_request",
            f"A request may carry at most {MAX_TAGS} tags (x-gateway-tags / metadata.tags); it has {len(tags)}.",
            param="tags",
        )
    named = [("user", user), ("agent", ctx.agent), ("agent run", ctx.agent_run)]
    for what, value in [*named, *(("tag", t) for t in tags)]:
        if value is not None and (len(value) > MAX_ID or not value.isprintable()):
            raise GatewayError(
                "invalid_request",
                f"The {what} id must be printable text of at most {MAX_ID} characters.",
                param=what.replace(" ", "_"),
            )


def model_scope(group: str) -> Scope:
    return Scope("model", group, (group,), f"model '{group}'")


def admin_scope(kind: str, ident: str, tenant: str | None) -> Scope:
    """The scope an admin names in ``/admin/spend``: caller-chosen ids need their tenant (``acme/search`` or
    ``?tenant=acme``)."""
    if kind in TENANT_SCOPED and tenant and not ident.startswith(tenant + "/"):
        ident = f"{tenant}/{ident}"
    bare = ident.split("/", 1)[1] if kind in TENANT_SCOPED and "/" in ident else ident
    names = (ident, bare) if bare != ident else (ident,)
    if kind == "agent_run" and "/" in bare:
        names = (*names, bare.split("/", 1)[0])
    return Scope(kind, ident, names, f"{kind.replace('_', ' ')} '{bare}'")
