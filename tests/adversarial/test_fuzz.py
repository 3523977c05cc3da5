"""Property-based fuzzing of every endpoint against a real Granian gateway in front of the simulator (issue 11,
"What it must show" 2): random and near-valid bodies, headers and ids for both chat dialects, embeddings, models,
count_tokens and the admin API. Every answer must be a clean one — never a 500, never an error outside the
caller's dialect, never a hang — every request that reached an endpoint has exactly one record, and afterwards the
gateway is healthy, its workers the same processes.

A default run sends a few hundred requests; ``GATEWAY_FUZZ_EXAMPLES=3500`` (per test) makes the long run
(~20,000 requests), whose totals are printed at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import peak_rss_mb, workers
from tests.conftest import KEY_A, KEY_B, KEY_LIMITED, base_config

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "50"))
HANG_S = 30.0  # an answer slower than this is a hang (the simulator's slowest fuzzed answer takes < 1 s)
ADMIN_KEY = "gw-fuzz-admin-key-000000000000000000000"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)
# 5xx an upstream failure explains (the simulator injects them on request); anything else in 5xx is a gateway fault
UPSTREAM_5XX = {
    "upstream_error",
    "upstream_bad_response",
    "upstream_unavailable",
    "no_healthy_deployment",
    "upstream_timeout",
    "schema_validation_failed",
    "not_implemented",
}
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4o-2024-08-06", "two-deployments", "text-embedding-3-small"]


class Tally:
    """What the fuzzers saw, for the assertions at the end and the long run's report."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.request_ids: list[str] = []
        self.slowest = 0.0
        self.faults: list[str] = []
        self.sent = 0


TALLY = Tally()


@pytest.fixture(scope="module")
def fuzz_gw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("fuzz") / "g.db")
    cfg["admin"] = {"key": ADMIN_KEY}
    cfg["stages"] = {
        "pii": {"enabled": True},
        "limits": {"enabled": True, "per_key": {"rpm": 10_000_000, "tpm": 1_000_000_000}},
        "budget": {"enabled": True, "tenants": {"tenant-a": {"usd": 1_000_000.0, "period": "lifetime"}}},
    }
    gw = start_gateway(cfg)
    gw.initial_workers = workers(gw.proc.pid)
    return gw


class Client:
    """One keep-alive connection, reopened after anything that may have closed it."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        t0 = time.monotonic()
        for attempt in range(2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=HANG_S)
            t0 = time.monotonic()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                took = time.monotonic() - t0
                if took >= HANG_S - 1:
                    TALLY.faults.append(f"hang: {method} {path} {took:.1f}s")
                    raise AssertionError(f"{method} {path}: no answer in {took:.1f}s") from e
                if not reused or attempt:  # a kept-alive connection the server closed: once more on a new one
                    raise
        took = time.monotonic() - t0
        TALLY.sent += 1
        TALLY.slowest = max(TALLY.slowest, took)
        TALLY.statuses[resp.status] += 1
        rid = resp.getheader("x-gateway-request-id")
        if rid:
            TALLY.request_ids.append(rid)
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        check(method, path, resp.status, resp.getheader("content-type") or "", data)


def check(method: str, path: str, status: int, content_type: str, data: bytes) -> None:
    """A clean answer: below 500 (or an upstream failure the simulator was asked for), errors in a dialect."""
    where = f"{method} {path[:80]} -> {status}: {data[:300]!r}"
    if status >= 400 and method != "HEAD" and "json" in content_type:
        body = orjson.loads(data)
        if path.startswith("/v1/messages") and "error" in body and body.get("type") == "error":
            code = body["error"].get("code")
        else:
            assert isinstance(body.get("error"), dict), where
            code = body["error"].get("code")
        if status >= 500 and code not in UPSTREAM_5XX:
            TALLY.faults.append(where)
        assert code != "internal_error", where
    if status >= 500:
        assert status != 500, where


# ---------------------------------------------------------------- strategies

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 2**63, 1e-300]),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
directives = st.sampled_from(
    [
        "",
        "",
        "",
        "[[sim:fail=500]]",
        "[[sim:fail=429]]",
        "[[sim:fail=503]]",
        "[[sim:drop_after=2]]",
        "[[sim:no_usage]]",
        "[[sim:latency_ms=50]]",
        "[[sim:output_tokens=300]]",
        "#echo ",
        "jane.doe@example.com 078-05-1120 ",
        '[[sim:json={"a": 1}]]',
    ]
)
text = st.builds(lambda d, t: d + t, directives, st.text(max_size=60))


def maybe(strategy: Any) -> Any:
    """A field's value: usually near-valid, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, json_values)


