"""Reading a request at the edge: the body, bounded by ``server.max_body_bytes`` before it is all in memory."""

from __future__ import annotations

from granian.rsgi import HTTPProtocol
from granian.rsgi import Scope as RsgiScope

from gateway.errors import GatewayError


def too_large(max_body: int) -> GatewayError:
    return GatewayError(
        "body_too_large",
        f"The request body exceeds the gateway's limit of {max_body} bytes; send a smaller request.",
    )


async def read_body(rsgi_scope: RsgiScope, proto: HTTPProtocol, max_body: int) -> bytes:
    """The whole body; refused as soon as the declared length or the bytes read pass ``max_body``."""
    declared = rsgi_scope.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise too_large(max_body)
    if declared is not None:
        body = await proto()
    else:
        parts, size = [], 0
        async for part in proto:
            size += len(part)
            if size > max_body:
                raise too_large(max_body)
            parts.append(part)
        body = b"".join(parts)
    if len(body) > max_body:
        raise too_large(max_body)
    return body
