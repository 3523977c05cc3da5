"""The trace exporter process: a worker hands it compact copies of traced requests over a pipe, it builds the
spans and exports them over OTLP/HTTP (to a receiver in this test). A stalled exporter never blocks the
worker: what the pipe and the bounded buffer cannot hold is dropped and counted, and everything counted as sent
arrives once the exporter runs again."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.config import TracingConfig
from gateway.context import Attempt, RequestContext
from gateway.observability.tracing import Tracer
from tests.conftest import free_port


class Receiver(http.server.BaseHTTPRequestHandler):
    spans: list[Any] = []

    def do_POST(self) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(self.rfile.read(int(self.headers.get("content-length") or 0)))
        Receiver.spans.extend(s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def finished(tracer: Tracer, i: int) -> tuple[RequestContext, Any]:
    ctx = RequestContext("chat", "openai")
    ctx.trace = tracer.begin({})
    ctx.model = "m"
    t0 = ctx.started
    a = Attempt("dep-a", "openai", "m-1", "weighted", t0 + 1000)
    a.end_ns, a.status = t0 + 5000, 200
    ctx.attempt_log.append(a)
    ctx.trace.upstream_header()
    ctx.stage_log.append(("auth", t0 + 10, t0 + 500))
    ctx.ended = t0 + 6000
    r = ctx.record()
    r.request_id = f"req-{i}"
    return ctx, r


def test_spans_arrive_and_a_stalled_exporter_never_blocks_the_worker():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tracer = Tracer(TracingConfig(enabled=True, endpoint=f"http://127.0.0.1:{port}/v1/traces"))
    try:
        ctx, r = finished(tracer, 0)
        tracer([ctx], [r])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(Receiver.spans) < 3:
            tracer([], [])
            time.sleep(0.1)
        kinds = sorted(s.kind for s in Receiver.spans)
        assert len(Receiver.spans) == 3  # the request, its attempt, its stage
        root = next(s for s in Receiver.spans if s.kind == s.SPAN_KIND_SERVER)
        attempt = next(s for s in Receiver.spans if s.kind == s.SPAN_KIND_CLIENT)
        assert (
            root.trace_id == ctx.trace.trace_id.to_bytes(16, "big") and attempt.parent_span_id == root.span_id
        )
        assert attempt.span_id == ctx.trace.attempts[0].to_bytes(8, "big") and len(kinds) == 3

        os.kill(tracer.proc.pid, signal.SIGSTOP)  # the exporter stalls: the pipe fills, then the buffer
        tracer.max_buffered = 64 << 10
        batch = [finished(tracer, i) for i in range(1, 101)]
        contexts, records = [c for c, _ in batch], [r for _, r in batch]
        for _ in range(200):  # 20,000 traced requests, far more than the pipe and the buffer hold
            tracer(contexts, records)
        assert tracer.dropped > 0 and tracer.sent + tracer.dropped == 1 + 20_000
        os.kill(tracer.proc.pid, signal.SIGCONT)
        tracer.close()
        roots = [s for s in Receiver.spans if s.kind == s.SPAN_KIND_SERVER]
        assert len(roots) == tracer.sent  # whatever was counted as sent arrived, once
    finally:
        with_proc = tracer.proc
        if with_proc.poll() is None:
            os.kill(with_proc.pid, signal.SIGCONT)
            with_proc.kill()
        server.shutdown()


def test_spans_written_in_the_wire_format_decode_with_the_official_otlp_messages():
    """The exporter writes OTLP protobuf field by field: every value type, long strings (multi-byte lengths),
    negative numbers, a caller's remote parent and error statuses decode with opentelemetry-proto's messages
    to exactly what went in; values encoded once and reused stay right across requests."""
    from gateway.context import Record
    from gateway.observability.exporter import SpanEncoder, Traced

    enc = SpanEncoder({"service.name": "gw", "telemetry.sdk.language": "python"}, "gateway", "0.1.0")
    long_id = "r" * 300 + "é"
    r = Record(
        request_id=long_id,
        ts=1_700_000_000.5,
        endpoint="chat",
        dialect="openai",
        status=502,
        tenant="acme",
        tags=["a", "ü" * 70],
        model_requested="grp",
        upstream_model="m-1",
        provider="anthropic",
        stream=True,
        input_tokens=-3,
        output_tokens=2**40,
        cost_usd=0.25,
        latency_ms=12.5,
        ttfb_ms=3.0,
        attempts=2,
        error_code="upstream_error",
        flags={"pii": {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 2}},
    )
    started = 10_000
    t = Traced(
        r,
        bytes(range(16)),
        0xA1,
        0xFFFF_FFFF_FFFF_FFFF,
        started,
        started + 12_500_000,
        [
            (0xB1, "openai", "m-0", "d-0", "priority 0", "http_503", 503, started + 1_000, started + 2_000),
            (0xB2, "anthropic", "m-1", "d-1", "failover", None, None, started + 3_000, None),
        ],
        [("pii", started + 100, started + 900)],
        (256, 0.5, None),
    )
    payload = b"".join(enc.request(enc.spans(t)) for _ in range(2))  # the second from the cache
    req = ExportTraceServiceRequest()
    req.ParseFromString(payload)
    assert len(req.resource_spans) == 2
    rs = req.resource_spans[1]
    assert {a.key: a.value.string_value for a in rs.resource.attributes} == {
        "service.name": "gw",
        "telemetry.sdk.language": "python",
    }
    assert (rs.scope_spans[0].scope.name, rs.scope_spans[0].scope.version) == ("gateway", "0.1.0")
    spans = list(rs.scope_spans[0].spans)
    assert [s.name for s in spans] == ["chat grp", "chat m-0", "chat m-1", "stage pii", "first token"]
    root, a0, a1, stage, first = spans
    assert all(s.trace_id == bytes(range(16)) for s in spans)
    assert root.span_id == (0xA1).to_bytes(8, "big") and root.parent_span_id == b"\xff" * 8
    assert root.flags == 0x301  # sampled, parent is remote
    assert root.kind == root.SPAN_KIND_SERVER and a0.kind == a0.SPAN_KIND_CLIENT
    assert stage.kind == stage.SPAN_KIND_INTERNAL and first.kind == first.SPAN_KIND_INTERNAL
    assert root.status.code == root.status.STATUS_CODE_ERROR and root.status.message == "upstream_error"
    t0 = 1_700_000_000_500_000_000
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (t0, t0 + 12_500_000)
    assert (a0.start_time_unix_nano, a0.end_time_unix_nano) == (t0 + 1_000, t0 + 2_000)
    assert a1.end_time_unix_nano == t0 + 12_500_000  # an attempt without an end ends with the request
    assert (stage.start_time_unix_nano, stage.end_time_unix_nano) == (t0 + 100, t0 + 900)
    assert first.end_time_unix_nano == t0 + 3_000_000
    for child in (a0, a1, stage, first):
        assert child.parent_span_id == root.span_id and child.flags == 0x101
    assert a0.span_id == (0xB1).to_bytes(8, "big") and a1.span_id == (0xB2).to_bytes(8, "big")
    assert len({s.span_id for s in spans}) == 5
    got = {}
    for a in root.attributes:
        kind = a.value.WhichOneof("value")
        v = getattr(a.value, kind)
        got[a.key] = [x.string_value for x in v.values] if kind == "array_value" else v
    assert got == {
        "gen_ai.operation.name": "chat",
        "http.response.status_code": 502,
        "gateway.request_id": long_id,
        "gateway.endpoint": "chat",
        "gateway.dialect": "openai",
        "gateway.latency_ms": 12.5,
        "gateway.overhead_ms": 0.0,
        "gateway.upstream_ms": 0.0,
        "gateway.attempts": 2,
        "gen_ai.request.model": "grp",
        "gen_ai.response.model": "m-1",
        "gen_ai.provider.name": "anthropic",
        "gateway.tenant": "acme",
        "gateway.tags": ["a", "ü" * 70],
        "gateway.stream": True,
        "error.type": "upstream_error",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.usage.input_tokens": -3,
        "gen_ai.usage.output_tokens": 2**40,
        "gateway.cost_usd": 0.25,
        "gateway.pii.entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"],
    }
    a0_attrs = {a.key: a.value for a in a0.attributes}
    assert a0_attrs["error.type"].string_value == "http_503" and a0_attrs["gateway.attempt"].int_value == 1
    assert a0.status.code == a0.status.STATUS_CODE_ERROR and a0.status.message == "http_503"
    assert {a.key: a.value.string_value for a in a1.attributes}["gateway.route.reason"] == "failover"
    assert a1.status.code == a1.status.STATUS_CODE_UNSET
