"""OpenTelemetry traces over OTLP/HTTP: one span per request, child spans for its stages, each upstream attempt
(with the route decision) and a stream's first token, with the GenAI semantic-convention attributes.

On the request path this costs a header parse and two random ids (``begin``, ~0.5 µs; ~1 µs continuing a
caller's trace); the attempt the router makes carries the W3C ``traceparent`` upstream (~0.7 µs). After the
request ended, the record writer's thread hands a compact copy of it (the record, the trace ids, the stage and
attempt timings: :class:`~gateway.observability.exporter.Traced`, ~1 µs a request) to this worker's exporter
process, as one msgpack frame per batch written to a pipe without blocking. That process (``exporter.py``)
writes the spans as OTLP protobuf and posts them to the collector: no span is built in the worker. When the
exporter falls behind and the pipe and a bounded buffer are full, batches are dropped (counted in
``dropped``), never waited for. Prompt and completion text never become attributes: only models, token
counts, cost, the route and outcomes.

A caller's ``traceparent`` is continued (same trace id, the caller's span as parent, its sampled flag obeyed);
without one, ``sample_ratio`` decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import subprocess
import sys
from typing import Any

import msgspec

from gateway.config import TracingConfig
from gateway.context import Record, RequestContext
from gateway.observability.exporter import HEADER, Settings, Traced

log = logging.getLogger("gateway.tracing")
_rand = random.Random()
PIPE_SIZE = 1 << 20  # what the kernel may hold for the exporter (Linux; the default is 64 KiB)
MAX_BUFFERED = 8 << 20  # bytes kept here while the exporter is behind; beyond it batches are dropped


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


def traced(ctx: RequestContext, r: Record, trace: Trace) -> Traced:
    """The compact copy of a finished traced request that the exporter process turns into spans."""
    attempts = []
    for i, a in enumerate(ctx.attempt_log):
        span_id = trace.attempts[i] if i < len(trace.attempts) else _rand.getrandbits(64) or 1
        attempts.append(
            (span_id, a.provider, a.model, a.deployment, a.reason, a.error, a.status, a.start_ns, a.end_ns)
        )
    req = ctx.req
    params = (
        (getattr(req, "max_tokens", None), getattr(req, "temperature", None), getattr(req, "top_p", None))
        if req is not None
        else (None, None, None)
    )
    return Traced(
        r,
        trace.trace_id.to_bytes(16, "big"),
        trace.span_id,
        trace.parent_id or 0,
        ctx.started,
        ctx.ended or 0,
        attempts,
        ctx.stage_log,
        params,
    )


class Tracer:
    """One worker's tracer: ``begin`` on the request path; as a record observer, it ships finished traced
    requests to its exporter process."""

    def __init__(self, cfg: TracingConfig) -> None:
        self.ratio = cfg.sample_ratio
        self.sent = 0
        self.dropped = 0
        self._buf = bytearray()
        self.max_buffered = MAX_BUFFERED
        self._encode = msgspec.msgpack.Encoder().encode
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.observability.exporter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(self._fd, False)
        self._frame(self._encode(Settings(cfg.endpoint, dict(cfg.headers), cfg.service_name)))
        self._drain()

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
        batch = [traced(ctx, r, ctx.trace) for ctx, r in zip(contexts, records, strict=True) if ctx.trace]
        if batch:
            if len(self._buf) < self.max_buffered:
                self._frame(self._encode(batch))
                self.sent += len(batch)
            else:
                self.dropped += len(batch)
                if self.dropped == len(batch) or self.dropped % 10_000 < len(batch):
                    log.warning(
                        "the trace exporter is behind: %d traced requests dropped so far", self.dropped
                    )
        self._drain()

    def _frame(self, payload: bytes) -> None:
        self._buf += HEADER.pack(len(payload))
        self._buf += payload

    def _drain(self) -> None:
        """Write what the pipe takes now; the rest waits for the next tick."""
        while self._buf:
            try:
                n = os.write(self._fd, self._buf)
            except BlockingIOError:
                return
            except OSError:  # the exporter is gone: nothing to hand spans to
                self.dropped += 1
                self._buf.clear()
                return
            del self._buf[:n]

    def close(self) -> None:
        """Hand over what is left, then let the exporter flush and leave."""
        try:
            os.set_blocking(self._fd, True)
            while self._buf:
                del self._buf[: os.write(self._fd, self._buf)]
        except OSError:
            self._buf.clear()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("the trace exporter did not finish in 10 s; stopping it")
            self.proc.kill()
