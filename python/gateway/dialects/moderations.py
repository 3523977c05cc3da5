"""``POST /v1/moderations``: answered by the gateway's own content filter once it has one; until then a clear 501
(in OpenAI's error shape, recorded like every request), so a client learns at once instead of getting a 404."""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.dialects.openai import error_body
from gateway.errors import GatewayError
from gateway.stages.enrich import enrich_headers


async def serve(gw: Any, scope: Any, proto: Any) -> None:
    ctx = RequestContext("moderations", "openai")
    try:
        gw.authenticate(ctx, scope)
        raise GatewayError(
            "not_implemented",
            "The gateway has no content classifier to serve /v1/moderations yet; call a moderation model directly.",
        )
    except GatewayError as e:
        ctx.status, ctx.error = e.status, (e.code, e.message)
        proto.response_bytes(e.status, enrich_headers(ctx, "application/json"), error_body(e))
    finally:
        gw.finish_record(ctx)
