"""The trace exporter process: encodes the spans of traced requests as OTLP protobuf and sends them over HTTP.

A worker's :class:`~gateway.observability.tracing.Tracer` starts one of these (``python -m
gateway.observability.exporter``) and writes to its stdin: first the exporter's settings, then batches of
:class:`Traced` (a finished request's record, its trace ids and the timings of its stages and attempts), each a
length-prefixed msgpack frame. The process shares the workers' cores, so what it spends per span is taken
from the requests: it writes each span straight into the OTLP wire format (``ExportTraceServiceRequest`` of
``opentelemetry-proto``, field by field) instead of building ``opentelemetry-sdk`` span objects and encoding
them, which cost about fifteen times as much CPU; the attributes that repeat from request to request (models,
providers, tenants, routes) are encoded once and reused. Spans are sent in batches (up to ``MAX_BATCH``, or
what arrived within ``DELAY_S``) by a sender thread with retries and backoff; when the collector is down or
slow and ``MAX_QUEUED`` batches wait, newer batches are dropped (logged), never the worker slowed. The
process runs at a lower CPU priority, so under overload the workers keep the cores and spans wait.

It exits when its stdin closes (the worker stopped or died), after exporting what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from gateway.context import Record
from gateway.observability.metrics import OPERATIONS, PROVIDER_NAMES

log = logging.getLogger("gateway.tracing")
_rand = random.Random()
HEADER = struct.Struct("<I")
MAX_BATCH = 1024  # spans per export request
DELAY_S = 0.2  # the longest a span waits for its batch to fill
MAX_QUEUED = 64  # export requests waiting for the collector; beyond it new ones are dropped
TIMEOUT_S = 10.0  # per export request, retries included
RETRYABLE = frozenset({408, 429, 502, 503, 504})


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


# --------------------------------------------------------------------- the OTLP wire format
# Field tags of opentelemetry/proto/trace/v1/trace.proto and common.proto: (field number << 3) | wire type.
_U64 = struct.Struct("<Q").pack
_F64 = struct.Struct("<d").pack
_U32 = struct.Struct("<I").pack
SERVER, CLIENT, INTERNAL = 2, 3, 1  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode
FLAG_SAMPLED, FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE = 0x01, 0x100, 0x200  # SpanFlags, with the W3C trace flags


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _any(v: Any) -> bytes:
    """An AnyValue: string, bool, int, double or an array of those."""
    if isinstance(v, str):
        return _len(b"\x0a", v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    if isinstance(v, float):
        return b"\x21" + _F64(v)
    if isinstance(v, (tuple, list)):
        return _len(b"\x2a", b"".join(_len(b"\x0a", _any(x)) for x in v))
    return _len(b"\x0a", str(v).encode())


def _kv(key: str, v: Any) -> bytes:
    """A KeyValue, as the ``attributes`` field of a span or a resource (field 9 of Span, 1 of Resource)."""
    return _len(b"\x0a", key.encode()) + _len(b"\x12", _any(v))


class SpanEncoder:
    """Writes the spans of a :class:`Traced` in the OTLP protobuf wire format, and wraps batches of them into
    an ``ExportTraceServiceRequest``. Attributes whose values repeat (low-cardinality strings) are encoded
    once."""

    CACHE_MAX = 4096

    def __init__(self, resource: dict[str, Any], scope: str, version: str) -> None:
        res = _len(b"\x0a", b"".join(_len(b"\x0a", _kv(k, v)) for k, v in resource.items()))
        self._scope = _len(b"\x0a", _len(b"\x0a", scope.encode()) + _len(b"\x12", version.encode()))
        self._resource = res
        self._attrs: dict[tuple[str, Any, type], bytes] = {}

    def request(self, spans: list[bytes]) -> bytes:
        """An ExportTraceServiceRequest: one resource, one scope, these encoded spans."""
        scope_spans = _len(b"\x12", self._scope + b"".join(spans))
        return _len(b"\x0a", self._resource + scope_spans)

    def _attr(self, key: str, v: Any) -> bytes:
        """A span attribute (field 9) whose value repeats across requests: encoded once."""
        k = (key, v, type(v))  # True == 1 == 1.0: the type keeps them apart
        b = self._attrs.get(k)
        if b is None:
            if len(self._attrs) >= self.CACHE_MAX:
                self._attrs.clear()
            b = self._attrs[k] = _len(b"\x4a", _kv(key, v))
        return b

    def spans(self, t: Traced) -> list[bytes]:
        """The request span, one child per upstream attempt and per stage, and a stream's first token; each
        a ``spans`` field of ScopeSpans, ready to concatenate."""
        attr, once = self._attr, _attr_once
        r = t.record
        t0 = int(r.ts * 1e9)
        head = b"\x0a\x10" + t.trace_id  # trace_id

        def wall(perf_ns: int) -> int:
            return t0 + (perf_ns - t.started)

        op = OPERATIONS.get(r.endpoint, r.endpoint)
        provider = PROVIDER_NAMES.get(r.provider or "", r.provider or "")
        a = [
            attr("gen_ai.operation.name", op),
            once("http.response.status_code", r.status),
            once("gateway.request_id", r.request_id),
            attr("gateway.endpoint", r.endpoint),
            attr("gateway.dialect", r.dialect),
            once("gateway.latency_ms", r.latency_ms),
            once("gateway.overhead_ms", r.overhead_ms),
            once("gateway.upstream_ms", r.upstream_ms),
            once("gateway.attempts", r.attempts),
        ]
        max_tokens, temperature, top_p = t.params
        for key, v in (
            ("gen_ai.request.model", r.model_requested),
            ("gen_ai.response.model", r.upstream_model),
            ("gen_ai.provider.name", provider or None),
            ("gateway.tenant", r.tenant),
            ("gateway.team", r.team),
            ("gateway.key_id", r.key_id),
            ("gateway.agent", r.agent),
            ("gateway.tags", tuple(r.tags) if r.tags else None),
            ("gateway.deployment", r.model_served),
            ("gateway.route", r.route),
            ("gateway.stream", r.stream if r.model_requested else None),
            ("error.type", r.error_code),
            ("gen_ai.request.max_tokens", max_tokens),
            ("gen_ai.request.temperature", temperature),
            ("gen_ai.request.top_p", top_p),
        ):
            if v is not None:
                a.append(attr(key, v))
        if r.model_requested:
            a.append(once("gen_ai.usage.input_tokens", r.input_tokens))
            a.append(once("gen_ai.usage.output_tokens", r.output_tokens))
            a.append(once("gateway.cost_usd", r.cost_usd))
        pii = (r.flags or {}).get("pii")
        if isinstance(pii, dict):  # which kinds were found and how many: never the values
            a.append(attr("gateway.pii.entities", tuple(sorted(pii))))
        name = f"{op} {r.model_requested}" if r.model_requested else r.endpoint
        error = _status(r.error_code or "") if r.status >= 500 else b""
        root_id = _U64(t.span_id)[::-1]  # big-endian, as the W3C ids
        if t.parent_id:
            parent = b"\x22\x08" + _U64(t.parent_id)[::-1]
            flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        else:
            parent, flags = b"", FLAG_SAMPLED | FLAG_HAS_IS_REMOTE
        end = t0 + int(r.latency_ms * 1e6)
        out = [_span(head, root_id, parent, name, SERVER, t0, end, a, error, flags)]
        child_of = b"\x22\x08" + root_id
        child_flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE
        for i, attempt in enumerate(t.attempts):
            span_id, a_provider, model, deployment, reason, a_error, a_status, start_ns, end_ns = attempt
            aa = [
                attr("gen_ai.operation.name", op),
                attr("gen_ai.provider.name", PROVIDER_NAMES.get(a_provider, a_provider)),
                attr("gen_ai.request.model", model),
                attr("gateway.deployment", deployment),
                attr("gateway.route.reason", reason),
                attr("gateway.attempt", i + 1),
            ]
            if a_error:
                aa.append(attr("error.type", a_error))
            if a_status:
                aa.append(attr("http.response.status_code", a_status))
            out.append(
                _span(
                    head,
                    _U64(span_id)[::-1],
                    child_of,
                    f"{op} {model}",
                    CLIENT,
                    wall(start_ns),
                    wall(end_ns or t.ended or start_ns),
                    aa,
                    _status(a_error) if a_error else b"",
                    child_flags,
                )
            )
        for stage, start_ns, end_ns in t.stages:
            out.append(
                _span(
                    head,
                    _U64(_rand.getrandbits(64) or 1)[::-1],
                    child_of,
                    f"stage {stage}",
                    INTERNAL,
                    wall(start_ns),
                    wall(end_ns),
                    [attr("gateway.stage", stage)],
                    b"",
                    child_flags,
                )
            )
        if r.stream and r.ttfb_ms is not None:
            out.append(
                _span(
                    head,
                    _U64(_rand.getrandbits(64) or 1)[::-1],
                    child_of,
                    "first token",
                    INTERNAL,
                    t0,
                    t0 + int(r.ttfb_ms * 1e6),
                    [attr("gen_ai.operation.name", op), once("gateway.ttfb_ms", r.ttfb_ms)],
                    b"",
                    child_flags,
                )
            )
        return out


def _attr_once(key: str, v: Any) -> bytes:
    """A span attribute (field 9) whose value is the request's own (ids, timings, counts)."""
    if type(v) is float:  # the common case, with the encoding up to the value made once per key
        return (_FLOAT_HEADS.get(key) or _float_head(key)) + _F64(v)
    return _len(b"\x4a", _kv(key, v))


