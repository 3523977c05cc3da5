"""What each route does, between the edge's one request skeleton (``Gateway.serve``: context, errors in the
caller's dialect, ``finish`` hooks, one record) and the answer. A handler raises only before it has answered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from granian.rsgi import HTTPProtocol
from granian.rsgi import Scope as RsgiScope

from gateway import admin, tokens
from gateway.admin import AdminDialect
from gateway.context import RequestContext
from gateway.dialects import Dialect
from gateway.dialects import anthropic as anth
from gateway.dialects import models as model_list
from gateway.dialects import moderations as moderation
from gateway.dialects import openai as oai
from gateway.dialects.completions import CompletionsDialect
from gateway.enrich import enrich_headers
from gateway.relay import StreamRelay, whole
from gateway.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from gateway.app import Gateway

JSON = "application/json"
_OPENAI, _ANTHROPIC = oai.OpenAIDialect, anth.AnthropicDialect

Handler = Callable[["Gateway", RequestContext, RsgiScope, HTTPProtocol, Dialect], Awaitable[None]]


async def chat(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    """Chat in any chat dialect (OpenAI, Anthropic, legacy completions)."""
    gw.authenticate(ctx, rsgi_scope)
    body = await gw.read_body(rsgi_scope, proto)
    ctx.body_bytes = len(body)
    req = dialect.parse_chat(body)
    if dialect is _ANTHROPIC:
        anth.betas_into(req, rsgi_scope.headers.get("anthropic-beta"), gw.cfg.server.anthropic_betas)
    resp = await answer(gw, ctx, req, proto, dialect)
    if resp is not None:
        proto.response_bytes(200, enrich_headers(ctx, JSON), dialect.render_response(resp))


async def answer(
    gw: Gateway, ctx: RequestContext, req: ChatRequest, proto: HTTPProtocol, dialect: Dialect
) -> ChatResponse | None:
    """The chat flow after parsing, shared by every chat-like endpoint: resolve the model group, pre hooks (which
    may answer early), route. A stream is relayed here (None); a plain answer is returned after the post hooks,
    for the caller to render."""
    ctx.req, ctx.model, ctx.stream = req, req.model, req.stream
    targets = gw.router.targets[gw.resolve(ctx, req.model)]
    large = ctx.body_bytes >= tokens.OFF_LOOP_BYTES
    if large:  # its prompt is counted on a thread, not on the loop the worker's other requests share
        await tokens.count_off_loop(req, [req.model, *(t.dep.model for t in targets)])
    try:
        short = await gw.pipeline.pre(ctx, req)
        routed = ctx.group  # a stage may have moved the request (ctx.reroute)
        assert routed is not None
        if req.stream:
            if short is not None:
                first, rest = whole(ctx, req, short)
            else:
                first, rest = await gw.router.open_stream(ctx, routed, req)
            await StreamRelay(ctx, req, dialect, gw.pipeline).run(proto, first, rest)
            return None
        resp = short if short is not None else await gw.router.complete(ctx, routed, req, accept=ctx.accept)
        return await gw.pipeline.post(ctx, resp)
    finally:
        if large:
            tokens.forget(req)


async def embeddings(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    gw.authenticate(ctx, rsgi_scope)
    req = oai.parse_embeddings(await gw.read_body(rsgi_scope, proto))
    ctx.model = req.model
    group = gw.resolve(ctx, req.model)
    resp = await gw.router.embed(ctx, group, req)
    proto.response_bytes(200, enrich_headers(ctx, JSON), oai.render_embeddings(resp))


def models(model_id: str | None) -> Handler:
    """``GET /v1/models`` (``model_id`` None) or ``GET /v1/models/{id}``, in the dialect the caller speaks."""

    async def handler(
        gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
    ) -> None:
        gw.authenticate(ctx, rsgi_scope)
        body = model_list.render(gw, rsgi_scope, ctx, model_id, anthropic=dialect is _ANTHROPIC)
        proto.response_bytes(200, enrich_headers(ctx, JSON), body)

    return handler


async def moderations(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    """``POST /v1/moderations``: the gateway's content classifier answers; no upstream call, nothing charged.
    The record keeps how many inputs were flagged and in which categories (never the text)."""
    gw.authenticate(ctx, rsgi_scope)
    body = await gw.read_body(rsgi_scope, proto)
    ctx.body_bytes = len(body)
    ctx.model, texts = moderation.parse(body)
    results = await moderation.classify(texts)
    flagged = [r for r in results if r["flagged"]]
    ctx.flags["moderation_inputs"] = len(results)
    if flagged:
        ctx.flags["moderation_flagged"] = len(flagged)
        ctx.flags["moderation_categories"] = sorted(
            {c for r in flagged for c, f in r["categories"].items() if f}
        )
    proto.response_bytes(200, enrich_headers(ctx, JSON), moderation.render(ctx.request_id, results))


async def count_tokens(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    """``POST /v1/messages/count_tokens``: the prompt's tokens for the deployment the model group would try
    first, counted locally (exact for OpenAI encodings, the core's estimator otherwise). Nothing is charged;
    the count is kept in the record's flags."""
    gw.authenticate(ctx, rsgi_scope)
    body = await gw.read_body(rsgi_scope, proto)
    ctx.body_bytes = len(body)
    req = anth.request_from_anthropic(oai.load_json_object(body), require_max_tokens=False)
    ctx.req, ctx.model = req, req.model
    dep = gw.router.targets[gw.resolve(ctx, req.model)][0].dep
    ctx.provider, ctx.upstream_model = dep.provider, dep.model
    if ctx.body_bytes >= tokens.OFF_LOOP_BYTES:  # counted on a thread (see answer)
        await tokens.count_off_loop(req, [dep.model])
    try:
        n = tokens.count_request(req, dep.model, dep.provider)
    finally:
        tokens.forget(req)
    ctx.flags["counted_input_tokens"] = n
    proto.response_bytes(200, enrich_headers(ctx, JSON), orjson.dumps({"input_tokens": n}))


async def feedback(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    """``POST /v1/feedback``: the caller rates an answer it got (``gateway/quality/feedback.py``)."""
    from gateway.quality import feedback as fb

    gw.authenticate(ctx, rsgi_scope)
    rating = fb.parse(await gw.read_body(rsgi_scope, proto))
    key_id = ctx.principal.key_id if ctx.principal is not None else None
    rec = await fb.find_record(gw.cfg.store.sqlite_path, rating.request_id, key_id)
    served, category = rec.get("model_served"), rec.get("category")
    event = await gw.router.feedback(served, category, rating.value())
    ctx.flags["feedback"] = {"request_id": rating.request_id, "score": rating.value(), "label": rating.label}
    if event is not None:
        ctx.flags["quality_change"] = event  # a demotion is an audit event: this record keeps it
    body = {"ok": True, "request_id": rating.request_id, "category": category, "deployment": served}
    body["applied"] = event is not None or gw.router.rates(served, category)
    proto.response_bytes(200, enrich_headers(ctx, JSON), orjson.dumps(body))


async def admin_api(
    gw: Gateway, ctx: RequestContext, rsgi_scope: RsgiScope, proto: HTTPProtocol, dialect: Dialect
) -> None:
    ctx.status = await admin.handle(gw, rsgi_scope, proto, ctx)


# (method, path) → (endpoint recorded, dialect of its errors, handler); prefixed routes in ``route``
ROUTES: dict[tuple[str, str], tuple[str, Dialect, Handler]] = {
    ("POST", "/v1/chat/completions"): ("chat", _OPENAI, chat),
    ("POST", "/chat/completions"): ("chat", _OPENAI, chat),
    ("POST", "/v1/completions"): ("chat", CompletionsDialect, chat),
    ("POST", "/completions"): ("chat", CompletionsDialect, chat),
    ("POST", "/v1/embeddings"): ("embeddings", _OPENAI, embeddings),
    ("POST", "/embeddings"): ("embeddings", _OPENAI, embeddings),
    ("POST", "/v1/moderations"): ("moderations", _OPENAI, moderations),
    ("POST", "/moderations"): ("moderations", _OPENAI, moderations),
    ("POST", "/v1/messages"): ("chat", _ANTHROPIC, chat),
    ("POST", "/v1/messages/count_tokens"): ("count_tokens", _ANTHROPIC, count_tokens),
    ("POST", "/v1/feedback"): ("feedback", _OPENAI, feedback),
}
ADMIN: tuple[str, Dialect, Handler] = ("admin", AdminDialect, admin_api)


def route(method: str, path: str, rsgi_scope: RsgiScope) -> tuple[str, Dialect, Handler] | None:
    """The endpoint, error dialect and handler for a request, or None (not a gateway API route)."""
    hit = ROUTES.get((method, path))
    if hit is not None:
        return hit
    if path.startswith("/admin/"):
        return ADMIN
    if "/responses" in path:
        from gateway.dialects import responses_routes

        return responses_routes.route(method, path)
    if method in ("GET", "HEAD") and (
        path in ("/v1/models", "/models") or path.startswith(("/v1/models/", "/models/"))
    ):
        model_id = path.partition("/models/")[2] or None
        dialect = _ANTHROPIC if model_list.wants_anthropic(rsgi_scope) else _OPENAI
        return ("models", dialect, models(model_id))
    return None