openai_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": text}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["https://x/y.png", "data:image/png;base64,AAAA", "", "ftp://h"])}
            ),
        }
    ),
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "input_audio"]), json_values, max_size=3),
)
openai_message = st.fixed_dictionaries(
    {
        "role": maybe(
            st.sampled_from(["user", "system", "assistant", "tool", "developer", "function", "robot"])
        ),
        "content": maybe(st.one_of(text, st.lists(openai_part, max_size=3), st.none())),
    },
    optional={
        "name": maybe(printable),
        "tool_call_id": maybe(printable),
        "tool_calls": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "id": printable,
                        "type": st.just("function"),
                        "function": st.fixed_dictionaries(
                            {"name": printable, "arguments": st.text(max_size=20)}
                        ),
                    }
                ),
                max_size=2,
            )
        ),
    },
)
tool = st.fixed_dictionaries(
    {
        "type": maybe(st.just("function")),
        "function": maybe(
            st.fixed_dictionaries(
                {"name": maybe(printable)},
                optional={
                    "parameters": maybe(st.just({"type": "object", "properties": {"a": {"type": "string"}}})),
                    "description": text,
                },
            )
        ),
    }
)
response_format = st.one_of(
    st.just({"type": "json_object"}),
    st.just({"type": "text"}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": maybe(
                st.fixed_dictionaries(
                    {"name": maybe(printable), "schema": maybe(st.just({"type": "object"}))}
                )
            ),
        }
    ),
)
openai_chat = st.fixed_dictionaries(
    {
        "model": maybe(st.sampled_from(MODELS) | printable),
        "messages": maybe(st.lists(openai_message, min_size=1, max_size=4)),
    },
    optional={
        "stream": maybe(st.booleans()),
        "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
        "max_tokens": maybe(st.integers(min_value=-5, max_value=10**9)),
        "max_completion_tokens": maybe(st.integers(min_value=-5, max_value=10**6)),
        "temperature": maybe(st.floats(-1, 3, allow_nan=False)),
        "top_p": maybe(st.floats(-1, 2, allow_nan=False)),
        "n": maybe(st.integers(min_value=-1, max_value=200)),
        "stop": maybe(st.one_of(printable, st.lists(printable, max_size=5))),
        "seed": maybe(st.integers()),
        "user": maybe(printable),
        "tools": maybe(st.lists(tool, max_size=3)),
        "tool_choice": maybe(st.sampled_from(["auto", "none", "required"])),
        "parallel_tool_calls": maybe(st.booleans()),
        "response_format": maybe(response_format),
        "metadata": maybe(st.dictionaries(printable, printable, max_size=3)),
        "logprobs": json_values,
        "reasoning_effort": json_values,
    },
)
anthropic_block = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": maybe(text)},
        optional={"cache_control": maybe(st.just({"type": "ephemeral"}))},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": maybe(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["base64", "url", "file"]),
                        "media_type": st.just("image/png"),
                        "data": st.just("AAAA"),
                        "url": st.just("https://x/y.png"),
                    }
                )
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": maybe(printable), "name": maybe(printable), "input": json_values}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": maybe(printable),
            "content": maybe(
                st.one_of(
                    text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2)
                )
            ),
        },
        optional={"is_error": json_values},
    ),
    st.fixed_dictionaries(
        {"type": st.just("thinking"), "thinking": maybe(text), "signature": maybe(printable)}
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": maybe(printable)}),
    st.dictionaries(st.sampled_from(["type", "text", "source", "id"]), json_values, max_size=3),
)
anthropic_message = st.fixed_dictionaries(
    {
        "role": maybe(st.sampled_from(["user", "assistant", "system"])),
        "content": maybe(st.one_of(text, st.lists(anthropic_block, min_size=1, max_size=3))),
    }
)
anthropic_chat = st.fixed_dictionaries(
    {
        "model": maybe(st.sampled_from(MODELS) | printable),
        "messages": maybe(st.lists(anthropic_message, min_size=1, max_size=4)),
        "max_tokens": maybe(st.integers(min_value=-5, max_value=10**9)),
    },
    optional={
        "system": maybe(
            st.one_of(
                text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2)
            )
        ),
        "stream": maybe(st.booleans()),
        "temperature": maybe(st.floats(-1, 2, allow_nan=False)),
        "top_p": json_values,
        "top_k": json_values,
        "stop_sequences": maybe(st.lists(printable, max_size=3)),
        "metadata": maybe(st.fixed_dictionaries({}, optional={"user_id": maybe(printable)})),
        "tools": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"name": maybe(printable), "input_schema": maybe(st.just({"type": "object"}))},
                    optional={"description": text, "type": json_values},
                ),
                max_size=2,
            )
        ),
        "tool_choice": maybe(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])}, optional={"name": printable}
            )
        ),
        "thinking": maybe(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["enabled", "disabled"]), "budget_tokens": st.integers(-1, 10**6)}
            )
        ),
        "output_config": json_values,
        "service_tier": json_values,
    },
)
embeddings = st.fixed_dictionaries(
    {
        "model": maybe(st.sampled_from(MODELS) | printable),
        "input": maybe(
            st.one_of(
                text,
                st.lists(text, max_size=4),
                st.lists(st.lists(st.integers(0, 200_000), max_size=5), max_size=3),
            )
        ),
    },
    optional={
        "encoding_format": maybe(st.sampled_from(["float", "base64"])),
        "dimensions": maybe(st.integers(-1, 5000)),
        "user": json_values,
    },
)
ids = st.one_of(
    printable,
    st.sampled_from(["tenant-a", "tenant-b", "acme/alice", "../../etc", "%2e%2e", "a" * 300, "💥", ""]),
)
caller_headers = st.fixed_dictionaries(
    {
        "authorization": st.sampled_from(
            [
                f"Bearer {KEY_A}",
                f"Bearer {KEY_A}",
                f"Bearer {KEY_B}",
                f"Bearer {KEY_LIMITED}",
                "Bearer nope",
                "Basic x",
                "",
            ]
        )
    },
    optional={
        "x-gateway-tags": printable,
        "x-gateway-agent": ids,
        "x-gateway-session": ids,
        "x-gateway-approval": printable,
        "x-api-key": st.sampled_from([KEY_A, "nope"]),
        "traceparent": printable,
        "anthropic-version": printable,
        "content-type": st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]
        ),
    },
)


