"""Admin API for compliance: bind profiles to tenants/teams/keys/tags/model groups, define profiles at run time,
list requests held for review. Changes are stored like budget rules and reach every worker within a second.

- ``PUT /admin/compliance/{scope}/{id}`` ``{"profile": "strict"}`` (scope: key | tag | team | tenant | model)
- ``PUT /admin/compliance/profile/{name}`` with a profile body (the config's ``stages.compliance.profiles`` shape)
- ``DELETE`` either to fall back to the config; ``GET /admin/compliance`` lists run-time entries
- ``GET /admin/quarantine[?tenant=…]`` lists held requests with their decisions and bodies
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.compliance.profiles import KIND, SCOPES
from gateway.config import ComplianceProfile
from gateway.errors import GatewayError


async def handle(gw: Any, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
    policies = gw.state.policies
    if not rest and method == "GET":
        await policies.refresh(force=True)
        return 200, {"data": policies.raw.get(KIND, {})}
    if len(rest) < 2:
        raise GatewayError(
            "not_found",
            f"Use /admin/compliance/{{scope}}/{{id}}; scope is one of {', '.join((*SCOPES, 'profile'))}.",
        )
    scope, ident = rest[0], "/".join(rest[1:])
    if scope not in (*SCOPES, "profile"):
        raise GatewayError(
            "invalid_request",
            f"Unknown compliance scope {scope!r}; one of {', '.join((*SCOPES, 'profile'))}.",
        )
    if method == "DELETE":
        await policies.put(KIND, scope, ident, None)
        return 200, {"scope": scope, "id": ident, "removed": True}
    if method != "PUT":
        raise GatewayError("method_not_allowed", f"Use PUT or DELETE on /admin/compliance/{scope}/{ident}.")
    d = await body()
    if scope == "profile":
        try:
            prof = msgspec.convert(d, ComplianceProfile)
        except msgspec.ValidationError as e:
            raise GatewayError("invalid_request", f"Invalid compliance profile: {e}.") from None
        inj = prof.injection
        if (
            inj is not None
            and "restrict" in (inj.action, inj.indirect_action)
            and inj.restrict_to not in gw.cfg.models
        ):
            raise GatewayError(
                "invalid_request", "action restrict needs restrict_to, an existing model group."
            )
        rule = msgspec.to_builtins(prof)
    else:
        name = d.get("profile") if isinstance(d, dict) else None
        known = set(gw.cfg.stages.compliance.profiles) | set(policies.raw.get(KIND, {}).get("profile", {}))
        if name not in known:
            raise GatewayError(
                "invalid_request", f"Unknown compliance profile {name!r}; known: {', '.join(sorted(known))}."
            )
        rule = {"profile": name}
    await policies.put(KIND, scope, ident, rule)
    return 200, {"scope": scope, "id": ident, "rule": rule}


def quarantine(gw: Any, tenant: str | None) -> dict[str, Any]:
    return {"data": gw.store.quarantined(tenant)}
