"""Authentication: a gateway key (``Authorization: Bearer`` or ``x-api-key``) → the calling Principal.

Keys are looked up by their hash (HMAC-SHA-256 under ``server.key_secret`` when set, else SHA-256; see
``KeyHasher``): first among the keys declared in config (hashed at load), then in the store.
Store answers are cached for a few seconds in each worker so the hot path is a hash and a dict lookup; a revoked
key stops working within ``ttl_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec

from gateway.config import KeyConfig, TeamConfig, TenantConfig
from gateway.errors import GatewayError
from gateway.store.sqlite import KeyHasher, SqliteStore
from gateway.types import Principal


def principal_from_config(k: KeyConfig, index: int) -> Principal:
    return Principal(
        key_id=f"cfg_{k.name or index}",
        tenant=k.tenant,
        team=k.team,
        name=k.name,
        models=tuple(k.models),
        residency=tuple(k.residency),
        profile=k.profile,
        pins=tuple(sorted(k.pins.items())),
    )


def with_org_policy(
    p: Principal, teams: dict[str, TeamConfig], tenants: dict[str, TenantConfig]
) -> Principal:
    """A key inherits its team's pins (its own win) and the first residency set among key, team, tenant."""
    team = teams.get(p.team or "")
    tenant = tenants.get(p.tenant)
    pins = dict(team.pins) if team else {}
    pins.update(p.pins)
    residency = (
        p.residency or (tuple(team.residency) if team else ()) or (tuple(tenant.residency) if tenant else ())
    )
    if pins == dict(p.pins) and residency == p.residency:
        return p
    return msgspec.structs.replace(p, pins=tuple(sorted(pins.items())), residency=residency)


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class Authenticator:
    def __init__(
        self,
        keys: Iterable[KeyConfig],
        store: SqliteStore | None,
        ttl_s: float = 5.0,
        teams: dict[str, TeamConfig] | None = None,
        tenants: dict[str, TenantConfig] | None = None,
    ) -> None:
        self.teams = teams or {}
        self.tenants = tenants or {}
        self.hash = store.hasher if store is not None else KeyHasher()
        self.static = {
            self.hash(k.key): with_org_policy(principal_from_config(k, i), self.teams, self.tenants)
            for i, k in enumerate(keys)
        }
        self.store = store
        self.ttl_s = ttl_s
        self.cache: dict[str, tuple[Principal | None, float]] = {}

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise GatewayError(
                "missing_api_key",
                "No gateway key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
            )
        h = self.hash(key)
        p = self.static.get(h)
        if p is not None:
            return p
        now = time.monotonic()
        hit = self.cache.get(h)
        if hit is not None and hit[1] > now:
            p = hit[0]
        elif self.store is not None:
            p = self.store.find_key(h)
            legacy = self.hash.legacy(key) if p is None else None
            if legacy is not None:  # stored before server.key_secret was set: move it under the secret
                p = self.store.find_key(legacy)
                if p is not None:
                    self.store.rehash(legacy, h)
            if p is not None:
                p = with_org_policy(p, self.teams, self.tenants)
            if len(self.cache) > 100_000:
                self.cache.clear()
            self.cache[h] = (p, now + self.ttl_s)
        if p is None:
            raise GatewayError(
                "invalid_api_key",
                "The gateway key is not valid (unknown or revoked). Check the key or ask an admin for a new one.",
            )
        return p
