"""The Granian-served application (RSGI): routes → dialect → pipeline → router → back.

Granian imports ``gateway.app:app`` in every worker process; ``__rsgi_init__`` builds that worker's Gateway from
the config named by ``GATEWAY_CONFIG`` (one upstream HTTP client, one record writer, one router per worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

from gateway import tokens
from gateway.config import Config, load_config
from gateway.context import RequestContext, reseed_request_ids
from gateway.conversations import make_store
from gateway.dialects import openai as oai
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient, make_client
from gateway.observability import Observability
from gateway.pipeline import Pipeline
from gateway.pricing import charge
from gateway.routing.router import Router, aclose_quietly
from gateway.stages import build_stages
from gateway.stages.auth import Authenticator, key_from_headers
from gateway.stages.enrich import enrich_headers
from gateway.state import make_state
from gateway.state.metrics import METRICS
from gateway.store.sqlite import SqliteStore, record_row
from gateway.telemetry.records import RecordWriter
from gateway.telemetry.redact import Redactor, known_models
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Usage

log = logging.getLogger("gateway")

JSON = "application/json"
_NOT_SENT = object()


class Gateway:
    """One worker's gateway: config, store, router, pipeline and record writer."""

    def __init__(self, cfg: Config, http: HttpClient) -> None:
        self.cfg = cfg
        self.http = http
        self.store = SqliteStore(cfg.store.sqlite_path, key_secret=cfg.server.key_secret)
        self.obs = Observability(cfg)
        self.records = RecordWriter(
            self._write_records,
            record_row,
            flush_ms=cfg.store.record_flush_ms,
            spill_path=Path(cfg.store.sqlite_path).with_suffix(".spill.jsonl"),
            observers=self.obs.observers,
            build=Redactor(cfg.server.key_secret, known_models(cfg)).record,
        )
        self.auth = Authenticator(
            cfg.keys, self.store, ttl_s=cfg.server.key_cache_ttl_s, teams=cfg.teams, tenants=cfg.tenants
        )
        self.state = make_state(cfg, self.store)
        self.router = Router(cfg, http, state=self.state)
        self.conversations = make_store(cfg, self.state)
        self.pipeline = Pipeline(build_stages(cfg, self))
        self.max_body = cfg.server.max_body_bytes
        self.started = int(time.time())
        self._writer_store: SqliteStore | None = None
        self.obs.attach(self)

    def _write_records(self, rows: Any) -> None:
        # The writer thread gets its own connection: sqlite3 connections are not shared across threads here.
        if self._writer_store is None:
            self._writer_store = SqliteStore(self.cfg.store.sqlite_path)
        self._writer_store.insert_rows(rows)

    async def close(self) -> None:
        self.records.close()
        self.obs.close()
        await self.http.close()
        await self.state.close()

    # ------------------------------------------------------------ edge helpers

    async def read_body(self, scope: Any, proto: Any) -> bytes:
        declared = scope.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        if declared is not None:
            body = await proto()
        else:
            parts, size = [], 0
            async for part in proto:
                size += len(part)
                if size > self.max_body:
                    raise self._too_large()
                parts.append(part)
            body = b"".join(parts)
        if len(body) > self.max_body:
            raise self._too_large()
        return body

    def _too_large(self) -> GatewayError:
        return GatewayError(
            "body_too_large",
            f"The request body exceeds the gateway's limit of {self.max_body} bytes; send a smaller request.",
        )

    def authenticate(self, ctx: RequestContext, scope: Any) -> None:
        h = ctx.scratch["headers"] = scope.headers
        self.obs.begin(ctx, h)
        ctx.principal = self.auth.authenticate(key_from_headers(h.get("authorization"), h.get("x-api-key")))
        tags = h.get("x-gateway-tags")
        if tags:
            ctx.tags = [t.strip() for t in tags.split(",") if t.strip()]
        approval = h.get("x-gateway-approval")
        if approval:
            ctx.scratch["approval"] = approval
        session = h.get("x-gateway-session")
        if session:
            ctx.scratch["session"] = session
        agent = h.get("x-gateway-agent")
        if agent:
            ctx.agent, _, run = agent.partition("/")
            ctx.agent_run = run or None

    def resolve(self, ctx: RequestContext, model: str) -> str:
        """The model group for ``model``, if it exists and the caller may use it."""
        group = self.router.resolve(model)
        if group is None:
            raise GatewayError(
                "model_not_found",
                f"The model {model!r} does not exist on this gateway. GET /v1/models lists the models your key "
                "may use.",
                param="model",
            )
        p = ctx.principal
        if p is not None and not (p.may_use(group) or p.may_use(model)):
            raise GatewayError(
                "model_not_allowed",
                f"Your key may not use the model {model!r}. GET /v1/models lists the models it may use.",
                param="model",
            )
        return group

    def visible_models(self, ctx: RequestContext) -> list[str]:
        p = ctx.principal
        return [g for g in self.router.group_names() if p is None or p.may_use(g)]

    def finish_record(self, ctx: RequestContext) -> None:
        ctx.ended = time.perf_counter_ns()
        if getattr(self.state, "degraded", False):
            ctx.flags["state_degraded"] = True
        self.records.submit(ctx)

    def settle(self, ctx: RequestContext, usage: Usage) -> None:
        """Charge a finished stream's usage to the deployment that served it."""
        target = ctx.scratch.get("target")
        if target is not None:
            charge(ctx, usage, target.price)

    # ------------------------------------------------------------ chat

    async def chat(self, scope: Any, proto: Any, dialect: Any) -> None:
        ctx = RequestContext("chat", dialect.name)
        sent: Any = _NOT_SENT
        try:
            self.authenticate(ctx, scope)
            body = await self.read_body(scope, proto)
            ctx.scratch["body_bytes"] = len(body)
            req: ChatRequest = dialect.parse_chat(body)
            ctx.req, ctx.model, ctx.stream = req, req.model, req.stream
            group = ctx.scratch["group"] = self.resolve(ctx, req.model)
            await self.pipeline.pre(ctx, req)
            group = ctx.scratch["group"]  # a stage may have changed it (budget downgrade)
            short = ctx.scratch.get("short_circuit")
            if req.stream:
                await self.chat_stream(ctx, proto, dialect, group, req)
                sent = None  # every error after the first byte is answered inside the stream
                return
            resp: ChatResponse = short if short is not None else await self.router.complete(ctx, group, req)
            resp = await self.pipeline.post(ctx, resp)
            body = dialect.render_response(resp)
            proto.response_bytes(200, enrich_headers(ctx, JSON), body)
            sent = None
        except GatewayError as e:
            self.fail(ctx, proto, dialect, e, sent)
        except Exception as e:  # never a stack trace to the caller, never a dead worker
            log.exception("internal error on request %s", ctx.request_id)
            err = GatewayError(
                "internal_error",
                f"The gateway failed on this request ({type(e).__name__}); "
                f"quote request id {ctx.request_id} when reporting it.",
            )
            self.fail(ctx, proto, dialect, err, sent)
        finally:
            await self.pipeline.finish(ctx)
            self.finish_record(ctx)

    def fail(self, ctx: RequestContext, proto: Any, dialect: Any, err: GatewayError, sent: Any) -> None:
        ctx.status = err.status
        ctx.error = (err.code, err.message)
        if sent is _NOT_SENT:
            headers = enrich_headers(ctx, JSON)
            headers.extend(err.headers.items())
            proto.response_bytes(err.status, headers, dialect.error_body(err))

    async def chat_stream(
        self, ctx: RequestContext, proto: Any, dialect: Any, group: str, req: ChatRequest
    ) -> None:
        """Relay a stream chunk by chunk, never buffering it. Errors before the first chunk propagate (the
        router has failed over already, the caller gets a normal error response); after it they end the stream
        with an error event. Usage is settled in every case, counted by the gateway if the upstream sent none."""
        short = ctx.scratch.get("short_circuit")
        if short is not None:  # answered by a stage (a cache hit): replayed as the stream a live answer makes
            from gateway.cache.replay import as_stream

            first, rest = as_stream(short)
        else:
            first, rest = await self.router.open_stream(ctx, group, req)
        ctx.ttfb = time.perf_counter_ns() - ctx.started
        renderer = dialect.stream(req)
        transport = proto.response_stream(200, enrich_headers(ctx, dialect.stream_content_type))
        pipeline = self.pipeline
        usage: Usage | None = None
        texts: list[str] = []
        last: ChatChunk | None = None
        upstream_wait = 0
        try:
            batch: list[ChatChunk] = first
            while True:
                out = []
                for chunk in batch:
                    last = chunk
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for d in chunk.choices:
                        if d.content:
                            texts.append(d.content)
                        if d.tool_calls:
                            texts.extend(tc.get("function", {}).get("arguments") or "" for tc in d.tool_calls)
                    kept = pipeline.on_chunk(ctx, chunk)
                    if kept is not None:
                        data = renderer.chunk(kept)
                        if data:
                            out.append(data)
                if out:  # what arrived together leaves together: one write per network read
                    await transport.send_bytes(b"".join(out) if len(out) > 1 else out[0])
                t0 = time.perf_counter_ns()
                try:
                    batch = await anext(rest)
                except StopAsyncIteration:
                    break
                finally:
                    upstream_wait += time.perf_counter_ns() - t0
            for c in pipeline.on_stream_end(ctx):
                data = renderer.chunk(c)
                if data:
                    await transport.send_bytes(data)
            final = self.settle_stream(ctx, req, texts, usage)
            await transport.send_bytes(renderer.end(final, last))
        except GatewayError as e:
            await self._stream_error(ctx, transport, renderer, req, texts, usage, e)
        except asyncio.CancelledError:
            self._client_gone(ctx, req, texts, usage)
            raise
        except Exception as e:
            if isinstance(e, UpstreamError):
                err = e.to_gateway_error()
                await self._stream_error(ctx, transport, renderer, req, texts, usage, err)
            elif _is_disconnect(e):
                self._client_gone(ctx, req, texts, usage)
            else:
                log.exception("stream failed on request %s", ctx.request_id)
                err = GatewayError(
                    "internal_error", f"The stream failed in the gateway; request id {ctx.request_id}."
                )
                await self._stream_error(ctx, transport, renderer, req, texts, usage, err)
        finally:
            ctx.upstream_ns += upstream_wait
            await aclose_quietly(rest)

    async def _stream_error(
        self,
        ctx: RequestContext,
        transport: Any,
        renderer: Any,
        req: ChatRequest,
        texts: list[str],
        usage: Usage | None,
        err: GatewayError,
    ) -> None:
        """After the first byte the status line is gone: end with an error event in the caller's dialect."""
        ctx.status = err.status
        ctx.error = (err.code, err.message)
        ctx.flags["stream_error_after_first_byte"] = True
        self.settle_stream(ctx, req, texts, usage)
        with contextlib.suppress(Exception):
            await transport.send_bytes(renderer.error(err))

    def _client_gone(
        self, ctx: RequestContext, req: ChatRequest, texts: list[str], usage: Usage | None
    ) -> None:
        ctx.status = 499
        ctx.error = ("client_disconnected", "the client closed the stream")
        self.settle_stream(ctx, req, texts, usage)

    def settle_stream(
        self, ctx: RequestContext, req: ChatRequest, texts: list[str], usage: Usage | None
    ) -> Usage:
        """Charge a stream's usage; when the upstream sent none, count it (exact for OpenAI encodings,
        estimated otherwise, and flagged ``estimated`` either way)."""
        if usage is None:
            model = ctx.upstream_model or req.model
            usage = Usage(
                input_tokens=tokens.count_request(req, model, ctx.provider),
                output_tokens=tokens.count_text("".join(texts), model, ctx.provider),
                estimated=True,
            )
        self.settle(ctx, usage)
        return usage

    # ------------------------------------------------------------ embeddings & models

    async def embeddings(self, scope: Any, proto: Any) -> None:
        ctx = RequestContext("embeddings", "openai")
        try:
            self.authenticate(ctx, scope)
            req = oai.parse_embeddings(await self.read_body(scope, proto))
            ctx.model = req.model
            group = self.resolve(ctx, req.model)
            resp = await self.router.embed(ctx, group, req)
            proto.response_bytes(200, enrich_headers(ctx, JSON), oai.render_embeddings(resp))
        except GatewayError as e:
            self.fail(ctx, proto, oai.OpenAIDialect, e, _NOT_SENT)
        except Exception as e:
            log.exception("internal error on request %s", ctx.request_id)
            err = GatewayError("internal_error", f"The gateway failed on this request ({type(e).__name__}).")
            self.fail(ctx, proto, oai.OpenAIDialect, err, _NOT_SENT)
        finally:
            self.finish_record(ctx)

    async def admin(self, scope: Any, proto: Any) -> None:
        from gateway import admin

        ctx = RequestContext("admin", "admin")
        try:
            ctx.status = await admin.handle(self, scope, proto, ctx)
        finally:
            self.finish_record(ctx)


