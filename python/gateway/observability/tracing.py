"""OpenTelemetry traces over OTLP/HTTP: one span per request, child spans for its stages, each upstream attempt
(with the route decision) and a stream's first token, with the GenAI semantic-convention attributes.

On the request path this costs a header parse and two random ids (``begin``); the attempt the router makes
carries the W3C ``traceparent`` upstream. The spans themselves are built after the request ended, on the record
writer's thread, from the finished context (its timings, usage, route and attempts) with their real start and end
times, and handed to the SDK's batching exporter. Prompt and completion text never become attributes: only
models, token counts, cost, the route and outcomes.

A caller's ``traceparent`` is continued (same trace id, the caller's span as parent, its sampled flag obeyed);
without one, ``sample_ratio`` decides.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from gateway.config import TracingConfig
from gateway.context import Record, RequestContext
from gateway.observability.metrics import OPERATIONS, PROVIDER_NAMES

log = logging.getLogger("gateway.tracing")
_rand = random.Random()


class Trace:
    """A sampled request's trace ids, and the ids of the spans of its upstream attempts, in order."""

    __slots__ = ("attempts", "parent_id", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int, parent_id: int | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.attempts: list[int] = []

    def upstream_header(self) -> str:
        """A new child span id for the next upstream attempt, as the traceparent to send with it."""
        sid = _rand.getrandbits(64) or 1
        self.attempts.append(sid)
        return f"00-{self.trace_id:032x}-{sid:016x}-01"


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) from a W3C traceparent, None when it is malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