def encode(body: Any, raw: bytes | None) -> bytes:
    if raw is not None:
        return raw
    try:
        return orjson.dumps(body)
    except TypeError:  # integers past 64 bits: valid JSON all the same
        return json.dumps(body).encode()


def latin1(headers: dict[str, str]) -> dict[str, str]:
    """Header values as the bytes a client would send (UTF-8), in the latin-1 text http.client writes."""
    return {k: v.encode().decode("latin-1") for k, v in headers.items() if v}


raw_bodies = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"a":', b"\xff\xfe", b'{"model": NaN}']),
)


def post(gw: Any, path: str, body: Any, raw: bytes | None, headers: dict[str, str]) -> None:
    client = CLIENTS.setdefault(gw.url, Client(gw.url))
    hdrs = latin1(headers)
    hdrs.setdefault("content-type", "application/json")
    client.send("POST", path, encode(body, raw), hdrs)


CLIENTS: dict[str, Client] = {}

# ---------------------------------------------------------------- the fuzzers


@FUZZ
@given(
    body=openai_chat,
    raw=raw_bodies,
    headers=caller_headers,
    path=st.sampled_from(["/v1/chat/completions", "/chat/completions", "/v1/completions"]),
)
def test_fuzz_openai_chat(fuzz_gw, body, raw, headers, path):
    post(fuzz_gw, path, body, raw, headers)


@FUZZ
@given(body=anthropic_chat, raw=raw_bodies, headers=caller_headers)
def test_fuzz_anthropic_messages(fuzz_gw, body, raw, headers):
    post(fuzz_gw, "/v1/messages", body, raw, headers)


@FUZZ
@given(body=anthropic_chat, raw=raw_bodies, headers=caller_headers)
def test_fuzz_count_tokens(fuzz_gw, body, raw, headers):
    post(fuzz_gw, "/v1/messages/count_tokens", body, raw, headers)


@FUZZ
@given(body=embeddings, raw=raw_bodies, headers=caller_headers)
def test_fuzz_embeddings(fuzz_gw, body, raw, headers):
    post(fuzz_gw, "/v1/embeddings", body, raw, headers)


@FUZZ
@given(
    method=st.sampled_from(["GET", "GET", "HEAD", "POST", "DELETE", "PUT"]),
    model_id=st.one_of(st.none(), st.sampled_from(MODELS), ids),
    headers=caller_headers,
    anthropic=st.booleans(),
)
def test_fuzz_models(fuzz_gw, method, model_id, headers, anthropic):
    path = (
        "/v1/models"
        if model_id is None
        else "/v1/models/" + "".join(c if c.isalnum() or c in "-._" else "_" for c in model_id)
    )
    hdrs = latin1(headers)
    if anthropic:
        hdrs["anthropic-version"] = "2023-06-01"
    CLIENTS.setdefault(fuzz_gw.url, Client(fuzz_gw.url)).send(method, path, None, hdrs)


