"""The admin API: keys, budgets set at run time, spend, and single-use cost approvals."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, base_config

ADMIN = "gw-admin-key-for-tests-000000000000000000"


def admin(gw: Any, method: str, path: str, body: Any = None, key: str = ADMIN) -> tuple[int, Any]:
    return call(
        gw.url, key, method, path, body
    )  # the CLI's HTTP client: plain urllib, nothing of the gateway


@pytest.fixture(scope="module")
def agw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["admin"] = {"key": ADMIN}
    cfg["models"]["metered"] = {
        "deployments": [
            {
                "id": "metered",
                "model": "metered",
                "api_base": simulator.url + "/v1",
                "api_key": "k",
                "price": {"input": 0.0, "output": 1250.0},
            }
        ]
    }
    cfg["stages"] = {"budget": {"enabled": True, "default_output_tokens": 20}}
    return start_gateway(cfg)


def test_admin_needs_the_admin_key(agw):
    status, body = admin(agw, "GET", "/admin/keys", key=KEY_A)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_keys_create_list_revoke(agw):
    status, created = admin(
        agw, "POST", "/admin/keys", {"tenant": "acme", "name": "svc", "models": ["gpt-4o-mini"]}
    )
    assert status == 201 and created["key"].startswith("gw-")
    client = agw.openai(created["key"])
    assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    status, listed = admin(agw, "GET", "/admin/keys?tenant=acme")
    assert [k["key_id"] for k in listed["data"]] == [created["key_id"]] and created["key"] not in json.dumps(
        listed
    )
    assert admin(agw, "DELETE", f"/admin/keys/{created['key_id']}")[0] == 200
    assert admin(agw, "DELETE", f"/admin/keys/{created['key_id']}")[0] == 404


def test_budget_set_at_run_time_is_enforced_and_spend_is_readable(agw):
    status, _ = admin(agw, "PUT", "/admin/budgets/team/team-1", {"usd": 0.10, "period": "day"})
    assert status == 200
    time.sleep(2.2)  # workers re-read run-time budgets every 2 s
    client = agw.openai(KEY_A)  # tenant-a, team-1
    ok = 0
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(10):
            client.chat.completions.create(
                model="metered", max_tokens=20, messages=[{"role": "user", "content": "x"}]
            )
            ok += 1
    assert ok == 4 and e.value.code == "budget_exceeded" and "team 'team-1'" in e.value.message
    status, spend = admin(agw, "GET", "/admin/spend?scope=team&id=team-1")
    assert status == 200 and spend["limit_usd"] == 0.10
    assert spend["spent_usd"] == pytest.approx(0.10) and spend["remaining_usd"] == pytest.approx(0.0)


def test_expensive_request_needs_a_single_use_approval(agw):
    status, _ = admin(agw, "PUT", "/admin/budgets/tenant/tenant-b", {"usd": 100, "max_request_usd": 0.05})
    assert status == 200
    time.sleep(2.2)
    client = agw.openai(agw.keys["b"])
    big = {
        "model": "metered",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
    }  # up to $0.125
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**big)
    assert e.value.status_code == 402 and e.value.code == "approval_required"
    assert "0.1250" in e.value.message and "POST /admin/approvals" in e.value.message
    key_id = e.value.body["details"]["key_id"] if "details" in e.value.body else "cfg_b"
    status, appr = admin(agw, "POST", "/admin/approvals", {"key_id": key_id, "max_usd": 0.13})
    assert status == 201
    hdr = {"x-gateway-approval": appr["token"]}
    raw = client.chat.completions.with_raw_response.create(**big, extra_headers=hdr)
    assert agw.record(raw.headers["x-gateway-request-id"])["flags"]["cost_approved"] == pytest.approx(0.125)
    with pytest.raises(openai.APIStatusError) as e:  # single use
        client.chat.completions.create(**big, extra_headers=hdr)
    assert e.value.code == "approval_required" and "unknown, used, expired" in e.value.message
    small = client.chat.completions.create(
        model="metered", max_tokens=20, messages=[{"role": "user", "content": "x"}]
    )
    assert small.choices  # under the ceiling: no approval needed


def test_cli_wraps_the_admin_api(agw):
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "admin", "--url", agw.url, "--key", ADMIN, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = cli("keys", "create", "--tenant", "cli-co", "--name", "cli-svc")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert agw.openai(key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    assert cli("budget", "set", "tenant", "cli-co", "--usd", "3").returncode == 0
    time.sleep(2.2)
    spend = json.loads(cli("spend", "tenant", "cli-co").stdout)
    assert spend["limit_usd"] == 3.0 and spend["remaining_usd"] <= 3.0
    assert cli("keys", "revoke", "nope").returncode == 1
