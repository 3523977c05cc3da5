"""Cost pre-approval: a single-use token an admin issues for one expensive request.

A scope may set ``max_request_usd``; a request predicted to cost more gets 402 ``approval_required`` with the
estimate. ``POST /admin/approvals {key_id, max_usd, ttl_s?}`` issues a token bound to that key and amount; the
caller sends it once as ``x-gateway-approval``. Only the token's SHA-256 is stored (Redis when configured, so any
replica accepts it, and the SQLite store), it expires after ``ttl_s`` and is spent atomically by the first request
it covers: a token for another key or a smaller amount stays unspent.
"""

from __future__ import annotations

import hashlib
import secrets

from gateway.pricing import to_micros
from gateway.state.types import StateBackend

PREFIX = "gwa-"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue(state: StateBackend, key_id: str, max_usd: float, ttl_s: float) -> str:
    token = new_token()
    await state.put_approval(token_hash(token), key_id, to_micros(max_usd), ttl_s)
    return token


async def redeem(state: StateBackend, token: str, key_id: str, cost_micros: int) -> bool:
    if not token.startswith(PREFIX):
        return False
    return bool(await state.take_approval(token_hash(token), key_id, cost_micros))
