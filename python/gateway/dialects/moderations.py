"""``POST /v1/moderations``: answered by the gateway's own content filter once it has one; until then a clear 501
(in OpenAI's error shape, recorded like every request), so a client learns at once instead of getting a 404."""

from __future__ import annotations

from gateway.errors import GatewayError


def not_implemented() -> GatewayError:
    return GatewayError(
        "not_implemented",
        "The gateway has no content classifier to serve /v1/moderations yet; call a moderation model directly.",
    )