_FLOAT_HEADS: dict[str, bytes] = {}


def _float_head(key: str) -> bytes:
    """A float attribute's encoding up to its 8 value bytes (it is the same for every value)."""
    head = _FLOAT_HEADS[key] = _len(b"\x4a", _kv(key, 0.0))[:-8]
    return head


def _status(message: str) -> bytes:
    """An error Status (field 15 of Span): code ERROR and its message."""
    return _len(b"\x7a", _len(b"\x12", message.encode()) + bytes((0x18, STATUS_ERROR)))


def _span(
    head: bytes,
    span_id: bytes,
    parent: bytes,
    name: str,
    kind: int,
    start: int,
    end: int,
    attrs: list[bytes],
    status: bytes,
    flags: int,
) -> bytes:
    """One Span, as the ``spans`` field (2) of ScopeSpans."""
    return _len(
        b"\x12",
        b"".join(
            (
                head,
                b"\x12\x08",
                span_id,
                parent,
                _len(b"\x2a", name.encode()),
                bytes((0x30, kind)),
                b"\x39",
                _U64(start),
                b"\x41",
                _U64(end),
                *attrs,
                status,
                b"\x85\x01",  # flags (field 16, fixed32)
                _U32(flags),
            )
        ),
    )


class Sender(threading.Thread):
    """Posts export requests to the collector, one at a time, with retries; a bounded queue in front of it."""

    def __init__(self, cfg: Settings) -> None:
        super().__init__(name="otlp-sender", daemon=True)
        import requests

        self.endpoint = cfg.endpoint
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/x-protobuf", **cfg.headers})
        self.queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUED)
        self.dropped = 0
        self.failed = 0

    def submit(self, payload: bytes, n_spans: int) -> None:
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            self.dropped += n_spans
            if self.dropped == n_spans or self.dropped % 10_000 < n_spans:
                log.warning("the trace collector is behind: %d spans dropped so far", self.dropped)

    def close(self) -> None:
        """Send what is queued, then stop (the caller waits at most as long as its worker lets it)."""
        self.queue.put(None)
        self.join()

    def run(self) -> None:
        while (payload := self.queue.get()) is not None:
            self.post(payload)

    def post(self, payload: bytes) -> bool:
        """One export request; connection errors and 408/429/502/503/504 are retried with backoff (honouring
        ``Retry-After``) within TIMEOUT_S."""
        import requests

        deadline = time.monotonic() + TIMEOUT_S
        for retry in range(6):
            left = deadline - time.monotonic()
            status = None
            backoff = 2**retry * random.uniform(0.8, 1.2) / 4
            try:
                resp = self.session.post(self.endpoint, data=payload, timeout=max(left, 0.1))
            except requests.RequestException as e:
                reason = str(e)
            else:
                status, reason = resp.status_code, resp.reason
                if 200 <= status < 300:
                    return True
                if status not in RETRYABLE:
                    break
                with contextlib.suppress(TypeError, ValueError):
                    backoff = float(resp.headers.get("retry-after") or "")
            if backoff > deadline - time.monotonic():
                break
            time.sleep(backoff)
        self.failed += 1
        log.error("a trace export to %s failed: %s %s", self.endpoint, status or "", reason)
        return False


