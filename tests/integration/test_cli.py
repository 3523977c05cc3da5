"""The ``gateway`` command: keys created by the CLI work against a running gateway, revoked ones stop working;
``check-config`` names the path of a bad field."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import openai
import pytest
import yaml

from tests.conftest import base_config


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_keys_create_use_list_revoke(simulator, start_gateway, tmp_path):
    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["server"]["key_cache_ttl_s"] = 0.2
    gw = start_gateway(cfg)
    out = gateway_cli(
        "keys",
        "--config",
        str(gw.config_path),
        "create",
        "--tenant",
        "acme",
        "--team",
        "search",
        "--name",
        "svc",
        "--models",
        "gpt-4o-mini",
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    key = created["key"]
    assert key.startswith("gw-") and created["tenant"] == "acme"

    client = gw.openai(key)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    rec = gw.record(raw.headers["x-gateway-request-id"])
    assert rec["tenant"] == "acme" and rec["team"] == "search" and rec["key_id"] == created["key_id"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    listed = json.loads(gateway_cli("keys", "--config", str(gw.config_path), "list").stdout)
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert key not in json.dumps(listed)  # the plain key is shown once, never again
    import sqlite3

    stored = sqlite3.connect(tmp_path / "g.db").execute("SELECT key_hash FROM keys").fetchone()[0]
    assert key not in stored and len(stored) == 64  # only the hash is stored

    assert gateway_cli("keys", "--config", str(gw.config_path), "revoke", created["key_id"]).returncode == 0
    time.sleep(0.3)  # past the workers' key cache TTL
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_check_config_names_the_bad_field(tmp_path):
    good = base_config("http://127.0.0.1:9", tmp_path / "g.db")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(good))
    ok = gateway_cli("check-config", str(path))
    assert ok.returncode == 0 and "model groups" in ok.stdout

    bad = base_config("http://127.0.0.1:9", tmp_path / "g.db")
    bad["models"]["gpt-4o"]["deployments"][0]["weight"] = "heavy"
    path.write_text(yaml.safe_dump(bad))
    out = gateway_cli("check-config", str(path))
    assert out.returncode == 1 and "$.models.gpt-4o.deployments[0].weight" in out.stderr

    bad = base_config("http://127.0.0.1:9", tmp_path / "g.db")
    bad["models"]["gpt-4o"]["fallbacks"] = ["nope"]
    path.write_text(yaml.safe_dump(bad))
    out = gateway_cli("check-config", str(path))
    assert out.returncode == 1 and "$.models.gpt-4o.fallbacks[0]" in out.stderr and "nope" in out.stderr

    path.write_text(
        'models:\n  x:\n    deployments:\n      - {id: a, model: m, api_key: "${NOT_SET_ANYWHERE}"}\n'
    )
    out = gateway_cli("check-config", str(path))
    assert (
        out.returncode == 1
        and "NOT_SET_ANYWHERE" in out.stderr
        and "$.models.x.deployments[0].api_key" in out.stderr
    )
