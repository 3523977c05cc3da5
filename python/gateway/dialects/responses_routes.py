"""The ``/v1/responses`` endpoints: create (plain and streamed), retrieve, delete, list input items, cancel.

Create runs the same way as a chat request (auth, every pipeline stage, routing, records), with the conversation
store around it: ``previous_response_id`` loads the earlier turns before the stages run (so PII masking, limits and
budgets see the whole prompt), and a stored response (``store``, on by default as in OpenAI's API) is written
before a plain answer leaves, so a follow-up sent the moment the answer arrives finds it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from gateway.context import RequestContext
from gateway.conversations import Stored, load
from gateway.dialects import responses as rd
from gateway.dialects.openai import OpenAIDialect
from gateway.endpoints import answer
from gateway.enrich import enrich_headers
from gateway.errors import GatewayError
from gateway.types import Message

JSON = "application/json"
_messages = msgspec.json.Decoder(list[Message])
_encode = msgspec.json.Encoder().encode


def not_found(rid: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        "not_found",
        f"Response with id '{rid}' not found. Responses are kept for the key that created them, while their "
        "time to live lasts (conversations.ttl_s); send the whole conversation instead.",
        param=param,
    )


async def create(gw: Any, ctx: RequestContext, rsgi_scope: Any, proto: Any, _errors: Any) -> None:
    """``POST /v1/responses``."""
    dialect = rd.ResponsesDialect()  # per request: it holds the parsed call and its stream renderer
    gw.authenticate(ctx, rsgi_scope)
    body = await gw.read_body(rsgi_scope, proto)
    ctx.body_bytes = len(body)
    call = dialect.call = rd.parse(body)
    call.response_id = "resp_" + ctx.request_id
    req = call.req
    store = gw.conversations
    session = call.response_id
    if call.previous_response_id:
        prev = await load(store, call.previous_response_id, ctx.principal, "response")
        if prev is None:
            raise not_found(call.previous_response_id, "previous_response_id")
        rd.with_history(call, prev.messages)
        session = prev.session
    if ctx.session is None:
        ctx.session = session  # one PII session per conversation: placeholders stay stable
    # The conversation in the caller's words, taken before the stages rewrite the prompt (PII masking).
    convo = _encode(call.history + call.input_messages) if call.store else b""
    resp = await answer(gw, ctx, req, proto, dialect)
    if resp is None:  # streamed
        final = dialect.renderer.final if dialect.renderer is not None else None
        if call.store and final is not None:
            try:
                await store.put(call.response_id, _stored(ctx, call, convo, final, session))
            except GatewayError as e:  # the caller has its answer; the record says it was not kept
                ctx.flags["conversation_not_stored"] = e.code
        return
    obj = rd.response_dict(call, resp)
    if call.store:
        try:
            await store.put(call.response_id, _stored(ctx, call, convo, obj, session))
        except GatewayError as e:
            if gw.cfg.state.on_redis_failure == "fail_closed":
                raise
            ctx.flags["conversation_not_stored"] = e.code  # fail_open: the answer still goes out
    proto.response_bytes(200, enrich_headers(ctx, JSON), orjson.dumps(obj))


def _stored(ctx: RequestContext, call: rd.Call, convo: bytes, obj: dict[str, Any], session: str) -> Stored:
    p = ctx.principal
    return Stored(
        kind="response",
        tenant=p.tenant if p else None,
        key_id=p.key_id if p else None,
        created_at=call.created_at,
        model=call.req.model,
        messages=[*_messages.decode(convo), rd.output_message(obj)],
        session=session,
        items=call.input_items,
        response=obj,
    )


async def _owned(gw: Any, ctx: RequestContext, scope: Any, rid: str) -> Stored:
    gw.authenticate(ctx, scope)
    stored = await load(gw.conversations, rid, ctx.principal, "response")
    if stored is None:
        raise not_found(rid)
    return stored


async def retrieve(gw: Any, ctx: RequestContext, scope: Any, proto: Any, rid: str) -> None:
    """``GET /v1/responses/{id}``."""
    stored = await _owned(gw, ctx, scope, rid)
    proto.response_bytes(200, enrich_headers(ctx, JSON), orjson.dumps(stored.response))


async def delete(gw: Any, ctx: RequestContext, scope: Any, proto: Any, rid: str) -> None:
    """``DELETE /v1/responses/{id}``."""
    await _owned(gw, ctx, scope, rid)
    await gw.conversations.delete(rid)
    body = orjson.dumps({"id": rid, "object": "response", "deleted": True})
    proto.response_bytes(200, enrich_headers(ctx, JSON), body)


async def input_items(gw: Any, ctx: RequestContext, scope: Any, proto: Any, rid: str) -> None:
    """``GET /v1/responses/{id}/input_items`` (this turn's input, oldest first unless ``order=desc``)."""
    stored = await _owned(gw, ctx, scope, rid)
    items = [_item_resource(it) for it in stored.items]
    query = getattr(scope, "query_string", "") or ""
    if "order=desc" in query:
        items.reverse()
    body = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": False,
    }
    proto.response_bytes(200, enrich_headers(ctx, JSON), orjson.dumps(body))


def _item_resource(it: dict[str, Any]) -> dict[str, Any]:
    """An input item as the spec's ItemResource: an assistant message is an output message."""
    if it.get("type") == "message" and it.get("role") == "assistant":
        texts = [p.get("text", "") for p in it.get("content") or () if isinstance(p, dict)]
        return rd.message_item_with(it["id"], "".join(texts))
    return it


async def cancel(gw: Any, ctx: RequestContext, scope: Any, proto: Any, rid: str) -> None:
    """``POST /v1/responses/{id}/cancel``: only background responses can be cancelled, and the gateway runs none."""
    await _owned(gw, ctx, scope, rid)
    raise GatewayError(
        "invalid_request",
        "Only background responses can be cancelled, and the gateway answers every response in the foreground; "
        "this one has already finished.",
    )


def route(method: str, path: str) -> tuple[str, Any, Any] | None:
    """The (endpoint, error dialect, handler) of a /v1/responses request, or None when the path is not one."""
    if path == "/v1/responses" or path == "/responses":
        return ("responses", OpenAIDialect, create) if method == "POST" else None
    prefix = "/v1/responses/" if path.startswith("/v1/") else "/responses/"
    if not path.startswith(prefix):
        return None
    rid, _, tail = path[len(prefix) :].partition("/")
    action = {
        ("GET", ""): retrieve,
        ("DELETE", ""): delete,
        ("GET", "input_items"): input_items,
        ("POST", "cancel"): cancel,
    }.get((method, tail))
    if action is None or not rid:
        return None

    async def handler(gw: Any, ctx: RequestContext, rsgi_scope: Any, proto: Any, _errors: Any) -> None:
        assert action is not None
        await action(gw, ctx, rsgi_scope, proto, rid)

    return ("responses", OpenAIDialect, handler)