def frames(fd: int, tick: Callable[[], float | None]) -> Iterator[bytes]:
    """The payloads of the length-prefixed frames read from ``fd``, until it ends. ``tick()`` runs once the
    frames read so far are handled and whenever a wait ends; it says how long the next wait for input may
    last (None: until input arrives)."""
    buf = bytearray()
    wait: float | None = None
    while True:
        if select.select([fd], [], [], wait)[0]:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            buf += chunk
            pos = 0
            while len(buf) - pos >= HEADER.size:
                (n,) = HEADER.unpack_from(buf, pos)
                if len(buf) - pos - HEADER.size < n:
                    break
                yield bytes(buf[pos + HEADER.size : pos + HEADER.size + n])
                pos += HEADER.size + n
            del buf[:pos]
        wait = tick()


class Exporter:
    """Encodes traced requests into spans and hands full (or old enough) batches to the sender."""

    def __init__(self, cfg: Settings) -> None:
        from opentelemetry.sdk.resources import Resource

        resource = dict(Resource.create({"service.name": cfg.service_name}).attributes)
        self.encoder = SpanEncoder(resource, "gateway", "0.1.0")
        self.sender = Sender(cfg)
        self.sender.start()
        self.spans: list[bytes] = []
        self.since = 0.0  # when the oldest pending span arrived (monotonic)

    def add(self, batch: list[Traced]) -> None:
        if not self.spans:
            self.since = time.monotonic()
        for t in batch:
            self.spans.extend(self.encoder.spans(t))
        if len(self.spans) >= MAX_BATCH:
            self.flush()

    def due(self) -> float | None:
        """Flush what is old enough; how long until the next flush is due (None: nothing pending)."""
        if not self.spans:
            return None
        left = self.since + DELAY_S - time.monotonic()
        if left <= 0:
            self.flush()
            return None
        return left

    def flush(self) -> None:
        spans, self.spans = self.spans, []
        for i in range(0, len(spans), MAX_BATCH):
            part = spans[i : i + MAX_BATCH]
            self.sender.submit(self.encoder.request(part), len(part))

    def close(self) -> None:
        self.flush()
        self.sender.close()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker's stop closes our stdin; flush, then leave
    with contextlib.suppress(OSError):
        os.nice(10)
    exporter: Exporter | None = None

    def tick() -> float | None:
        return exporter.due() if exporter is not None else None

    decode = msgspec.msgpack.Decoder(list[Traced]).decode
    try:
        for body in frames(sys.stdin.fileno(), tick):
            if exporter is None:
                exporter = Exporter(msgspec.msgpack.decode(body, type=Settings))
                continue
            try:
                batch = decode(body)
            except msgspec.DecodeError:
                log.exception("a malformed trace batch was skipped")
                continue
            exporter.add(batch)
    finally:
        if exporter is not None:
            exporter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