def _is_disconnect(e: Exception) -> bool:
    return type(e).__name__ in (
        "RSGIProtocolClosed",
        "ProtocolClosed",
        "ConnectionResetError",
        "BrokenPipeError",
    )


# ---------------------------------------------------------------- RSGI application


class App:
    """The RSGI entry point: a fixed route table, no framework."""

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.gw: Gateway | None = None
        self.ready = False
        self._sync: asyncio.Task[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        path = self.config_path or os.environ.get("GATEWAY_CONFIG", "examples/demo.yaml")
        cfg = load_config(path)
        reseed_request_ids()

        async def build() -> Gateway:
            # HTTP clients bind to the running loop: build on the worker's loop before it serves.
            gw = Gateway(cfg, make_client(cfg.server.http_client))
            METRICS.start(gw.state)  # contract counters, summed over workers by GET /admin/stats
            return gw

        self.gw = loop.run_until_complete(build())
        if self.gw.cfg.state.redis_url:
            self._sync = loop.create_task(self.gw.router.sync_cooldowns())
        # Everything built so far lives for the worker's lifetime: keep it out of the cyclic collector's way,
        # so a full collection walks only per-request garbage (shorter pauses, better tail latency).
        gc.collect()
        gc.freeze()
        self.ready = True

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.gw is not None:
            loop.run_until_complete(self.gw.close())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        gw = self.gw
        if scope.proto != "http" or gw is None:
            return
        method, path = scope.method, scope.path
        if path.startswith("/admin/"):
            return await gw.admin(scope, proto)
        if "/responses" in path:
            from gateway.dialects.responses_routes import route

            handler = route(gw, scope, proto)
            if handler is not None:
                return await handler
        if method == "POST":
            if path in ("/v1/chat/completions", "/chat/completions"):
                return await gw.chat(scope, proto, oai.OpenAIDialect)
            if path in ("/v1/embeddings", "/embeddings"):
                return await gw.embeddings(scope, proto)
            if path in ("/v1/completions", "/completions"):
                from gateway.dialects.completions import CompletionsDialect

                return await gw.chat(scope, proto, CompletionsDialect)
            if path in ("/v1/moderations", "/moderations"):
                from gateway.dialects.moderations import serve

                return await serve(gw, scope, proto)
            from gateway.dialects import anthropic as anth

            if path == "/v1/messages":
                return await gw.chat(scope, proto, anth.AnthropicDialect)
            if path == "/v1/messages/count_tokens":
                return await anth.count_tokens(gw, scope, proto)
        elif method in ("GET", "HEAD"):
            if method == "HEAD" and path in ("/healthz", "/readyz"):  # load balancers probe with HEAD
                return proto.response_empty(200 if path == "/healthz" or self.ready else 503, [])
            if path in ("/v1/models", "/models") or path.startswith(("/v1/models/", "/models/")):
                from gateway.dialects import models

                model_id = path.partition("/models/")[2] or None if "/models/" in path else None
                return await models.serve(gw, scope, proto, model_id)
            if path == "/metrics" or path.startswith("/dashboard"):
                return await gw.obs.serve(gw, scope, proto)
            if path == "/healthz":
                return proto.response_bytes(200, [("content-type", JSON)], b'{"status":"ok"}')
            if path == "/readyz":
                ok = self.ready
                return proto.response_bytes(
                    200 if ok else 503,
                    [("content-type", JSON)],
                    b'{"status":"ready"}' if ok else b'{"status":"starting"}',
                )
        allowed = ALLOWED.get(path)
        if allowed is not None:  # a known path, the wrong method
            err = GatewayError(
                "method_not_allowed",
                f"{method} is not supported on {path}; use {allowed}.",
                headers={"allow": allowed},
            )
        else:
            err = GatewayError(
                "not_found",
                f"No route for {method} {path[:200]}. The gateway serves /v1/chat/completions, "
                "/v1/embeddings, /v1/models, /v1/responses, /v1/messages and /v1/messages/count_tokens.",
            )
        proto.response_bytes(err.status, [("content-type", JSON), *err.headers.items()], oai.error_body(err))


_POST = ("chat/completions", "embeddings", "completions", "moderations")
ALLOWED = {  # known paths -> the methods they answer (another method is a 405, not a 404)
    **dict.fromkeys(
        (
            *(f"/{p}" for p in _POST),
            *(f"/v1/{p}" for p in _POST),
            "/v1/messages",
            "/v1/messages/count_tokens",
        ),
        "POST",
    ),
    **dict.fromkeys(("/v1/models", "/models", "/healthz", "/readyz", "/metrics"), "GET, HEAD"),
}


app = App()
