"""Micro-benchmarks of what tracing costs per request, split by where it is paid.

Run:  .venv/bin/pytest benches/test_bench_tracing.py --benchmark-enable --benchmark-group-by=group \
          --benchmark-columns=min,median,mean,ops,rounds

Groups:
- trace-request-path: what the event loop pays per request: the trace begun (off: nothing; a new trace; a
  caller's ``traceparent`` continued) and the ``traceparent`` of an upstream attempt.
- trace-writer: what the worker's record writer thread pays per request (in a batch of 32, as it runs): the
  compact copy of the traced request and its share of the msgpack frame handed to the exporter process.
- trace-exporter: what the exporter process pays per request (4 spans: the request, its attempt, two stages):
  decoding the frame and writing the spans as OTLP protobuf, against building the same spans as
  ``opentelemetry-sdk`` objects and encoding them with the SDK's OTLP encoder (what the exporter did before).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from tests.conftest import free_port

from gateway.config import TracingConfig
from gateway.context import Attempt, RequestContext
from gateway.observability.exporter import SpanEncoder, Traced
from gateway.observability.tracing import Tracer, traced

CALLER = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


@pytest.fixture(scope="module")
def tracer() -> Iterator[Tracer]:
    t = Tracer(TracingConfig(enabled=True, endpoint=f"http://127.0.0.1:{free_port()}/v1/traces"))
    yield t
    t.close()


def finished(tracer: Tracer, i: int) -> tuple[RequestContext, Any]:
    """A traced chat request as the bench's gateway serves it: one attempt, two stages."""
    ctx = RequestContext("chat", "openai")
    ctx.trace = tracer.begin({})
    ctx.model = "gpt-4o-mini"
    t0 = ctx.started
    a = Attempt("gpt-4o-mini", "openai", "gpt-4o-mini", "single", t0 + 60_000)
    a.end_ns, a.status = t0 + 400_000, 200
    ctx.attempt_log.append(a)
    ctx.trace.upstream_header()
    ctx.stage_log += [("auth", t0 + 1_000, t0 + 9_000), ("enrich", t0 + 9_000, t0 + 12_000)]
    ctx.ended = t0 + 450_000
    r = ctx.record()
    r.request_id, r.tenant, r.key_id = f"0123456789abcdef{i:012x}", "acme", "key-1"
    r.model_requested, r.upstream_model, r.model_served = "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"
    r.input_tokens, r.output_tokens, r.cost_usd = 12, 40, 2.6e-5
    r.latency_ms, r.upstream_ms, r.overhead_ms = 0.45, 0.34, 0.11
    return ctx, r


@pytest.mark.benchmark(group="trace-request-path")
def test_begin_off(benchmark: Any) -> None:
    from gateway.observability import Observability

    class Off(Observability):
        def __init__(self) -> None:
            self.tracer = None

    obs, ctx = Off(), RequestContext("chat", "openai")
    benchmark(obs.begin, ctx, {})


@pytest.mark.benchmark(group="trace-request-path")
def test_begin_new_trace(benchmark: Any, tracer: Tracer) -> None:
    benchmark(tracer.begin, {})


@pytest.mark.benchmark(group="trace-request-path")
def test_begin_continues_a_callers_trace(benchmark: Any, tracer: Tracer) -> None:
    benchmark(tracer.begin, CALLER)


@pytest.mark.benchmark(group="trace-request-path")
def test_upstream_traceparent(benchmark: Any, tracer: Tracer) -> None:
    trace = tracer.begin({})

    def header() -> str:
        trace.attempts.clear()
        return trace.upstream_header()

    benchmark(header)


@pytest.mark.benchmark(group="trace-writer")
def test_writer_share_per_32_requests(benchmark: Any, tracer: Tracer) -> None:
    batch = [finished(tracer, i) for i in range(32)]
    encode = msgspec.msgpack.Encoder().encode
    benchmark(lambda: encode([traced(c, r, c.trace) for c, r in batch]))


def frame(tracer: Tracer, n: int) -> bytes:
    return msgspec.msgpack.encode([traced(c, r, c.trace) for c, r in (finished(tracer, i) for i in range(n))])


@pytest.mark.benchmark(group="trace-exporter")
def test_exporter_otlp_wire_per_32_requests(benchmark: Any, tracer: Tracer) -> None:
    body = frame(tracer, 32)
    decode = msgspec.msgpack.Decoder(list[Traced]).decode
    enc = SpanEncoder({"service.name": "ai-gateway"}, "gateway", "0.1.0")

    def run() -> bytes:
        return enc.request([s for t in decode(body) for s in enc.spans(t)])

    benchmark(run)


@pytest.mark.benchmark(group="trace-exporter")
def test_exporter_sdk_spans_per_32_requests(benchmark: Any, tracer: Tracer) -> None:
    """The peer: the same spans as opentelemetry-sdk ReadableSpans, encoded by the SDK's OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    body = frame(tracer, 32)
    decode = msgspec.msgpack.Decoder(list[Traced]).decode
    enc = SpanEncoder({"service.name": "ai-gateway"}, "gateway", "0.1.0")
    resource, scope = (
        Resource.create({"service.name": "ai-gateway"}),
        InstrumentationScope("gateway", "0.1.0"),
    )
    flags, kinds = (
        TraceFlags(TraceFlags.SAMPLED),
        {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT},
    )
    # the wire spans, decoded, as the SDK's inputs (the same names, ids, times and attributes)
    wire = ExportTraceServiceRequest.FromString(enc.request([s for t in decode(body) for s in enc.spans(t)]))
    inputs = []
    for s in wire.resource_spans[0].scope_spans[0].spans:
        attrs = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
        parent = int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else None
        inputs.append(
            (s.name, int.from_bytes(s.span_id, "big"), parent, s.kind, attrs, s.start_time_unix_nano)
        )
    trace_id = int.from_bytes(wire.resource_spans[0].scope_spans[0].spans[0].trace_id, "big")

    def run() -> bytes:
        decode(body)
        spans = [
            ReadableSpan(
                name=name,
                context=SpanContext(trace_id, sid, is_remote=False, trace_flags=flags),
                parent=SpanContext(trace_id, parent, is_remote=False, trace_flags=flags) if parent else None,
                attributes=attrs,
                kind=kinds[kind],
                status=Status(StatusCode.UNSET),
                start_time=start,
                end_time=start + 1000,
                resource=resource,
                instrumentation_scope=scope,
            )
            for name, sid, parent, kind, attrs, start in inputs
        ]
        return encode_spans(spans).SerializePartialToString()

    benchmark(run)
