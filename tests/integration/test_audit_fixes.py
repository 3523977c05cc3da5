"""Regressions for the outside audit's findings (issue 11, part A), each through the real gateway process."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from gateway.admin_cli import call, parser, to_call
from tests.conftest import KEY_A, KEY_B, KEY_LIMITED, base_config

ADMIN = "gw-admin-key-for-audit-tests-0000000000000"
KEY_TPM = "gw-test-audit-tpm-key-00000000000000000000"
EMAIL, SSN = "jane.doe@example.com", "536-22-8745"


def admin(gw: Any, method: str, path: str, body: Any = None, key: str = ADMIN) -> tuple[int, Any]:
    return call(gw.url, key, method, path, body)


@pytest.fixture(scope="module")
def hgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["admin"] = {"key": ADMIN}
    cfg["keys"].append({"key": KEY_TPM, "name": "tpm", "tenant": "tenant-c"})
    cfg["models"]["metered"] = {
        "deployments": [
            {
                "id": "metered",
                "model": "metered",
                "api_base": simulator.url + "/v1",
                "api_key": "k",
                # a few micro-dollars and a fraction a request: rounding per request shows
                "price": {"input": 0.37, "output": 0.41},
            }
        ]
    }
    cfg["stages"] = {
        "pii": {"enabled": True, "default": "mask"},
        "limits": {"enabled": True, "keys": {"tpm": {"tpm": 1000}}},
        "budget": {
            "enabled": True,
            "default_output_tokens": 20,
            "tenants": {"tenant-a": {"usd": 100.0, "period": "lifetime"}},
            # tenant-a's rules for its own tag "vip" and user "alice": nothing to do with tenant-b
            "tags": {"tenant-a/vip": {"usd": 0.0}},
            "users": {"tenant-a/alice": {"usd": 0.0}},
        },
    }
    return start_gateway(cfg)


def chat(client: Any, content: str, model: str = "gpt-4o-mini", **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


# ---------------------------------------------------------------- 1. the PII session vault is the key's own


def test_pii_session_vault_is_not_shared_with_another_key_of_the_tenant(hgw):
    first = chat(
        hgw.openai(KEY_A), f"#echo mail {EMAIL} ssn {SSN}", extra_headers={"x-gateway-session": "conv-1"}
    )
    assert EMAIL in first.parse().choices[0].message.content  # the owner gets its values back
    # KEY_LIMITED is another key of tenant-a; it guesses the session id and asks for the placeholders
    other = chat(
        hgw.openai(KEY_LIMITED),
        "#echo mine is a@b.co, theirs <EMAIL_ADDRESS_1> <US_SSN_1>",
        extra_headers={"x-gateway-session": "conv-1"},
    )
    reply = other.parse().choices[0].message.content
    assert EMAIL not in reply and SSN not in reply
    # the owner still has its session (a request with PII of its own loads the session's values)
    again = chat(
        hgw.openai(KEY_A),
        "#echo mine is a@b.co, <EMAIL_ADDRESS_1>",
        extra_headers={"x-gateway-session": "conv-1"},
    )
    assert EMAIL in again.parse().choices[0].message.content


def test_an_overlong_session_id_is_refused(hgw):
    with pytest.raises(openai.BadRequestError) as e:
        chat(hgw.openai(KEY_A), f"mail {EMAIL}", extra_headers={"x-gateway-session": "s" * 5000})
    assert e.value.body["code"] == "invalid_request"


# ---------------------------------------------------------------- 3. Retry-After is capped, shown, clearable


def test_an_absurd_retry_after_is_capped_shown_in_stats_and_clearable(hgw):
    # the upstream asks for ten years
    with pytest.raises(openai.RateLimitError) as e:
        chat(hgw.openai(KEY_A), "hi [[sim:fail=429]] [[sim:retry_after=315360000]]", model="two-deployments")
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 300
    status, stats = admin(hgw, "GET", "/admin/stats")
    assert status == 200
    cooling = stats["cooldowns"]
    assert cooling and all(0 < left <= 300 for left in cooling.values()), cooling
    dep = next(iter(cooling))
    assert 0 < stats["deployments"][dep]["cooldown_s"] <= 300
    status, body = call(hgw.url, ADMIN, *to_call(parser().parse_args(["cooldowns"])))  # the CLI's call
    assert status == 200 and dep in body["cleared"]
    status, stats = admin(hgw, "GET", "/admin/stats")
    assert stats["cooldowns"] == {} and stats["deployments"][dep]["cooldown_s"] == 0
    assert admin(hgw, "DELETE", "/admin/cooldowns/no-such-deployment")[0] == 404


# ---------------------------------------------------------------- 4. rule lookup stays in the caller's tenant


def test_a_caller_cannot_pick_another_tenants_rule_with_a_slash_in_its_ids(hgw):
    # tenant-a's own callers are held by tenant-a's rules
    with pytest.raises(openai.RateLimitError):
        chat(hgw.openai(KEY_A), "hi", extra_headers={"x-gateway-tags": "vip"})
    with pytest.raises(openai.RateLimitError):
        chat(hgw.openai(KEY_A), "hi", user="alice")
    # tenant-b naming them "tenant-a/vip" and "tenant-a/alice" gets none of tenant-a's rules
    assert (
        chat(
            hgw.openai(KEY_B), "hi", extra_headers={"x-gateway-tags": "tenant-a/vip"}
        ).http_response.status_code
        == 200
    )
    assert chat(hgw.openai(KEY_B), "hi", user="tenant-a/alice").http_response.status_code == 200
    assert (
        chat(
            hgw.openai(KEY_B), "hi", extra_headers={"x-gateway-agent": "tenant-a/vip"}
        ).http_response.status_code
        == 200
    )


# ---------------------------------------------------------------- 14. budget counters sum to the records


def test_spend_api_equals_the_sum_of_the_records(hgw):
    client = hgw.openai(KEY_A)
    ids = []
    for i in range(40):
        raw = chat(client, f"count this {i} [[sim:output_tokens=7]]", model="metered")
        ids.append(raw.headers["x-gateway-request-id"])
    records = [hgw.record(i) for i in ids]
    status, spend = admin(hgw, "GET", "/admin/spend?scope=tenant&id=tenant-a")
    assert status == 200
    # every other request of tenant-a in this module costs nothing or was refused
    others = [r for r in hgw.records() if r["tenant"] == "tenant-a" and r["request_id"] not in ids]
    total = sum(r["cost_usd"] for r in records) + sum(r["cost_usd"] for r in others)
    assert all(r["cost_usd"] > 0 for r in records)
    # each request rounds to the nearest nano-dollar (whole micro-dollars rounded up drifted by ~0.5 µ$ each)
    n = len(records) + len(others)
    assert abs(spend["spent_usd"] - total) <= n * 0.5e-9 + 1e-12, (spend["spent_usd"], total)


# ---------------------------------------------------------------- 8 (admin), 15, 16: admin input and its records


def raw_admin(
    gw: Any, method: str, path: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    req = urllib.request.Request(gw.url + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/admin/keys", {"tenant": "acme", "models": "gpt-4o"}),  # was stored as a list of letters
        ("POST", "/admin/keys", {"tenant": "acme", "name": {"a": 1}}),  # was an empty 500
        ("POST", "/admin/keys", {"tenant": "acme", "models": ["no-such-model"]}),
        ("POST", "/admin/keys", {"tenant": ""}),
        ("PUT", "/admin/budgets/tenant/tenant-b", {"usd": 1e308}),  # then every request of tenant-b was a 500
        ("PUT", "/admin/budgets/tenant/tenant-b", {"usd": 1, "soft_usd": -1}),
        ("PUT", "/admin/limits/key/b", {"rpm": 5, "window_s": 1e-300}),  # the limit became a no-op
        ("PUT", "/admin/limits/key/b", {"rpm": "5"}),
        ("POST", "/admin/approvals", {"key_id": "cfg_a", "max_usd": 1e308}),
        ("POST", "/admin/approvals", {"key_id": "cfg_a", "max_usd": 1, "ttl_s": "soon"}),
    ],
)
def test_admin_input_is_checked_with_the_config_types_and_bounds(hgw, method, path, body):
    status, answer = admin(hgw, method, path, body)
    assert status == 400 and answer["error"]["code"] == "invalid_request", answer
    assert chat(hgw.openai(KEY_B), "still served").http_response.status_code == 200


def test_approvals_need_an_existing_key(hgw):
    status, answer = admin(hgw, "POST", "/admin/approvals", {"key_id": "key_does_not_exist", "max_usd": 1})
    assert status == 404 and answer["error"]["code"] == "not_found"
    assert admin(hgw, "POST", "/admin/approvals", {"key_id": "cfg_a", "max_usd": 1})[0] == 201


def test_admin_key_only_in_authorization_and_bodies_bounded_and_405(hgw):
    assert raw_admin(hgw, "GET", "/admin/stats", None, {"x-api-key": ADMIN})[0] == 401
    # a body over server.max_body_bytes is refused from its declared length, before it is read
    conn = http.client.HTTPConnection(hgw.url.removeprefix("http://"), timeout=10)
    conn.putrequest("POST", "/admin/keys")
    conn.putheader("authorization", f"Bearer {ADMIN}")
    conn.putheader("content-type", "application/json")
    conn.putheader("content-length", str(2_000_000))
    conn.endheaders()
    conn.send(b'{"tenant": "acme", "name": "' + b"x" * 60_000)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "body_too_large"
    conn.close()
    status, answer = admin(hgw, "GET", "/admin/approvals")
    assert status == 405 and answer["error"]["code"] == "method_not_allowed"


def test_admin_calls_are_recorded_with_method_path_target_and_error(hgw):
    admin(hgw, "POST", "/admin/keys", {"tenant": "acme", "name": {"a": 1}})
    status, created = admin(hgw, "POST", "/admin/keys", {"tenant": "audited", "name": "svc"})
    assert status == 201
    admin(hgw, "DELETE", f"/admin/keys/{created['key_id']}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recs = [r for r in hgw.records() if r["endpoint"] == "admin"]
        bad = [
            r
            for r in recs
            if r["status"] == 400 and (r["flags"] or {}).get("admin", {}).get("path") == "/admin/keys"
        ]
        made = [r for r in recs if (r["flags"] or {}).get("admin", {}).get("target") == created["key_id"]]
        if bad and len(made) == 2:
            break
        time.sleep(0.1)
    assert bad and bad[-1]["error_code"] == "invalid_request"
    assert bad[-1]["flags"]["admin"]["method"] == "POST"
    # the creation and the revocation both name the key
    assert {(r["status"], r["flags"]["admin"]["method"]) for r in made} == {(201, "POST"), (200, "DELETE")}
    assert all(r["status"] < 400 or r["error_code"] for r in recs)  # no failed call recorded as a success


# ---------------------------------------------------------------- 10. records keep no caller text verbatim


def test_records_hold_no_pii_or_long_text_the_caller_chose(hgw):
    client = hgw.openai(KEY_B)
    ok = chat(
        client,
        "hi",
        user=EMAIL,
        extra_headers={"x-gateway-tags": f"ssn {SSN},search", "x-gateway-agent": f"{EMAIL}/run-1"},
    )
    rec = hgw.record(ok.headers["x-gateway-request-id"])
    assert rec["user"].startswith("h:") and rec["agent"].startswith("h:")
    assert rec["tags"][1] == "search" and rec["tags"][0].startswith("h:")  # plain ids stay readable
    assert rec["agent_run"] == "run-1"
    secret_model = f"summarise the file of {EMAIL} " + "x" * 180_000
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, "hi", model=secret_model)
    rec = hgw.record(e.value.response.headers["x-gateway-request-id"])
    text = json.dumps(rec)
    assert EMAIL not in text and "xxxxxxxx" not in text and len(text) < 4000
    assert rec["model_requested"].startswith("h:") and rec["model_requested"] in rec["error_message"]
    # the same caller text gets the same hash: reports can still group by it
    again = chat(client, "hi", user=EMAIL)
    assert (
        hgw.record(again.headers["x-gateway-request-id"])["user"]
        == hgw.record(ok.headers["x-gateway-request-id"])["user"]
    )


# ---------------------------------------------------------------- 7. caller-chosen ids are bounded


@pytest.mark.parametrize(
    "headers, kw",
    [
        ({"x-gateway-agent": "planner/" + "r" * 60_000}, {}),
        ({"x-gateway-tags": ",".join(f"t{i}" for i in range(5000))}, {}),
        ({}, {"user": "u" * 200}),
        ({"x-gateway-tags": "a\tb"}, {}),
    ],
)
def test_caller_ids_are_bounded_in_length_count_and_characters(hgw, headers, kw):
    with pytest.raises(openai.BadRequestError) as e:
        chat(hgw.openai(KEY_A), "hi", extra_headers=headers, **kw)
    assert e.value.body["code"] == "invalid_request"


def test_lifetime_counters_of_caller_ids_expire_when_idle(simulator, start_gateway, tmp_path, redis_url):
    import redis

    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["state"] = {"redis_url": redis_url, "key_prefix": "audit7"}
    cfg["stages"] = {
        "budget": {
            "enabled": True,
            "default_output_tokens": 20,
            "agent_runs": {"*": {"usd": 1.0, "period": "lifetime"}},
            "tenants": {"tenant-a": {"usd": 10.0, "period": "lifetime"}},
        }
    }
    gw = start_gateway(cfg)
    chat(gw.openai(KEY_A), "hi", extra_headers={"x-gateway-agent": "planner/run-77"})
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not r.keys("audit7:{agent_run:*"):
        time.sleep(0.05)
    (run_key,) = r.keys("audit7:{agent_run:*")
    assert 80 * 86400 < r.ttl(run_key) <= 90 * 86400  # a run nobody uses again is forgotten
    (tenant_key,) = r.keys("audit7:{tenant:*")
    assert r.ttl(tenant_key) == -1  # the tenant's lifetime budget is kept


# ---------------------------------------------------------------- 18. keys stored under a keyed hash


def test_keys_are_stored_under_a_keyed_hash_and_old_hashes_migrate(simulator, start_gateway, tmp_path):
    import hashlib
    import sqlite3

    from gateway.store.sqlite import SqliteStore

    db = tmp_path / "g.db"
    old_store = SqliteStore(db)  # a store written before server.key_secret was set
    old_id, old_key = old_store.create_key("tenant-m")
    old_store.close()
    cfg = base_config(simulator.url, db)
    cfg["admin"] = {"key": ADMIN}
    cfg["server"]["key_secret"] = "a-server-secret-kept-outside-the-database"
    gw = start_gateway(cfg)
    assert chat(gw.openai(old_key), "hi").http_response.status_code == 200  # the old hash still works
    status, created = admin(gw, "POST", "/admin/keys", {"tenant": "tenant-m"})
    assert status == 201
    assert chat(gw.openai(created["key"]), "hi").http_response.status_code == 200
    conn = sqlite3.connect(db)
    hashes = dict(conn.execute("SELECT key_id, key_hash FROM keys"))
    conn.close()
    for key_id, key in ((old_id, old_key), (created["key_id"], created["key"])):
        assert hashes[key_id].startswith("h1:")  # migrated on first use / written keyed
        assert hashlib.sha256(key.encode()).hexdigest() not in hashes[key_id]


# ---------------------------------------------------------------- 16. lenient validation


def request(
    gw: Any, method: str, path: str, body: Any = None, key: str = KEY_A
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        gw.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", "x-api-key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "wizard", "content": "hi"}],
        [{"role": "user", "content": [{"text": "hi"}]}],
    ],
)
def test_unknown_roles_and_untyped_parts_are_refused(hgw, messages):
    with pytest.raises(openai.BadRequestError) as e:
        hgw.openai(KEY_A).chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert e.value.body["code"] == "invalid_request"


def test_anthropic_stream_must_be_a_boolean(hgw):
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "stream": "yes",
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, _, raw = request(hgw, "POST", "/v1/messages", body)
    assert status == 400 and json.loads(raw)["type"] == "error"


def test_head_healthz_and_405_on_known_paths(hgw):
    assert request(hgw, "HEAD", "/healthz")[0] == 200
    status, headers, raw = request(hgw, "GET", "/v1/chat/completions")
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"
    assert {k.lower(): v for k, v in headers.items()}["allow"] == "POST"
    assert request(hgw, "GET", "/v1/nothing-here")[0] == 404


def test_max_tokens_above_the_keys_tpm_is_a_400_not_a_429(hgw):
    with pytest.raises(openai.BadRequestError) as e:
        chat(hgw.openai(KEY_TPM), "hi", max_tokens=5000)
    assert e.value.body["code"] == "invalid_request" and e.value.body["param"] == "max_tokens"
    assert chat(hgw.openai(KEY_TPM), "hi", max_tokens=50).http_response.status_code == 200


def test_check_config_refuses_short_keys(tmp_path, simulator):
    import subprocess
    import sys

    import yaml

    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["keys"] = [{"key": "x", "tenant": "t"}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True
    )
    assert out.returncode != 0 and "keys[0].key" in (out.stdout + out.stderr)
