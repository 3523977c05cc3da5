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
