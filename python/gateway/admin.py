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
    GET    /admin/stats                      contract counters summed over every worker (and replica, with
                                             Redis): queue depth, queued/admitted/timed out, soft-budget alerts,
                                             retry-budget refusals; deployments cooling down

Scopes: tenant, team, key, user, tag, agent, agent_run (limits also: model). ``id`` ``*`` is the default for
every id of the scope. Ids a caller chooses (user, tag, agent, agent run) are per tenant: name them as
``tenant/id`` (``acme/planner/run-7``) or with ``?tenant=``; a bare id sets the rule for every tenant. Rules set
here are stored in the SQLite store and, with Redis, in Redis, and every worker of every replica applies them
within a second; config values are the defaults they override.
"""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
import orjson

from gateway import approvals
from gateway.config import BudgetRule, LimitRule
from gateway.dialects.openai import error_body
from gateway.errors import GatewayError
from gateway.observability import http as obs_http
from gateway.pricing import MICRO
from gateway.stages.auth import key_from_headers
from gateway.stages.budget import charge_for, describe_period, period_end
from gateway.stages.scopes import TENANT_SCOPED, admin_scope
from gateway.state.metrics import MAX_AGE_S, METRICS, total
from gateway.state.policies import BUDGET_SCOPES, LIMIT_SCOPES

JSON = [("content-type", "application/json")]
KINDS = {"budgets": ("budget", BudgetRule, BUDGET_SCOPES), "limits": ("limit", LimitRule, LIMIT_SCOPES)}


async def handle(gw: Any, scope: Any, proto: Any) -> int:
    """Answer one admin request; returns the status (for the request's record)."""
    try:
        admin_key = gw.cfg.admin.key
        if not admin_key:
            raise GatewayError("not_found", "The admin API is disabled: set admin.key in the config.")
        given = key_from_headers(scope.headers.get("authorization"), scope.headers.get("x-api-key")) or ""
        if not hmac.compare_digest(given.encode(), admin_key.encode()):
            raise GatewayError(
                "invalid_api_key", "The admin API needs the admin key (admin.key) as 'Authorization: Bearer'."
            )
        status, body = await route(gw, scope.method, scope.path, scope.query_string, proto)
    except GatewayError as e:
        proto.response_bytes(e.status, JSON, error_body(e))
        return e.status
    if isinstance(body, obs_http.Raw):
        proto.response_bytes(status, [("content-type", body.content_type)], body.body)
    else:
        proto.response_bytes(status, JSON, orjson.dumps(body))
    return status


async def _json(proto: Any) -> dict[str, Any]:
    try:
        data = orjson.loads(await proto())
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise GatewayError("invalid_json", "The admin request body must be a JSON object.")
    return data


async def route(gw: Any, method: str, path: str, query_string: str, proto: Any) -> tuple[int, Any]:
    parts = [unquote(p) for p in path.split("/") if p][1:]  # drop "admin"
    query = {k: v[0] for k, v in parse_qs(query_string).items()}
    head = parts[0] if parts else ""
    if head == "keys":
        return await keys(gw, method, parts[1:], query, proto)
    if head in KINDS:
        return await rules(gw, method, head, parts[1:], query, proto)
    if parts == ["spend"] and method == "GET":
        return 200, await spend(gw, query.get("scope", "tenant"), query.get("id", ""), query.get("tenant"))
    if parts == ["approvals"] and method == "POST":
        return await approve(gw, await _json(proto))
    if parts == ["costs"] and method == "GET":
        return 200, await obs_http.costs(gw, query)
    if parts == ["alerts"] and method == "GET":
        return 200, await obs_http.alerts(gw, query)
    if parts == ["stats"] and method == "GET":
        return 200, await stats(gw)
    raise GatewayError(
        "not_found",
        f"No admin route for {method} {path}; see the Admin API section of the README.",
    )


async def keys(gw: Any, method: str, rest: list[str], query: dict[str, str], proto: Any) -> tuple[int, Any]:
    store = gw.store
    if not rest and method == "POST":
        d = await _json(proto)
        if not isinstance(d.get("tenant"), str) or not d["tenant"]:
            raise GatewayError("invalid_request", "A key needs a tenant.", param="tenant")
        key_id, key = store.create_key(
            d["tenant"],
            team=d.get("team"),
            name=d.get("name"),
            models=d.get("models") or (),
            residency=d.get("residency") or (),
        )
        return 201, {
            "key_id": key_id,
            "key": key,
            "tenant": d["tenant"],
            "note": "the key is shown once; store it now",
        }
    if not rest and method == "GET":
        return 200, {"data": store.list_keys(query.get("tenant"))}
    if len(rest) == 1 and method == "DELETE":
        if not store.revoke_key(rest[0]):
            raise GatewayError("not_found", f"No active key {rest[0]!r} (GET /admin/keys lists them).")
        return 200, {"key_id": rest[0], "revoked": True}
    raise GatewayError(
        "method_not_allowed", f"{method} is not supported on /admin/keys{'/…' if rest else ''}."
    )


async def rules(
    gw: Any, method: str, head: str, rest: list[str], query: dict[str, str], proto: Any
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
    try:
        rule = msgspec.convert(await _json(proto), typ)
    except msgspec.ValidationError as e:
        raise GatewayError("invalid_request", f"Invalid {kind} rule: {e}.") from None
    _check_rule(gw, rule)
    await policies.put(kind, scope_name, ident, rule)
    return 200, {"scope": scope_name, "id": ident, "rule": msgspec.to_builtins(rule)}


def _check_rule(gw: Any, rule: Any) -> None:
    if isinstance(rule, BudgetRule):
        if rule.on_exceed == "downgrade" and rule.downgrade_to not in gw.cfg.models:
            raise GatewayError(
                "invalid_request", "on_exceed: downgrade needs downgrade_to, an existing model group."
            )
        if rule.usd < 0 or (rule.window_s is not None and rule.window_s < 1):
            raise GatewayError("invalid_request", "usd must be >= 0 and window_s >= 1.")
    elif any(v is not None and v <= 0 for v in (rule.rpm, rule.tpm)) or rule.window_s <= 0:
        raise GatewayError("invalid_request", "rpm, tpm and window_s must be positive.")


def _key_id(gw: Any, ident: str) -> str:
    """Key budgets are counted by key id; an admin may name the key instead."""
    for p in gw.auth.static.values():
        if ident in (p.name, p.key_id):
            return str(p.key_id)
    for k in gw.store.list_keys():
        if ident in (k["name"], k["key_id"]):
            return str(k["key_id"])
    return ident


async def spend(gw: Any, kind: str, ident: str, tenant: str | None) -> dict[str, Any]:
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
    spent = await gw.state.spent(charge_for(scope, rule, now)) / MICRO
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


async def approve(gw: Any, d: dict[str, Any]) -> tuple[int, Any]:
    key_id, max_usd = d.get("key_id"), d.get("max_usd")
    if not isinstance(key_id, str) or not isinstance(max_usd, int | float) or max_usd <= 0:
        raise GatewayError(
            "invalid_request", "An approval needs key_id (string) and max_usd (a positive number)."
        )
    ttl = d.get("ttl_s", gw.cfg.stages.budget.approval_ttl_s)
    if not isinstance(ttl, int | float) or ttl <= 0:
        raise GatewayError("invalid_request", "ttl_s must be a positive number of seconds.", param="ttl_s")
    token = await approvals.issue(gw.state, key_id, float(max_usd), float(ttl))
    return 201, {
        "token": token,
        "key_id": key_id,
        "max_usd": max_usd,
        "expires_at": time.time() + ttl,
        "note": "single use, for this key, for one request predicted to cost up to max_usd: send it as the "
        "x-gateway-approval header",
    }


async def stats(gw: Any) -> dict[str, Any]:
    snaps = await gw.state.read_metrics(MAX_AGE_S)
    snaps[METRICS.worker] = METRICS.snapshot()  # this worker's, live
    return {
        "total": total(snaps),
        "workers": snaps,
        "cooldowns": await gw.state.cooldowns(None),
        "state": {"backend": gw.state.name, "degraded": bool(gw.state.degraded)},
    }
