"""``GET /v1/models`` and ``GET /v1/models/{id}`` in the caller's dialect.

The official SDKs call the same paths: the ``anthropic`` SDK always sends ``anthropic-version``, so a request
with it gets Anthropic's shapes (``type``, ``display_name``, RFC 3339 ``created_at``; lists with ``has_more``,
``first_id``, ``last_id`` and ``limit``/``after_id``/``before_id`` paging), any other OpenAI's. A model id is a
model group name (or an alias of one) the caller's key may use; anything else is a 404 in the caller's shape.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from gateway.context import RequestContext
from gateway.dialects import openai as oai
from gateway.errors import GatewayError

JSON = "application/json"


def wants_anthropic(scope: Any) -> bool:
    return scope.headers.get("anthropic-version") is not None


def _rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def openai_model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "gateway"}


def anthropic_model(name: str, created: int) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": _rfc3339(created)}


def anthropic_list(names: list[str], created: int, query: str) -> dict[str, Any]:
    q = {k: v[0] for k, v in parse_qs(query or "").items()}
    try:
        limit = max(1, min(1000, int(q.get("limit", "20"))))
    except ValueError:
        raise GatewayError("invalid_request", "limit: Input should be an integer", param="limit") from None
    if q.get("after_id") in names:
        names = names[names.index(q["after_id"]) + 1 :]
    if q.get("before_id") in names:
        names = names[: names.index(q["before_id"])]
        names, more = names[-limit:], len(names) > limit
    else:
        names, more = names[:limit], len(names) > limit
    data = [anthropic_model(n, created) for n in names]
    return {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def render(gw: Any, rsgi_scope: Any, ctx: RequestContext, model_id: str | None, anthropic: bool) -> bytes:
    """The model list (``model_id`` None) or one model, in OpenAI's or Anthropic's shape."""
    names = gw.visible_models(ctx)
    if model_id is None:
        if anthropic:
            return orjson.dumps(anthropic_list(names, gw.started, getattr(rsgi_scope, "query_string", "")))
        return oai.render_models(names, gw.started)
    group = gw.router.resolve(model_id)
    if group is None or group not in names:
        raise GatewayError(
            "model_not_found",
            f"The model {model_id!r} does not exist on this gateway, or your key may not use it. "
            "GET /v1/models lists the models your key may use.",
            param="model",
        )
    make = anthropic_model if anthropic else openai_model
    return orjson.dumps(make(model_id, gw.started))
