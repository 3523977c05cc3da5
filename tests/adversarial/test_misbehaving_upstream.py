"""A hostile upstream (giant bodies, gzip bombs, endless and never-framed streams, absurd Retry-After, slow drip,
hangs) costs the gateway bounded memory and bounded time, and every request still gets a clean error and a record
(issue 11, defects 5 and 6). The bounds are generous limits, not speed measurements."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from tests.adversarial.conftest import peak_rss_mb, workers
from tests.conftest import KEY_A, base_config

TIMEOUT_S = 4.0  # the deployments' timeout_s: a drip or a hang ends by then
LIMIT = 8 * 1024 * 1024  # the deployments' max_response_bytes
TIME_BOUND_S = 60.0  # far above TIMEOUT_S: only a request the timeout did not stop gets near it
RSS_BOUND_MB = 400.0  # a worker's peak; before the fixes one giant body took it to 1.4 GB

BEHAVIOURS = ["giant", "gzip-bomb", "endless", "never-framed", "drip", "hang"]
RETRY_AFTER = ["decade", "huge", "inf", "nan", "negative", "digits", "garbage"]


def config(upstream: str, sim_url: str, db: Any) -> dict[str, Any]:
    cfg = base_config(sim_url, db)
    for name in [*BEHAVIOURS, *(f"retry-after-{r}" for r in RETRY_AFTER), "many-embeddings"]:
        cfg["models"][name] = {
            "max_attempts": 1,
            "deployments": [
                {
                    "id": name,
                    "model": name,
                    "api_base": upstream + "/v1",
                    "api_key": "k",
                    "timeout_s": TIMEOUT_S,
                    "max_response_bytes": 64 * 1024 * 1024 if name == "many-embeddings" else LIMIT,
                }
            ],
        }
    return cfg


@pytest.fixture(scope="module", params=["reqwest", "aiohttp"])
def hostile_gw(request, misbehaving, simulator, start_gateway, tmp_path_factory):
    """The gateway in front of the misbehaving upstream, with each of its HTTP clients."""
    cfg = config(misbehaving.url, simulator.url, tmp_path_factory.mktemp("h") / "g.db")
    cfg["server"]["http_client"] = request.param
    return start_gateway(cfg)


def call(gw: Any, path: str, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str], float]:
    req = urllib.request.Request(
        gw.url + path,
        data=orjson.dumps(body),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY_A}"},
    )
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=TIME_BOUND_S) as r:
            return r.status, r.read(), dict(r.headers), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers), time.monotonic() - t0


def chat(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_hostile_answers_end_in_a_clean_error_in_bounded_time(hostile_gw, behaviour, stream):
    status, body, _, took = call(hostile_gw, "/v1/chat/completions", chat(behaviour, stream))
    assert took < TIME_BOUND_S
    if stream and status == 200:  # the error arrives inside the stream once it has started
        assert b'"error"' in body.rsplit(b"data: ", 2)[-1] or b'"error"' in body[-2000:], body[-300:]
        return
    assert status in (502, 504), body[:300]
    err = orjson.loads(body)["error"]
    assert err["code"] in ("upstream_bad_response", "upstream_timeout", "upstream_error"), err
    if behaviour in ("giant", "gzip-bomb", "endless", "never-framed"):
        assert "max_response_bytes" in err["message"], err


@pytest.mark.parametrize("value", RETRY_AFTER)
def test_absurd_retry_after_is_a_clean_429(hostile_gw, value):
    status, body, headers, _ = call(hostile_gw, "/v1/chat/completions", chat(f"retry-after-{value}", False))
    assert status == 429, body[:300]
    retry_after = headers.get("retry-after") or headers.get("Retry-After")
    assert retry_after is None or (retry_after.isdigit() and len(retry_after) <= 6), retry_after


def test_many_embeddings_are_relayed_without_decoding_the_vectors(hostile_gw):
    status, body, _, _ = call(hostile_gw, "/v1/embeddings", {"model": "many-embeddings", "input": "x"})
    assert status == 200
    data = orjson.loads(body)
    assert len(data["data"]) == 2000 and data["usage"]["prompt_tokens"] == 2000


def test_a_stream_client_that_does_not_read_costs_bounded_memory(hostile_gw):
    """It asks for an endless stream and never reads: what piles up for it is bounded by max_response_bytes."""
    body = orjson.dumps(chat("endless", True))
    host, port = hostile_gw.url.removeprefix("http://").split(":")
    socks = []
    for _ in range(4):
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {KEY_A}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        socks.append(s)
    time.sleep(6)
    for s in socks:
        s.close()


def test_afterwards_the_workers_stayed_small_and_alive_and_every_request_has_a_record(hostile_gw):
    pids = workers(hostile_gw.proc.pid)
    assert pids
    peaks = [peak_rss_mb(p) for p in pids]
    print(f"\nworker peak RSS after the hostile upstream: {[round(p) for p in peaks]} MB")
    assert max(peaks) < RSS_BOUND_MB
    with urllib.request.urlopen(hostile_gw.url + "/healthz", timeout=5) as r:
        assert r.status == 200
    records = hostile_gw.records(wait_for=2 * len(BEHAVIOURS) + len(RETRY_AFTER) + 1 + 4)
    assert len(records) >= 2 * len(BEHAVIOURS) + len(RETRY_AFTER) + 1 + 4
    assert not [r for r in records if r["status"] == 500], [r for r in records if r["status"] == 500]