admin_heads = st.sampled_from(
    [
        "keys",
        "budgets",
        "limits",
        "spend",
        "approvals",
        "stats",
        "costs",
        "alerts",
        "cooldowns",
        "cache",
        "nope",
        "",
    ]
)
admin_scopes = st.sampled_from(["tenant", "team", "key", "tag", "user", "agent", "agent_run", "model", "x"])
admin_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"tenant": maybe(ids)},
        optional={
            "team": maybe(ids),
            "name": maybe(ids),
            "models": maybe(st.lists(st.sampled_from(MODELS) | printable, max_size=3)),
            "residency": json_values,
            "profile": json_values,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "usd": maybe(st.floats(-1, 1e308, allow_nan=False)),
            "period": maybe(st.sampled_from(["day", "month", "lifetime", "week"])),
            "window_s": maybe(st.floats(0, 1e9, allow_nan=False)),
            "rpm": maybe(st.integers(-1, 10**12)),
            "tpm": json_values,
            "soft_usd": json_values,
        },
    ),
    st.fixed_dictionaries(
        {"key_id": maybe(printable), "max_usd": maybe(st.floats(-1, 1e308, allow_nan=False))},
        optional={"ttl_s": json_values},
    ),
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    head=admin_heads,
    scope=admin_scopes,
    ident=ids,
    body=admin_bodies,
    raw=raw_bodies,
    query=st.sampled_from(
        ["", "?scope=tenant&id=tenant-a", "?tenant=tenant-a", "?since=abc", "?limit=-1", "?window=x"]
    ),
    auth=st.sampled_from([f"Bearer {ADMIN_KEY}", f"Bearer {ADMIN_KEY}", f"Bearer {KEY_A}", "", "Bearer x"]),
)
def test_fuzz_admin_api(fuzz_gw, method, head, scope, ident, body, raw, query, auth):
    safe = "".join(c if c.isalnum() or c in "-._/" else f"%{ord(c) & 0xFF:02X}" for c in ident)
    parts = [p for p in (head, scope if head in ("budgets", "limits") else "", safe) if p]
    path = "/admin/" + "/".join(parts) + query
    if head == "cache" and method == "POST":
        path = "/admin/cache/purge"
    hdrs = {"authorization": auth} if auth else {}
    payload = encode(body, raw) if method in ("POST", "PUT", "PATCH") else None
    if payload is not None:
        hdrs["content-type"] = "application/json"
    CLIENTS.setdefault(fuzz_gw.url, Client(fuzz_gw.url)).send(method, path, payload, hdrs)


def test_afterwards_healthy_same_workers_and_one_record_per_request(fuzz_gw):
    for path in ("/healthz", "/readyz"):
        c = http.client.HTTPConnection(*fuzz_gw.url.removeprefix("http://").split(":"), timeout=10)
        c.request("GET", path)
        assert c.getresponse().status == 200
    now = workers(fuzz_gw.proc.pid)
    restarts = len(set(fuzz_gw.initial_workers) - set(now))
    peak = max(peak_rss_mb(p) for p in now)
    ids = TALLY.request_ids
    records = fuzz_gw.records(wait_for=len(set(ids)), timeout_s=60)
    per_id = Counter(r["request_id"] for r in records)
    missing = [i for i in ids if per_id[i] == 0]
    doubled = [i for i in set(ids) if per_id[i] > 1]
    fives = sum(n for s, n in TALLY.statuses.items() if s >= 500)
    print(
        f"\nfuzz: {TALLY.sent} requests, statuses {dict(sorted(TALLY.statuses.items()))}, 5xx {fives} "
        f"(gateway faults {len(TALLY.faults)}), slowest {TALLY.slowest:.2f}s, hangs "
        f"{sum(f.startswith('hang') for f in TALLY.faults)}, worker restarts {restarts}, worker peak RSS {peak:.0f} MB, "
        f"records {len(ids)} ids / missing {len(missing)} / doubled {len(doubled)}"
    )
    assert not TALLY.faults, TALLY.faults[:10]
    assert restarts == 0
    assert len(set(ids)) == len(ids), "a request id was given twice"
    assert not missing and not doubled, (missing[:5], doubled[:5])
