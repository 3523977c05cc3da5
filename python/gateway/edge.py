"""Reading a request at the edge: the body, bounded by ``server.max_body_bytes`` before it is all in memory and by
``server.body_read_timeout_s`` in time; a client that leaves while sending it is a 499, not an internal error."""

from __future__ import annotations

import asyncio
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, ProtocolError
from granian.rsgi import Scope as RsgiScope

from gateway.errors import GatewayError

# What Granian raises when the connection goes away under a read
_GONE = (ProtocolClosed, ProtocolError, ConnectionError)


def too_large(max_body: int) -> GatewayError:
    return GatewayError(
        "body_too_large",
        f"The request body exceeds the gateway's limit of {max_body} bytes; send a smaller request.",
    )


def client_gone(what: str) -> GatewayError:
    return GatewayError("client_disconnected", f"The client went away {what}.")


async def read_body(rsgi_scope: RsgiScope, proto: HTTPProtocol, max_body: int, timeout_s: float) -> bytes:
    """The whole body; refused as soon as the declared length or the bytes read pass ``max_body``, answered 408
    when it is not complete within ``timeout_s`` (a slow or stalled sender holds no worker forever)."""
    declared = rsgi_scope.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise too_large(max_body)
    try:
        async with asyncio.timeout(timeout_s):
            body = await _read(proto, max_body, declared is not None)
    except TimeoutError:
        raise GatewayError(
            "request_timeout",
            f"The request body did not arrive within {timeout_s:g} s; send it at once, or check the connection.",
        ) from None
    except _GONE:
        raise client_gone("while sending the request body") from None
    if len(body) > max_body:
        raise too_large(max_body)
    return body


async def _read(proto: HTTPProtocol, max_body: int, declared: bool) -> bytes:
    if declared:
        return await proto()
    parts, size = [], 0
    async for part in proto:
        size += len(part)
        if size > max_body:
            raise too_large(max_body)
        parts.append(part)
    return b"".join(parts)


def abandon_on_disconnect(ctx: Any, proto: HTTPProtocol) -> Any:
    """Cancel the request's task when its client disconnects before the answer, so an abandoned request stops
    its upstream call and settles at once instead of running to the deployment's timeout. The caller cancels the
    returned watch when the request is over (the watch is a Granian future; cancelling it ends its wait)."""
    task = asyncio.current_task()
    watch: Any = proto.client_disconnect()  # a Granian future (typed as a coroutine in its stubs)

    def gone(fut: Any) -> None:
        if fut.cancelled() or task is None or task.done():
            return
        ctx.flags["client_disconnected"] = True
        task.cancel()

    watch.add_done_callback(gone)
    return watch
