"""The Granian-served application (RSGI): routes → dialect → pipeline → router → back.

Granian imports ``gateway.app:app`` in every worker process; ``__rsgi_init__`` builds that worker's Gateway from
the config named by ``GATEWAY_CONFIG`` (one upstream HTTP client, one record writer, one router per worker).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any, cast

from granian.rsgi import HTTPProtocol
from granian.rsgi import Scope as RsgiScope

from gateway import endpoints
from gateway.auth import Authenticator, key_from_headers
from gateway.config import Config
from gateway.context import RequestContext, reseed_request_ids
from gateway.conversations import make_store
from gateway.dialects import Dialect
from gateway.dialects import openai as oai
from gateway.edge import abandon_on_disconnect, read_body
from gateway.endpoints import Handler
from gateway.enrich import enrich_headers
from gateway.errors import GatewayError
from gateway.http import HttpClient, make_client
from gateway.observability import Observability
from gateway.pipeline import Pipeline
from gateway.routing.router import Router
from gateway.server import DRAIN_SIGNAL, RETIRE_SIGNAL, CloseAfterResponse, worker_config
from gateway.stages import build_stages
from gateway.state import make_state
from gateway.store.sqlite import SqliteStore, record_row
from gateway.telemetry.metrics import METRICS
from gateway.telemetry.records import RecordWriter
from gateway.telemetry.redact import Redactor, known_models

log = logging.getLogger("gateway")

JSON = "application/json"


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

    async def read_body(self, rsgi_scope: RsgiScope, proto: HTTPProtocol) -> bytes:
        return await read_body(rsgi_scope, proto, self.max_body, self.cfg.server.body_read_timeout_s)

    def authenticate(self, ctx: RequestContext, rsgi_scope: RsgiScope) -> None:
        h = ctx.headers = rsgi_scope.headers
        self.obs.begin(ctx, h)
        ctx.principal = self.auth.authenticate(key_from_headers(h.get("authorization"), h.get("x-api-key")))
        tags = h.get("x-gateway-tags")
        if tags:
            ctx.tags = [t.strip() for t in tags.split(",") if t.strip()]
        ctx.approval = h.get("x-gateway-approval") or None
        ctx.session = h.get("x-gateway-session") or None
        agent = h.get("x-gateway-agent")
        if agent:
            ctx.agent, _, run = agent.partition("/")
            ctx.agent_run = run or None

    def resolve(self, ctx: RequestContext, model: str) -> str:
        """The model group for ``model``, if it exists and the caller may use it; it becomes ``ctx.group``."""
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
        ctx.group = group
        return group

    def visible_models(self, ctx: RequestContext) -> list[str]:
        p = ctx.principal
        return [g for g in self.router.group_names() if p is None or p.may_use(g)]

    def finish_record(self, ctx: RequestContext) -> None:
        ctx.ended = time.perf_counter_ns()
        if getattr(self.state, "degraded", False):
            ctx.flags["state_degraded"] = True
        self.records.submit(ctx)

    # ------------------------------------------------------------ the one request skeleton

    async def serve(
        self, rsgi_scope: RsgiScope, proto: HTTPProtocol, endpoint: str, dialect: Dialect, handler: Handler
    ) -> None:
        """Every request's frame: a context, the endpoint's ``handler``, and whatever happens an answer in the
        caller's dialect (a :class:`GatewayError` as itself, anything else as a 500 naming the request id), the
        stages' ``finish`` hooks, and exactly one record. A handler raises only before it has answered (the
        stream relay answers its own errors after the first byte)."""
        ctx = RequestContext(endpoint, dialect.name, self.router.access)
        watch = abandon_on_disconnect(ctx, proto)
        try:
            await handler(self, ctx, rsgi_scope, proto, dialect)
        except GatewayError as e:
            self.fail(ctx, proto, dialect, e)
        except asyncio.CancelledError:
            if not ctx.flags.get("client_disconnected"):
                raise  # the worker is stopping
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            ctx.status = 499
            ctx.error = ("client_disconnected", "The client went away before the answer.")
        except Exception as e:  # never a stack trace to the caller, never a dead worker
            log.exception("internal error on request %s", ctx.request_id)
            err = GatewayError(
                "internal_error",
                f"The gateway failed on this request ({type(e).__name__}); "
                f"quote request id {ctx.request_id} when reporting it.",
            )
            self.fail(ctx, proto, dialect, err)
        finally:
            watch.cancel()
            await self.pipeline.finish(ctx)
            self.finish_record(ctx)

    def fail(self, ctx: RequestContext, proto: HTTPProtocol, dialect: Dialect, err: GatewayError) -> None:
        ctx.status = err.status
        ctx.error = (err.code, err.message)
        headers = enrich_headers(ctx, JSON)
        headers.extend(err.headers.items())
        proto.response_bytes(err.status, headers, dialect.error_body(err))


# ---------------------------------------------------------------- RSGI application


class App:
    """The RSGI entry point: a fixed route table, no framework."""

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.gw: Gateway | None = None
        self.ready = False
        self.draining = False  # set by the main process's drain signal: /readyz answers 503 from then on
        self.retiring = False  # this worker is about to stop: every response closes its connection
        self.in_flight = 0  # requests (and streams) this worker is answering
        self._sync: asyncio.Task[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = worker_config(self.config_path or "examples/demo.yaml")
        reseed_request_ids()
        loop.add_signal_handler(DRAIN_SIGNAL, self._drain)
        loop.add_signal_handler(RETIRE_SIGNAL, self._retire)

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

    def _drain(self) -> None:
        self.draining = self.retiring = True

    def _retire(self) -> None:
        self.retiring = True

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Granian stops running this worker's event loop as soon as the worker is told to stop, but requests and
        # streams in flight need it to finish: run it until they have (up to drain_timeout_s), then close.
        if self.gw is not None:
            loop.run_until_complete(self._finish(self.gw))

    async def _finish(self, gw: Gateway) -> None:
        deadline = time.monotonic() + gw.cfg.server.drain_timeout_s
        # requests read just before the stop may reach this loop a moment later: wait for 1 s of quiet
        quiet = 0
        while quiet < 50 and time.monotonic() < deadline:
            quiet = quiet + 1 if not self.in_flight else 0
            await asyncio.sleep(0.02)
        if self.in_flight:
            log.warning("%d requests still in flight after drain_timeout_s; closing", self.in_flight)
        await gw.close()

    async def __rsgi__(self, rsgi_scope: RsgiScope, proto: HTTPProtocol) -> None:
        gw = self.gw
        if rsgi_scope.proto != "http" or gw is None:
            return
        self.in_flight += 1
        try:
            if self.retiring:  # same interface, one header more
                proto = cast(HTTPProtocol, CloseAfterResponse(proto))
            await self.route(gw, rsgi_scope, proto)
        finally:
            self.in_flight -= 1

    async def route(self, gw: Gateway, rsgi_scope: RsgiScope, proto: HTTPProtocol) -> None:
        method, path = rsgi_scope.method, rsgi_scope.path
        route = endpoints.route(method, path, rsgi_scope)
        if route is not None:
            endpoint, dialect, handler = route
            return await gw.serve(rsgi_scope, proto, endpoint, dialect, handler)
        if method in ("GET", "HEAD"):
            if method == "HEAD" and path in ("/healthz", "/readyz"):  # load balancers probe with HEAD
                ok = path == "/healthz" or (self.ready and not self.draining)
                return proto.response_empty(200 if ok else 503, [])
            if path == "/metrics" or path.startswith("/dashboard"):
                return await gw.obs.serve(gw, rsgi_scope, proto)
            if path == "/healthz":
                return proto.response_bytes(200, [("content-type", JSON)], b'{"status":"ok"}')
            if path == "/readyz":
                ok = self.ready and not self.draining
                return proto.response_bytes(
                    200 if ok else 503,
                    [("content-type", JSON)],
                    b'{"status":"ready"}' if ok else b'{"status":"draining"}',
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
