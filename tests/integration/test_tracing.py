"""OpenTelemetry traces over OTLP/HTTP, received by an OTLP endpoint inside the test: one trace per request with
the GenAI attributes, the upstream attempts as child spans (with the route decision), the stages and a stream's
first token; a caller's traceparent continued and sent upstream; no prompt text in any attribute; the configured
headers sent with every export, and an export the collector refused (503) sent again, nothing lost or doubled."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import KEY_A, base_config, free_port

SECRET = "the launch code is tangerine-4471"


class Receiver(http.server.BaseHTTPRequestHandler):
    spans: list[Any] = []
    content_types: list[str] = []
    auth: list[str | None] = []
    refuse = 1  # the first export is answered 503 (a collector restarting): the exporter must retry it

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.auth.append(self.headers.get("authorization"))
        if Receiver.refuse:
            Receiver.refuse -= 1
            self.send_response(503)
            self.send_header("retry-after", "0")
            self.end_headers()
            return
        Receiver.content_types.append(self.headers.get("content-type", ""))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    Receiver.spans.append((service, s))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


@pytest.fixture(scope="module")
def tgw(simulator, start_gateway, tmp_path_factory):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    v1 = simulator.url + "/v1"
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "t.db")
    cfg["models"]["ha"] = {
        "strategy": "priority",
        "deployments": [
            {"id": "ha-a", "model": "ha-a", "api_base": v1, "api_key": "k", "priority": 0},
            {"id": "ha-b", "model": "ha-b", "api_base": v1, "api_key": "k", "priority": 1},
        ],
    }
    cfg["stages"] = {"pii": {"enabled": True}}
    cfg["observability"] = {
        "tracing": {
            "enabled": True,
            "endpoint": f"http://127.0.0.1:{port}/v1/traces",
            "service_name": "gw-test",
            "headers": {"authorization": "Bearer otlp-token"},
        }
    }
    yield start_gateway(cfg, workers=2)
    server.shutdown()


def spans_of(trace_id: bytes, want: int, timeout_s: float = 15) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [s for _svc, s in Receiver.spans if s.trace_id == trace_id]
        if len(found) >= want:
            time.sleep(0.5)  # anything else of this trace arrives in the same batch
            return [s for _svc, s in Receiver.spans if s.trace_id == trace_id]
        time.sleep(0.1)
    raise AssertionError(f"{len(Receiver.spans)} spans received, none enough for trace {trace_id.hex()}")


def test_a_callers_trace_is_continued_with_attempts_as_children(tgw, simulator):
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = tgw.openai(KEY_A)
    resp = client.chat.completions.with_raw_response.create(
        model="ha",
        messages=[{"role": "user", "content": f"{SECRET} mail x@example.com [[sim:fail=503@ha-a]]"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    request_id = resp.headers["x-gateway-request-id"]
    spans = spans_of(bytes.fromhex(trace_id), 4)
    roots = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert len(roots) == 1  # one trace per request, one request span in it
    root = roots[0]
    assert root.parent_span_id == bytes.fromhex(parent)  # the caller's span is the parent
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "ha"
    assert a["gen_ai.response.model"] == "ha-b" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gateway.request_id"] == request_id and a["gateway.attempts"] == 2
    assert a["gateway.pii.entities"].values[0].string_value == "EMAIL_ADDRESS"
    attempts = sorted(
        (s for s in spans if s.kind == s.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert [attrs(s)["gateway.deployment"] for s in attempts] == ["ha-a", "ha-b"]
    assert all(s.parent_span_id == root.span_id for s in attempts)
    assert attrs(attempts[0])["error.type"] == "http_503" and "error.type" not in attrs(attempts[1])
    assert attrs(attempts[0])["gateway.route.reason"].startswith("priority")
    assert attrs(attempts[1])["gateway.route.reason"] == "failover"
    assert (
        root.start_time_unix_nano
        <= attempts[0].start_time_unix_nano
        <= attempts[1].end_time_unix_nano
        <= root.end_time_unix_nano
    )
    assert any(s.name == "stage pii" for s in spans)
    # the upstream got the trace, with the serving attempt's span as its parent
    upstream = simulator.get("/_sim/last?model=ha-b")["headers"]["traceparent"]
    assert upstream == f"00-{trace_id}-{attempts[1].span_id.hex()}-01"
    # prompt text never becomes an attribute, anywhere
    for s in spans:
        for v in attrs(s).values():
            assert SECRET not in str(v) and "x@example.com" not in str(v)


def test_every_request_gets_its_own_trace_and_streams_a_first_token_span(tgw):
    client = tgw.openai(KEY_A)
    before = {s.trace_id for _svc, s in Receiver.spans}
    ids = []
    for i in range(3):
        resp = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"q {i}"}]
        )
        ids.append(resp.headers["x-gateway-request-id"])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "stream it"}]
    )
    for _ in stream:
        pass
    # a caller that decided not to sample: no trace
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "not sampled"}],
        extra_headers={"traceparent": "00-11111111111111111111111111111111-2222222222222222-00"},
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        roots = [s for _svc, s in Receiver.spans if s.kind == s.SPAN_KIND_SERVER and s.trace_id not in before]
        if len(roots) >= 4:
            break
        time.sleep(0.2)
    time.sleep(1)
    roots = [s for svc, s in Receiver.spans if s.kind == s.SPAN_KIND_SERVER and s.trace_id not in before]
    assert len(roots) == 4 and len({s.trace_id for s in roots}) == 4
    assert {attrs(s)["gateway.request_id"] for s in roots} >= set(ids)
    assert bytes.fromhex("11111111111111111111111111111111") not in {s.trace_id for _svc, s in Receiver.spans}
    assert {svc for svc, _s in Receiver.spans} == {"gw-test"}
    streamed = [s for s in roots if attrs(s).get("gateway.stream")]
    assert len(streamed) == 1
    children = [s for _svc, s in Receiver.spans if s.parent_span_id == streamed[0].span_id]
    assert "first token" in {s.name for s in children}
    assert all(ct.startswith("application/x-protobuf") for ct in Receiver.content_types)
    # the configured headers reach the collector with every export, the refused one included
    assert Receiver.auth and set(Receiver.auth) == {"Bearer otlp-token"}
    # the export the collector refused was sent again: no request span lost or doubled
    assert Receiver.refuse == 0 and len(Receiver.auth) > len(Receiver.content_types)
    ids = [attrs(s)["gateway.request_id"] for _svc, s in Receiver.spans if s.kind == s.SPAN_KIND_SERVER]
    assert len(ids) == len(set(ids))


def test_the_tracer_counts_what_it_handed_to_the_exporter(tgw):
    """Every worker's sampled requests are counted as sent to its exporter process, none dropped."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(tgw.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        got = {
            s.labels["outcome"]: s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "gateway_traced_requests_total"
        }
        if got.get("sent", 0) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got.get("sent", 0) >= 5 and got.get("dropped", 0) == 0
