"""The trace exporter process: builds the spans of traced requests and sends them over OTLP/HTTP.

A worker's :class:`~gateway.observability.tracing.Tracer` starts one of these (``python -m
gateway.observability.exporter``) and writes to its stdin: first the exporter's settings, then batches of
:class:`Traced` (a finished request's record, its trace ids and the timings of its stages and attempts), each a
length-prefixed msgpack frame. Building an SDK span and encoding it as protobuf is pure Python (tens of
microseconds a span); done here it costs the worker's event loop and its GIL nothing. The process runs at a
lower CPU priority, so under overload the workers keep the cores and spans wait (then the SDK's bounded queue
drops the oldest) rather than requests.

It exits when its stdin closes (the worker stopped or died), after exporting what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import struct
import sys
from typing import Any

import msgspec

from gateway.context import Record
from gateway.observability.metrics import OPERATIONS, PROVIDER_NAMES

log = logging.getLogger("gateway.tracing")
_rand = random.Random()
HEADER = struct.Struct("<I")


class Settings(msgspec.Struct, array_like=True):
    """The first frame: where and how to export."""

    endpoint: str
    headers: dict[str, str]
    service_name: str


class Traced(msgspec.Struct, array_like=True):
    """One traced request, as the worker hands it over (perf-counter times; ``started`` is the request's)."""

    record: Record
    trace_id: bytes  # 16 bytes
    span_id: int
    parent_id: int  # the caller's span, 0 when the trace started here
    started: int
    ended: int
    # each: (span id, provider, model, deployment, route reason, error, status, start ns, end ns)
    attempts: list[tuple[int, str, str, str, str, str | None, int | None, int, int | None]]
    stages: list[tuple[str, int, int]]
    params: tuple[int | None, float | None, float | None]  # max_tokens, temperature, top_p


def spans(t: Traced, resource: Any, scope: Any) -> list[Any]:
    """The request span, one child per upstream attempt and per stage, and a stream's first token."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_id = int.from_bytes(t.trace_id, "big")

    def sc(span_id: int, remote: bool = False) -> SpanContext:
        return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=flags)

    r = t.record
    t0 = int(r.ts * 1e9)

    def wall(perf_ns: int) -> int:
        return t0 + (perf_ns - t.started)

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
    max_tokens, temperature, top_p = t.params
    optional = {
        "gen_ai.request.model": r.model_requested,
        "gen_ai.response.model": r.upstream_model,
        "gen_ai.provider.name": provider or None,
        "gen_ai.usage.input_tokens": r.input_tokens if r.model_requested else None,
        "gen_ai.usage.output_tokens": r.output_tokens if r.model_requested else None,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": temperature,
        "gen_ai.request.top_p": top_p,
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
    pii = (r.flags or {}).get("pii")
    if isinstance(pii, dict):  # which kinds were found and how many: never the values
        optional["gateway.pii.entities"] = tuple(sorted(pii))
    attrs.update((k, v) for k, v in optional.items() if v is not None)
    status = Status(StatusCode.ERROR, r.error_code or "") if r.status >= 500 else Status(StatusCode.UNSET)
    name = f"{op} {r.model_requested}" if r.model_requested else f"{r.endpoint}"
    root_parent = sc(t.parent_id, remote=True) if t.parent_id else None
    common: dict[str, Any] = {"resource": resource, "instrumentation_scope": scope}
    out = [
        ReadableSpan(
            name=name,
            context=sc(t.span_id),
            parent=root_parent,
            attributes=attrs,
            kind=SpanKind.SERVER,
            status=status,
            start_time=t0,
            end_time=end,
            **common,
        )
    ]
    parent = sc(t.span_id)
    for i, (span_id, a_provider, model, deployment, reason, error, a_status, start_ns, end_ns) in enumerate(
        t.attempts
    ):
        a_attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": PROVIDER_NAMES.get(a_provider, a_provider),
            "gen_ai.request.model": model,
            "gateway.deployment": deployment,
            "gateway.route.reason": reason,
            "gateway.attempt": i + 1,
        }
        if error:
            a_attrs["error.type"] = error
        if a_status:
            a_attrs["http.response.status_code"] = a_status
        out.append(
            ReadableSpan(
                name=f"{op} {model}",
                context=sc(span_id),
                parent=parent,
                attributes=a_attrs,
                kind=SpanKind.CLIENT,
                status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
                start_time=wall(start_ns),
                end_time=wall(end_ns or t.ended or start_ns),
                **common,
            )
        )
    for stage, start_ns, end_ns in t.stages:
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


def _read(stream: Any, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def frames(stream: Any) -> Any:
    """The payloads of the length-prefixed frames on ``stream``, until it ends."""
    while True:
        head = _read(stream, HEADER.size)
        if head is None:
            return
        body = _read(stream, HEADER.unpack(head)[0])
        if body is None:
            return
        yield body


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker's stop closes our stdin; flush, then leave
    with contextlib.suppress(OSError):
        os.nice(10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    stream = sys.stdin.buffer
    it = frames(stream)
    first = next(it, None)
    if first is None:
        return 0
    cfg = msgspec.msgpack.decode(first, type=Settings)
    exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers) or None)
    processor = BatchSpanProcessor(
        exporter, schedule_delay_millis=200, max_export_batch_size=512, max_queue_size=65536
    )
    resource = Resource.create({"service.name": cfg.service_name})
    scope = InstrumentationScope("gateway", "0.1.0")
    decode = msgspec.msgpack.Decoder(list[Traced]).decode
    try:
        for body in it:
            try:
                batch = decode(body)
            except msgspec.DecodeError:
                log.exception("a malformed trace batch was skipped")
                continue
            for t in batch:
                for span in spans(t, resource, scope):
                    processor.on_end(span)
    finally:
        processor.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