class Tracer:
    """One worker's tracer: ``begin`` on the request path, the record observer builds and exports spans."""

    def __init__(self, cfg: TracingConfig) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.ratio = cfg.sample_ratio
        self.exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers) or None)
        # Small export batches: encoding a span in the SDK is pure Python (~30 us), and a thread that encodes
        # 512 at once keeps the GIL from the event loop for milliseconds; 16 at a time, then the POST's I/O.
        self.processor = BatchSpanProcessor(
            self.exporter, schedule_delay_millis=200, max_export_batch_size=16, max_queue_size=8192
        )
        self.resource = Resource.create({"service.name": cfg.service_name})
        self.scope = InstrumentationScope("gateway", "0.1.0")

    # ------------------------------------------------------------ request path

    def begin(self, headers: Any) -> Trace | None:
        """The request's trace, or None when it is not sampled."""
        tp = headers.get("traceparent")
        parsed = parse_traceparent(tp) if tp else None
        if parsed is not None:
            trace_id, parent, sampled = parsed
            if not sampled:
                return None
            return Trace(trace_id, _rand.getrandbits(64) or 1, parent)
        if self.ratio < 1.0 and _rand.random() >= self.ratio:
            return None
        return Trace(_rand.getrandbits(128) or 1, _rand.getrandbits(64) or 1, None)

    # ------------------------------------------------------------ record writer thread

    def __call__(self, contexts: list[RequestContext], records: list[Record]) -> None:
        done = 0
        for ctx, r in zip(contexts, records, strict=True):
            trace = ctx.trace
            if trace is not None:
                for span in self.spans(ctx, r, trace):
                    self.processor.on_end(span)
                done += 1
                if done % 4 == 0:
                    time.sleep(0)  # let the event loop have the GIL between a few requests' spans

    def spans(self, ctx: RequestContext, r: Record, trace: Trace) -> list[Any]:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        flags = TraceFlags(TraceFlags.SAMPLED)

        def sc(span_id: int, remote: bool = False) -> SpanContext:
            return SpanContext(trace.trace_id, span_id, is_remote=remote, trace_flags=flags)

        t0 = int(r.ts * 1e9)

        def wall(perf_ns: int) -> int:
            return t0 + (perf_ns - ctx.started)

        end = t0 + int(r.latency_ms * 1e6)
        op = OPERATIONS.get(r.endpoint, r.endpoint)
        provider = PROVIDER_NAMES.get(r.provider or "", r.provider or "")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "http.response.status_code": r.status,
            "gateway.request_id": r.request_id,
            "gateway.endpoint": r.endpoint,
            "gateway.dialect": r.dialect,
            "gateway.latency_ms": r.latency_ms,
            "gateway.overhead_ms": r.overhead_ms,
            "gateway.upstream_ms": r.upstream_ms,
            "gateway.attempts": r.attempts,
        }
        optional = {
            "gen_ai.request.model": r.model_requested,
            "gen_ai.response.model": r.upstream_model,
            "gen_ai.provider.name": provider or None,
            "gen_ai.usage.input_tokens": r.input_tokens if r.model_requested else None,
            "gen_ai.usage.output_tokens": r.output_tokens if r.model_requested else None,
            "gateway.cost_usd": r.cost_usd if r.model_requested else None,
            "gateway.tenant": r.tenant,
            "gateway.team": r.team,
            "gateway.key_id": r.key_id,
            "gateway.agent": r.agent,
            "gateway.tags": tuple(r.tags) if r.tags else None,
            "gateway.deployment": r.model_served,
            "gateway.route": r.route,
            "gateway.stream": r.stream if r.model_requested else None,
            "error.type": r.error_code,
        }
        req = ctx.req
        if req is not None:
            optional["gen_ai.request.max_tokens"] = getattr(req, "max_tokens", None)
            optional["gen_ai.request.temperature"] = getattr(req, "temperature", None)
            optional["gen_ai.request.top_p"] = getattr(req, "top_p", None)
        pii = (r.flags or {}).get("pii")
        if isinstance(pii, dict):  # which kinds were found and how many: never the values
            optional["gateway.pii.entities"] = tuple(sorted(pii))
        attrs.update((k, v) for k, v in optional.items() if v is not None)
        status = Status(StatusCode.ERROR, r.error_code or "") if r.status >= 500 else Status(StatusCode.UNSET)
        name = f"{op} {r.model_requested}" if r.model_requested else f"{r.endpoint}"
        root_parent = sc(trace.parent_id, remote=True) if trace.parent_id else None
        common: dict[str, Any] = {"resource": self.resource, "instrumentation_scope": self.scope}
        out = [
            ReadableSpan(
                name=name,
                context=sc(trace.span_id),
                parent=root_parent,
                attributes=attrs,
                kind=SpanKind.SERVER,
                status=status,
                start_time=t0,
                end_time=end,
                **common,
            )
        ]
        parent = sc(trace.span_id)
        for i, a in enumerate(ctx.attempt_log):
            span_id = trace.attempts[i] if i < len(trace.attempts) else _rand.getrandbits(64) or 1
            a_attrs: dict[str, Any] = {
                "gen_ai.operation.name": op,
                "gen_ai.provider.name": PROVIDER_NAMES.get(a.provider, a.provider),
                "gen_ai.request.model": a.model,
                "gateway.deployment": a.deployment,
                "gateway.route.reason": a.reason,
                "gateway.attempt": i + 1,
            }
            if a.error:
                a_attrs["error.type"] = a.error
            if a.status:
                a_attrs["http.response.status_code"] = a.status
            out.append(
                ReadableSpan(
                    name=f"{op} {a.model}",
                    context=sc(span_id),
                    parent=parent,
                    attributes=a_attrs,
                    kind=SpanKind.CLIENT,
                    status=Status(StatusCode.ERROR, a.error) if a.error else Status(StatusCode.UNSET),
                    start_time=wall(a.start_ns),
                    end_time=wall(a.end_ns or ctx.ended or a.start_ns),
                    **common,
                )
            )
        for stage, start_ns, end_ns in ctx.stage_log:
            out.append(
                ReadableSpan(
                    name=f"stage {stage}",
                    context=sc(_rand.getrandbits(64) or 1),
                    parent=parent,
                    attributes={"gateway.stage": stage},
                    kind=SpanKind.INTERNAL,
                    start_time=wall(start_ns),
                    end_time=wall(end_ns),
                    **common,
                )
            )
        if r.stream and r.ttfb_ms is not None:
            out.append(
                ReadableSpan(
                    name="first token",
                    context=sc(_rand.getrandbits(64) or 1),
                    parent=parent,
                    attributes={"gen_ai.operation.name": op, "gateway.ttfb_ms": r.ttfb_ms},
                    kind=SpanKind.INTERNAL,
                    start_time=t0,
                    end_time=t0 + int(r.ttfb_ms * 1e6),
                    **common,
                )
            )
        return out

    def close(self) -> None:
        try:
            self.processor.shutdown()
        except Exception:
            log.exception("the trace exporter did not shut down cleanly")
