"""The admin API, under ``/admin/``, authenticated by its own key (``admin.key`` in config, ``Authorization:
Bearer``). Answers are JSON; errors have the OpenAI error shape with a stable ``code``.

    POST   /admin/keys                       {tenant, team?, name?, models?, residency?} → the key, shown once
    GET    /admin/keys[?tenant=T]            keys (never their values)
    DELETE /admin/keys/{key_id}              revoke (workers stop accepting it within server.key_cache_ttl_s)
    PUT    /admin/budgets/{scope}/{id}       a BudgetRule {usd, period?, window_s?, soft_usd?, on_exceed?,
                                             downgrade_to?, max_request_usd?}
    PUT    /admin/limits/{scope}/{id}        a LimitRule {rpm?, tpm?, window_s?}
    DELETE /admin/budgets|limits/{scope}/{id}  back to the config's value
    GET    /admin/budgets, /admin/limits     the rules set at run time
    GET    /admin/spend?scope=S&id=X[&tenant=T]  spend in the current period, the limit, what remains
    POST   /admin/approvals                  {key_id, max_usd, ttl_s?} → a single-use approval token
    GET    /admin/costs?group_by=tenant,team,tag,agent,model&from=&to=&granularity=hour|day|total[&format=csv]
                                             spend, tokens and requests per period and group, from the records
    GET    /admin/alerts[?state=firing|resolved][&since=T]  alerts raised by the detector, newest first
    POST   /admin/cache/purge                {tenant?, model?, tag?, namespace?} → cached answers matching all the
                                             fields given are deleted (every worker and replica with Redis)
    GET    /admin/cache                      the cache backend and its number of entries
    POST   /admin/reload                     validate the config file and apply it to every worker (202), or
                                             400 invalid_config naming the field; the running config stays
    GET    /admin/stats                      contract counters summed over every worker (and replica, with
                                             Redis): queue depth, queued/admitted/timed out, soft-budget alerts,
                                             retry-budget refusals; deployments cooling down (seconds left)
                                             and this worker's circuits
    DELETE /admin/cooldowns[/{deployment}]   forget cooldowns and open circuits (every replica, within ~1 s)
    GET    /admin/quality[/{group}]          per category of each ``quality`` group: the deployment serving it,
                                             its bar, and every deployment's quality estimate (mean, lower bound)

Scopes: tenant, team, key, user, tag, agent, agent_run (limits also: model). ``id`` ``*`` is the default for
every id of the scope. Ids a caller chooses (user, tag, agent, agent run) are per tenant: name them as
``tenant/id`` (``acme/planner/run-7``) or with ``?tenant=``; a bare id sets the rule for every tenant. Rules set
here are stored in the SQLite store and, with Redis, in Redis, and every worker of every replica applies them
within a second; config values are the defaults they override.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec
import orjson

from gateway import approvals
from gateway.auth import key_from_headers
from gateway.config import ApprovalSpec, BudgetRule, KeySpec, LimitRule
from gateway.dialects.openai import OpenAIDialect, error_body
from gateway.errors import GatewayError
from gateway.observability import http as obs_http
from gateway.pricing import NANO
from gateway.scopes import TENANT_SCOPED, admin_scope
from gateway.stages.budget import charge_for, describe_period, period_end
from gateway.state.policies import BUDGET_SCOPES, LIMIT_SCOPES
from gateway.telemetry.metrics import MAX_AGE_S, METRICS, total

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.admin")
T = TypeVar("T")
JSON = [("content-type", "application/json")]
KINDS: dict[str, tuple[str, type[BudgetRule] | type[LimitRule], Any]] = {
    "budgets": ("budget", BudgetRule, BUDGET_SCOPES),
    "limits": ("limit", LimitRule, LIMIT_SCOPES),
}


MAX_PATH = 512  # what a record keeps of an admin path
MAX_IDENT = 400  # a rule's id: tenant/agent/run, each part at most 128 characters


class AdminDialect(OpenAIDialect):
    """Admin errors have the OpenAI error shape; records say ``dialect: admin``."""

    name = "admin"


async def handle(gw: Any, scope: Any, proto: Any, ctx: Any = None) -> int:
    """Answer one admin request; returns the status. ``ctx`` (the request's record) gets the method, path,
    target and error code: every admin call is auditable, a crashed one recorded as the 500 it answered."""
    method, path = scope.method, scope.path
    audit: dict[str, Any] = {"method": method, "path": path[:MAX_PATH]}
    if ctx is not None:
        ctx.flags["admin"] = audit
    try:
        admin_key = gw.cfg.admin.key
        if not admin_key:
            raise GatewayError("not_found", "The admin API is disabled: set admin.key in the config.")
        # only Authorization: the admin key is not a gateway key, and x-api-key is what SDKs send those in
        given = key_from_headers(scope.headers.get("authorization"), None) or ""
        if not hmac.compare_digest(given.encode(), admin_key.encode()):
            raise GatewayError(
                "invalid_api_key", "The admin API needs the admin key (admin.key) as 'Authorization: Bearer'."
            )
        body = Body(gw, scope, proto)
        status, answer = await route(gw, method, path, scope.query_string, body, audit)
    except GatewayError as e:
        _failed(ctx, e)
        proto.response_bytes(e.status, [*JSON, *e.headers.items()], error_body(e))
        return e.status
    except Exception as e:  # never a stack trace to the caller; recorded as what it is
        log.exception("admin call %s %s failed", method, path[:MAX_PATH])
        err = GatewayError("internal_error", f"The admin call failed in the gateway ({type(e).__name__}).")
        _failed(ctx, err)
        proto.response_bytes(err.status, JSON, error_body(err))
        return err.status
    if isinstance(answer, obs_http.Raw):
        proto.response_bytes(status, [("content-type", answer.content_type)], answer.body)
    else:
        proto.response_bytes(status, JSON, orjson.dumps(answer))
    return status


def _failed(ctx: Any, err: GatewayError) -> None:
    if ctx is not None:
        ctx.status = err.status
        ctx.error = (err.code, err.message[:MAX_PATH])


class Body:
    """The request body, read on demand, bounded by ``server.max_body_bytes`` like every other body."""

    def __init__(self, gw: Any, scope: Any, proto: Any) -> None:
        self.gw, self.scope, self.proto = gw, scope, proto

    async def json(self) -> dict[str, Any]:
        raw = await self.gw.read_body(self.scope, self.proto)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise GatewayError("invalid_json", "The admin request body must be a JSON object.")
        return data

    async def decode(self, typ: type[T], what: str) -> T:
        """The body as one of the config's typed structs: the same types and bounds as in the config file."""
        try:
            return msgspec.convert(await self.json(), typ)
        except msgspec.ValidationError as e:
            raise GatewayError("invalid_request", f"Invalid {what}: {e}.") from None


ROUTES = {  # head -> methods it answers (anything else on a known path is a 405)
    "keys": ("GET", "POST", "DELETE"),
    "budgets": ("GET", "PUT", "DELETE"),
    "limits": ("GET", "PUT", "DELETE"),
    "spend": ("GET",),
    "approvals": ("POST",),
    "stats": ("GET",),
    "compliance": ("GET", "PUT", "DELETE"),
    "quarantine": ("GET",),
    "costs": ("GET",),
    "alerts": ("GET",),
    "cooldowns": ("DELETE",),
    "cache": ("GET", "POST"),
    "reload": ("POST",),
    "quality": ("GET",),
}


async def route(
    gw: Any, method: str, path: str, query_string: str, body: Body, audit: dict[str, Any]
) -> tuple[int, Any]:
    parts = [unquote(p) for p in path.split("/") if p][1:]  # drop "admin"
    query = {k: v[0] for k, v in parse_qs(query_string).items()}
    head = parts[0] if parts else ""
    if head in ROUTES and method not in ROUTES[head]:
        raise GatewayError(
            "method_not_allowed",
            f"{method} is not supported on /admin/{head}; use {' or '.join(ROUTES[head])}.",
            headers={"allow": ", ".join(ROUTES[head])},
        )
    if len(parts) > 1:
        audit["target"] = "/".join(parts[1:])[:MAX_PATH]
    if head == "keys":
        return await keys(gw, method, parts[1:], query, body, audit)
    if head in KINDS:
        return await rules(gw, method, head, parts[1:], query, body)
    if parts == ["spend"]:
        audit["target"] = f"{query.get('scope', 'tenant')}/{query.get('id', '')}"[:MAX_PATH]
        return 200, await spend(gw, query.get("scope", "tenant"), query.get("id", ""), query.get("tenant"))
    if parts == ["approvals"]:
        return await approve(gw, await body.decode(ApprovalSpec, "approval"), audit)
    if parts == ["costs"]:
        return 200, await obs_http.costs(gw, query)
    if parts == ["alerts"]:
        return 200, await obs_http.alerts(gw, query)
    if head == "compliance":
        from gateway.compliance import admin as compliance_admin

        return await compliance_admin.handle(gw, method, parts[1:], body.json)
    if parts == ["quarantine"]:
        from gateway.compliance import admin as compliance_admin

        return 200, compliance_admin.quarantine(gw, query.get("tenant"))
    if parts == ["stats"]:
        return 200, await stats(gw)
    if head == "cooldowns" and len(parts) <= 2:
        cleared = await gw.router.clear_cooldowns(parts[1] if len(parts) == 2 else None)
        if len(parts) == 2 and not cleared:
            raise GatewayError("not_found", f"No deployment {parts[1]!r} (GET /admin/stats lists them).")
        return 200, {"cleared": cleared}
    if parts == ["cache", "purge"] and method == "POST":
        from gateway.cache.store import PurgeFilter

        return 200, await cache_purge(gw, await body.decode(PurgeFilter, "purge"))
    if parts == ["cache"] and method == "GET":
        return 200, await _cache(gw).store.stats()
    if parts == ["reload"]:
        return 202, reload_config()
    if head == "quality" and len(parts) <= 2:
        loop = gw.router.loop
        groups = sorted(gw.router.quality) if len(parts) == 1 else [parts[1]]
        if loop is None or any(g not in gw.router.quality for g in groups):
            raise GatewayError("not_found", "No model group with the quality strategy by that name.")
        await loop.sync()
        return 200, {g: loop.snapshot(g) for g in groups}
    raise GatewayError(
        "not_found",
        f"No admin route for {method} {path[:MAX_PATH]}; see the Admin API section of the README.",
    )


def reload_config() -> dict[str, Any]:
    from gateway.config import ConfigError
    from gateway.server import request_reload

    try:
        return request_reload()
    except ConfigError as e:
        raise GatewayError(
            "invalid_config", f"The config was not reloaded, the running one keeps serving: {e}"
        ) from None


async def keys(
    gw: Any, method: str, rest: list[str], query: dict[str, str], body: Body, audit: dict[str, Any]
) -> tuple[int, Any]:
    store = gw.store
    if not rest and method == "POST":
        spec = await body.decode(KeySpec, "key")
        unknown = [m for m in spec.models if gw.router.resolve(m) is None]
        if unknown:
            raise GatewayError("invalid_request", f"Unknown model groups {unknown}.", param="models")
        if spec.profile is not None and spec.profile not in gw.cfg.stages.profiles:
            raise GatewayError("invalid_request", f"Unknown profile {spec.profile!r}.", param="profile")
        key_id, key = store.create_key(
            spec.tenant,
            team=spec.team,
            name=spec.name,
            models=spec.models,
            residency=spec.residency,
            profile=spec.profile,
        )
        audit["target"] = key_id
        return 201, {
            "key_id": key_id,
            "key": key,
            "tenant": spec.tenant,
            "note": "the key is shown once; store it now",
        }
    if not rest and method == "GET":
        return 200, {"data": store.list_keys(query.get("tenant"))}
    if len(rest) == 1 and method == "DELETE":
        if not store.revoke_key(rest[0]):
            raise GatewayError("not_found", f"No active key {rest[0][:128]!r} (GET /admin/keys lists them).")
        return 200, {"key_id": rest[0], "revoked": True}
    raise GatewayError(
        "method_not_allowed", f"{method} is not supported on /admin/keys{'/…' if rest else ''}."
    )


async def rules(
    gw: Any, method: str, head: str, rest: list[str], query: dict[str, str], body: Body
) -> tuple[int, Any]:
    kind, typ, scopes = KINDS[head]
    policies = gw.state.policies
    if not rest and method == "GET":
        await policies.refresh(force=True)
        return 200, {"data": [p for p in policies.listing() if p["kind"] == kind]}
    if len(rest) < 2:
        raise GatewayError(
            "not_found", f"Use /admin/{head}/{{scope}}/{{id}}; scope is one of {', '.join(scopes)}."
        )
    scope_name, ident = rest[0], "/".join(rest[1:])
    if len(ident) > MAX_IDENT or not ident.isprintable():
        raise GatewayError(
            "invalid_request", f"A rule's id is printable text of at most {MAX_IDENT} characters."
        )
    if scope_name not in scopes:
        raise GatewayError(
            "invalid_request", f"Unknown {kind} scope {scope_name!r}; one of {', '.join(scopes)}."
        )
    if query.get("tenant") and scope_name in TENANT_SCOPED:
        ident = admin_scope(scope_name, ident, query["tenant"]).ident
    if method == "DELETE":
        await policies.put(kind, scope_name, ident, None)
        return 200, {"scope": scope_name, "id": ident, "removed": True}
    if method != "PUT":
        raise GatewayError("method_not_allowed", f"Use PUT or DELETE on /admin/{head}/{scope_name}/{ident}.")
    rule: BudgetRule | LimitRule = await body.decode(typ, f"{kind} rule")
    _check_rule(gw, rule)
    await policies.put(kind, scope_name, ident, rule)
    return 200, {"scope": scope_name, "id": ident, "rule": msgspec.to_builtins(rule)}


def _check_rule(gw: Any, rule: Any) -> None:
    """What the types cannot say (their bounds are checked when the body is decoded)."""
    if isinstance(rule, BudgetRule):
        if rule.on_exceed == "downgrade" and rule.downgrade_to not in gw.cfg.models:
            raise GatewayError(
                "invalid_request", "on_exceed: downgrade needs downgrade_to, an existing model group."
            )
    elif rule.rpm is None and rule.tpm is None:
        raise GatewayError("invalid_request", "A limit needs rpm or tpm.")


def _key_id(gw: Gateway, ident: str) -> str:
    """Key budgets are counted by key id; an admin may name the key instead."""
    for p in gw.auth.static.values():
        if ident in (p.name, p.key_id):
            return str(p.key_id)
    for k in gw.store.list_keys():
        if ident in (k["name"], k["key_id"]):
            return str(k["key_id"])
    return ident


async def spend(gw: Gateway, kind: str, ident: str, tenant: str | None) -> dict[str, Any]:
    if kind not in BUDGET_SCOPES:
        raise GatewayError(
            "invalid_request", f"Unknown budget scope {kind!r}; one of {', '.join(BUDGET_SCOPES)}."
        )
    if not ident:
        raise GatewayError(
            "invalid_request", "Name the scope's id: /admin/spend?scope=tenant&id=acme.", param="id"
        )
    if kind == "key":
        ident = _key_id(gw, ident)
    scope = admin_scope(kind, ident, tenant)
    if kind in TENANT_SCOPED and "/" not in scope.ident:
        raise GatewayError(
            "invalid_request",
            f"{kind} ids are per tenant: use id=tenant/{ident} or add &tenant=…",
            param="tenant",
        )
    await gw.state.policies.refresh()
    names = scope.names
    if kind == "key":
        names = (*(p.name for p in gw.auth.static.values() if p.key_id == ident and p.name), *names)
    rule = gw.state.policies.budget(kind, *names)
    if rule is None:
        raise GatewayError(
            "not_found", f"No budget applies to {scope.label} (PUT /admin/budgets/{kind}/{ident})."
        )
    now = time.time()
    spent = await gw.state.spent(charge_for(scope, rule, now, gw.cfg.stages.budget.idle_ttl_s)) / NANO
    return {
        "scope": kind,
        "id": scope.ident,
        "period": describe_period(rule),
        "limit_usd": rule.usd,
        "soft_usd": rule.soft_usd,
        "spent_usd": spent,
        "remaining_usd": max(0.0, rule.usd - spent),
        "resets_at": period_end(rule, now),
        "shared": gw.state.name == "redis",
    }


def _key_exists(gw: Any, key_id: str) -> bool:
    if any(p.key_id == key_id for p in gw.auth.static.values()):
        return True
    return gw.store.active_key(key_id)


async def approve(gw: Any, spec: ApprovalSpec, audit: dict[str, Any]) -> tuple[int, Any]:
    audit["target"] = spec.key_id
    if not _key_exists(gw, spec.key_id):
        raise GatewayError(
            "not_found", f"No active key {spec.key_id!r} (GET /admin/keys lists them).", param="key_id"
        )
    ttl = spec.ttl_s if spec.ttl_s is not None else gw.cfg.stages.budget.approval_ttl_s
    token = await approvals.issue(gw.state, spec.key_id, spec.max_usd, float(ttl))
    return 201, {
        "token": token,
        "key_id": spec.key_id,
        "max_usd": spec.max_usd,
        "expires_at": time.time() + ttl,
        "note": "single use, for this key, for one request predicted to cost up to max_usd: send it as the "
        "x-gateway-approval header",
    }


async def stats(gw: Gateway) -> dict[str, Any]:
    snaps = await gw.state.read_metrics(MAX_AGE_S)
    snaps[METRICS.worker] = METRICS.snapshot()  # this worker's, live
    now = time.time()
    return {
        "total": total(snaps),
        "workers": snaps,
        "cooldowns": {d: round(u - now, 3) for d, u in (await gw.state.cooldowns(None)).items()},
        "deployments": gw.router.health_report(),  # this worker's circuits and cooldowns
        "state": {"backend": gw.state.name, "degraded": bool(gw.state.degraded)},
    }


def _cache(gw: Any) -> Any:
    for s in gw.pipeline.stages:
        if s.name == "cache":
            return s
    raise GatewayError("not_found", "The cache is off: set stages.cache.enabled in the config.")


async def cache_purge(gw: Any, f: Any) -> dict[str, Any]:
    return {"purged": await _cache(gw).purge(f), "filter": msgspec.to_builtins(f)}
