"""The ``/v1/responses`` endpoints: create (plain and streamed), retrieve, delete, list input items, cancel.

Create runs the same way as a chat request (auth, every pipeline stage, routing, records), with the conversation
store around it: ``previous_response_id`` loads the earlier turns before the stages run (so PII masking, limits and
budgets see the whole prompt), and a stored response (``store``, on by default as in OpenAI's API) is written
before a plain answer leaves, so a follow-up sent the moment the answer arrives finds it.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import orjson

from gateway.context import RequestContext
from gateway.conversations import Stored, load
from gateway.dialects import responses as rd
from gateway.dialects.openai import error_body
from gateway.errors import GatewayError
from gateway.stages.enrich import enrich_headers
from gateway.types import Message

log = logging.getLogger("gateway")
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


async def create(gw: Any, ctx: RequestContext, scope: Any, proto: Any, dialect: rd.ResponsesDialect) -> None:
    """``POST /v1/responses``."""
    gw.authenticate(ctx, scope)
    body = await gw.read_body(scope, proto)
    ctx.scratch["body_bytes"] = len(body)
    call = dialect.call = rd.parse(body)
    call.response_id = "resp_" + ctx.request_id
    req = call.req
    ctx.req, ctx.model, ctx.stream = req, req.model, req.stream
    store = gw.conversations
    session = call.response_id
    if call.previous_response_id:
        prev = await load(store, call.previous_response_id, ctx.principal, "response")
        if prev is None:
            raise not_found(call.previous_response_id, "previous_response_id")
        rd.with_history(call, prev.messages)
        session = prev.session
    if "session" not in ctx.scratch:
        ctx.scratch["session"] = session  # one PII session per conversation: placeholders stay stable
    # The conversation in the caller's words, taken before the stages rewrite the prompt (PII masking).
    convo = _encode(call.history + call.input_messages) if call.store else b""
    group = ctx.scratch["group"] = gw.resolve(ctx, req.model)
    await gw.pipeline.pre(ctx, req)
    group = ctx.scratch["group"]
    short = ctx.scratch.get("short_circuit")
    if req.stream:
        await gw.chat_stream(ctx, proto, dialect, group, req)
        final = dialect.renderer.final if dialect.renderer is not None else None
        if call.store and final is not None:
            try:
                await store.put(call.response_id, _stored(ctx, call, convo, final, session))
            except GatewayError as e:  # the caller has its answer; the record says it was not kept
                ctx.flags["conversation_not_stored"] = e.code
        return
    resp = short if short is not None else await gw.router.complete(ctx, group, req)
    resp = await gw.pipeline.post(ctx, resp)
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


async def serve(gw: Any, scope: Any, proto: Any, action: str, rid: str = "") -> None:
    """One frame for every /v1/responses request: its record, and errors in OpenAI's shape."""
    dialect = rd.ResponsesDialect()
    ctx = RequestContext("responses", "openai")
    sent = False
    try:
        if action == "create":
            await create(gw, ctx, scope, proto, dialect)
            sent = True  # a stream answers its own errors after the first byte
        else:
            await {"retrieve": retrieve, "delete": delete, "input_items": input_items, "cancel": cancel}[
                action
            ](gw, ctx, scope, proto, rid)
    except GatewayError as e:
        _fail(ctx, proto, e, sent)
    except Exception as e:  # never a stack trace to the caller, never a dead worker
        log.exception("internal error on request %s", ctx.request_id)
        err = GatewayError(
            "internal_error",
            f"The gateway failed on this request ({type(e).__name__}); quote request id {ctx.request_id}.",
        )
        _fail(ctx, proto, err, sent)
    finally:
        if action == "create":
            await gw.pipeline.finish(ctx)
        gw.finish_record(ctx)


def _fail(ctx: RequestContext, proto: Any, err: GatewayError, sent: bool) -> None:
    ctx.status = err.status
    ctx.error = (err.code, err.message)
    if not sent:
        proto.response_bytes(err.status, [*enrich_headers(ctx, JSON), *err.headers.items()], error_body(err))


def route(gw: Any, scope: Any, proto: Any) -> Any:
    """The coroutine serving a /v1/responses request, or None when the path is not one of them."""
    method, path = scope.method, scope.path
    if path == "/v1/responses" or path == "/responses":
        return serve(gw, scope, proto, "create") if method == "POST" else None
    prefix = "/v1/responses/" if path.startswith("/v1/") else "/responses/"
    if not path.startswith(prefix):
        return None
    rid, _, tail = path[len(prefix) :].partition("/")
    action = {
        ("GET", ""): "retrieve",
        ("DELETE", ""): "delete",
        ("GET", "input_items"): "input_items",
        ("POST", "cancel"): "cancel",
    }.get((method, tail))
    return serve(gw, scope, proto, action, rid) if action and rid else None
