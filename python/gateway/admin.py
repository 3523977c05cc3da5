"""The admin API, under ``/admin/``, authenticated by the separate admin key (``admin.key`` in config).

    POST   /admin/keys                     {tenant, team?, name?, models?, residency?} → the new key, shown once
    GET    /admin/keys[?tenant=T]          keys (never their values)
    DELETE /admin/keys/{key_id}            revoke
    PUT    /admin/budgets/{scope}/{id}     {usd, period?, window_s?, soft_usd?, max_request_usd?, ...}
                                           scope: tenant | team | key | tag | agent | agent_run (id "*")
    GET    /admin/budgets                  budgets set at run time
    GET    /admin/spend?scope=S&id=X       spend in the current period, the limit and what remains
    POST   /admin/approvals                {key_id, max_usd, ttl_s?} → a single-use approval token

Budgets set here are stored in the SQLite store and picked up by every worker within 2 s.
"""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import parse_qs

import msgspec
import orjson

from gateway.config import BudgetRule
from gateway.errors import GatewayError
from gateway.stages.auth import key_from_headers

JSON = [("content-type", "application/json")]


async def _json(proto: Any) -> dict[str, Any]:
    try:
        data = orjson.loads(await proto())
    except orjson.JSONDecodeError:
        raise GatewayError("invalid_json", "The admin request body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise GatewayError("invalid_json", "The admin request body must be a JSON object.")
    return data


def _budget_stage(gw: Any) -> Any:
    from gateway.stages.budget import BudgetStage

    return next((s for s in gw.pipeline.stages if isinstance(s, BudgetStage)), None)


async def handle(gw: Any, scope: Any, proto: Any) -> int:
    """Answer one admin request; returns the status (for the request's record)."""
    try:
        admin_key = gw.cfg.admin.key
        if not admin_key:
            raise GatewayError("not_found", "The admin API is disabled: set admin.key in the config.")
        given = key_from_headers(scope.headers.get("authorization"), scope.headers.get("x-api-key")) or ""
        if not hmac.compare_digest(given.encode(), admin_key.encode()):
            raise GatewayError(
                "invalid_api_key", "The admin API needs the admin key as 'Authorization: Bearer'."
            )
        status, body = await _route(gw, scope, proto)
    except GatewayError as e:
        status = e.status
        body = {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}
    proto.response_bytes(status, JSON, orjson.dumps(body))
    return status


async def _route(gw: Any, scope: Any, proto: Any) -> tuple[int, Any]:
    parts = [p for p in scope.path.split("/") if p][1:]  # drop "admin"
    query = {k: v[0] for k, v in parse_qs(scope.query_string).items()}
    method = scope.method
    store = gw.store
    if parts == ["keys"] and method == "POST":
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
    if parts == ["keys"] and method == "GET":
        return 200, {"data": store.list_keys(query.get("tenant"))}
    if len(parts) == 2 and parts[0] == "keys" and method == "DELETE":
        if not store.revoke_key(parts[1]):
            raise GatewayError("not_found", f"No active key {parts[1]!r}.")
        return 200, {"key_id": parts[1], "revoked": True}
    if len(parts) == 3 and parts[0] == "budgets" and method == "PUT":
        from gateway.stages.budget import SCOPES

        if parts[1] not in SCOPES:
            raise GatewayError(
                "invalid_request", f"Unknown budget scope {parts[1]!r}; one of {', '.join(SCOPES)}."
            )
        d = await _json(proto)
        try:
            rule = msgspec.convert(d, BudgetRule)
        except msgspec.ValidationError as e:
            raise GatewayError("invalid_request", f"Invalid budget: {e}.") from None
        store.set_budget(parts[1], parts[2], msgspec.to_builtins(rule))
        return 200, {"scope": parts[1], "id": parts[2], "rule": msgspec.to_builtins(rule)}
    if parts == ["budgets"] and method == "GET":
        return 200, {"data": [{"scope": s, "id": i, "rule": r} for (s, i), r in store.budgets().items()]}
    if parts == ["spend"] and method == "GET":
        return 200, await _spend(gw, query.get("scope", "tenant"), query.get("id", ""))
    if parts == ["approvals"] and method == "POST":
        d = await _json(proto)
        if not isinstance(d.get("key_id"), str) or not isinstance(d.get("max_usd"), int | float):
            raise GatewayError("invalid_request", "An approval needs key_id (string) and max_usd (number).")
        token = store.create_approval(d["key_id"], float(d["max_usd"]), float(d.get("ttl_s", 3600)))
        return 201, {
            "token": token,
            "key_id": d["key_id"],
            "max_usd": d["max_usd"],
            "note": "single use; send it as the x-gateway-approval header",
        }
    raise GatewayError("not_found", f"No admin route for {method} {scope.path}.")


async def _spend(gw: Any, scope_name: str, ident: str) -> dict[str, Any]:
    from gateway.stages.budget import period_key

    stage = _budget_stage(gw)
    if stage is None:
        raise GatewayError("not_found", "Budgets are not enabled (stages.budget.enabled).")
    rule = stage.rules().get(scope_name, {}).get("*" if scope_name == "agent_run" else ident)
    if rule is None:
        raise GatewayError("not_found", f"No budget for {scope_name} {ident!r}.")
    suffix, _ = period_key(rule, time.time())
    label = scope_name.replace("_", " ")
    spent = await gw.state.spent(f"bud:{label}:{ident}:{suffix}") / 1e6
    return {
        "scope": scope_name,
        "id": ident,
        "period": suffix,
        "limit_usd": rule.usd,
        "spent_usd": spent,
        "remaining_usd": max(0.0, rule.usd - spent),
    }
