"""Clients that misbehave at the edge (issue 11, defects 9, 11, 12): one that disconnects while sending its body
is a 499 with no traceback; silent, slow-header and slow-body connections are cut by the server's read timeouts;
a client that abandons a non-stream request cancels the upstream call, and the request settles at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import KEY_A, base_config

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
BOUND_S = 15.0  # generous; Granian's own default cuts a silent connection only after 30 s, slow ones never


@pytest.fixture(scope="module")
def edge(simulator, start_gateway, tmp_path_factory) -> tuple[Any, Path]:
    d = tmp_path_factory.mktemp("edge")
    cfg = base_config(simulator.url, d / "g.db")
    cfg["server"]["header_read_timeout_s"] = HEADER_TIMEOUT_S
    cfg["server"]["body_read_timeout_s"] = BODY_TIMEOUT_S
    log = d / "gateway.log"
    return start_gateway(cfg, log=log), log


def connect(gw: Any) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(BOUND_S + 5)
    return s


def head(length: int, path: str = "/v1/chat/completions") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {KEY_A}\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def closed_within(s: socket.socket, bound: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection; whether it did within ``bound`` seconds, and what it sent."""
    got = b""
    deadline = time.monotonic() + bound
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            piece = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not piece:
            return True, got
        got += piece
    return False, got


def records_of(gw: Any, n: int) -> list[dict[str, Any]]:
    return gw.records(wait_for=n, timeout_s=BOUND_S)


def test_a_client_that_disconnects_mid_body_is_a_499_without_a_traceback(edge):
    gw, log = edge
    before = len(gw.records())
    s = connect(gw)
    s.sendall(head(100_000) + b'{"model": "gpt-4o-mini", "messages": [')
    time.sleep(0.3)
    s.close()
    recs = records_of(gw, before + 1)
    assert len(recs) == before + 1
    rec = recs[-1]
    assert rec["status"] == 499 and rec["error_code"] == "client_disconnected", rec
    time.sleep(0.3)
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.xfail(
    strict=True,
    reason="Granian (hyper) starts its header timer at a request's first byte: a connection that never sends one "
    "is not cut by the server, and the gateway never sees it (no Granian setting for an idle timeout)",
)
def test_a_silent_connection_is_closed(edge):
    gw, _ = edge
    s = connect(gw)
    closed, _ = closed_within(s, BOUND_S)
    assert closed


def test_headers_at_one_byte_per_second_are_cut(edge):
    gw, _ = edge
    s = connect(gw)
    data = head(2)
    t0 = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - t0 > BOUND_S:
            break
        try:
            s.sendall(data[i : i + 1])
        except OSError:
            break  # cut
        closed, _ = closed_within(s, 1.0)
        if closed:
            break
    assert time.monotonic() - t0 < BOUND_S


def test_a_body_at_one_byte_per_second_is_a_408(edge):
    gw, _ = edge
    before = len(gw.records())
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    s = connect(gw)
    s.sendall(head(len(body)))
    got = b""
    t0 = time.monotonic()
    for i in range(len(body)):
        if time.monotonic() - t0 > BOUND_S:
            break
        try:
            s.sendall(body[i : i + 1])
        except OSError:
            break
        closed, piece = closed_within(s, 1.0)
        got += piece
        if closed or piece:
            break
    assert time.monotonic() - t0 < BOUND_S
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"request_timeout" in got
    rec = records_of(gw, before + 1)[-1]
    assert rec["status"] == 408


def test_an_abandoned_request_cancels_its_upstream_call_and_settles(edge, simulator):
    """The upstream would take 20 s; the client leaves after 0.5 s. The request is recorded (499) at once, not
    when the upstream answers, and the upstream sees its connection closed."""
    gw, _ = edge
    before = len(gw.records())
    body = orjson.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[[sim:latency_ms=20000]] hi"}]}
    )
    s = connect(gw)
    s.sendall(head(len(body)) + body)
    time.sleep(0.5)
    t0 = time.monotonic()
    s.close()
    recs = records_of(gw, before + 1)
    settled_after = time.monotonic() - t0
    assert len(recs) == before + 1, "no record while the upstream call still runs"
    rec = recs[-1]
    assert rec["status"] == 499 and rec["error_code"] == "client_disconnected", rec
    assert settled_after < BOUND_S
