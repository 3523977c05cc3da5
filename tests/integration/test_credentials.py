"""Provider credentials from the environment, a file and a command; several keys per deployment used in turn;
rotation by reload without a restart; and none of them ever in what the gateway prints, records or answers.

The simulator is started with ``api_keys`` so it accepts only the keys the test hands out, and it remembers the
headers of every request (``/_sim/requests``), which shows which key each call carried.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import KEY_A, PY, ROOT, Gateway, Sim, free_port, stop, wait_http

ENV_KEY = "sk-env-0d1c7e55aa01"
FILE_KEYS = ["sk-file-one-9b2e41c3", "sk-file-two-57f0aa8d"]
CMD_KEY = "sk-cmd-3c9d0e7f12ab"
ROTATED = "sk-rotated-e4b7a90c33"
WRONG = "sk-wrong-8a8a8a8a8a8a"
SECRETS = [ENV_KEY, *FILE_KEYS, CMD_KEY, ROTATED, WRONG]
ADMIN = "gw-admin-credentials-0000000000000000"


@pytest.fixture
def strict_sim(tmp_path: Path) -> Any:
    profile = tmp_path / "sim.yaml"
    profile.write_text(yaml.safe_dump({"api_keys": [ENV_KEY, *FILE_KEYS, CMD_KEY, ROTATED]}))
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "simulate", "--port", str(port), "--profile", str(profile)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    sim = Sim(f"http://127.0.0.1:{port}", proc)
    wait_http(sim.url + "/healthz", proc)
    yield sim
    stop(proc)


def group(sim: Sim, name: str, **cred: Any) -> dict[str, Any]:
    return {"deployments": [{"id": name, "model": name, "api_base": sim.url + "/v1", **cred}]}


def keys_seen(sim: Sim, model: str, n: int) -> list[str]:
    reqs = sim.get(f"/_sim/requests?model={model}&limit={n}")["requests"]
    return [r["headers"]["authorization"].removeprefix("Bearer ") for r in reqs]


def test_keys_from_env_file_and_command_in_turn_rotated_by_reload_and_never_shown(
    strict_sim: Sim, tmp_path: Path
) -> None:
    key_file = tmp_path / "secrets" / "openai_api_key"
    key_file.parent.mkdir()
    key_file.write_text("\n".join(FILE_KEYS) + "\n")
    cmd_file = tmp_path / "vault-value"
    cmd_file.write_text(CMD_KEY + "\n")
    db = tmp_path / "gw.db"
    cfg = {
        "server": {"host": "127.0.0.1", "workers": 1},
        "store": {"sqlite_path": str(db), "record_flush_ms": 50},
        "admin": {"key": ADMIN},
        "keys": [{"key": KEY_A, "name": "a", "tenant": "t"}],
        "models": {
            "from-env": group(strict_sim, "from-env", api_key="${SIM_PROVIDER_KEY}"),
            "from-file": group(strict_sim, "from-file", api_key_file=str(key_file)),
            "from-cmd": group(strict_sim, "from-cmd", api_key_cmd=f"cat {cmd_file}"),
            "wrong-key": group(strict_sim, "wrong-key", api_key=WRONG),
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "gateway.log"
    port = free_port()
    env = {**os.environ, "SIM_PROVIDER_KEY": ENV_KEY}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gw = Gateway(f"http://127.0.0.1:{port}", proc, path, db)
    shown: list[str] = []  # everything a caller or an operator gets to see
    try:
        wait_http(gw.url + "/readyz", proc)
        client = gw.openai(KEY_A)

        def ask(model: str, stream: bool = False) -> None:
            if stream:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], stream=True
                )
                shown.append(str(raw.headers) + "".join(str(c) for c in raw.parse()))
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
                shown.append(str(raw.headers) + raw.text)

        for model in ("from-env", "from-cmd"):
            ask(model)
            ask(model, stream=True)
        for _ in range(4):
            ask("from-file")
        assert keys_seen(strict_sim, "from-env", 2) == [ENV_KEY, ENV_KEY]
        assert keys_seen(strict_sim, "from-cmd", 2) == [CMD_KEY, CMD_KEY]
        assert keys_seen(strict_sim, "from-file", 4) == FILE_KEYS * 2  # in turn

        with pytest.raises(openai.APIStatusError) as bad:
            ask("wrong-key")
        assert bad.value.status_code == 502
        shown.append(str(bad.value.response.headers) + bad.value.response.text)
        assert "credentials" in bad.value.message

        # rotation: the secret changes, a reload picks it up, no restart
        key_file.write_text(ROTATED + "\n")
        status, body = admin(gw.url, "/admin/reload")
        assert status == 202, body
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ask("from-file")
            if keys_seen(strict_sim, "from-file", 1) == [ROTATED]:
                break
            time.sleep(0.3)
        assert keys_seen(strict_sim, "from-file", 1) == [ROTATED]
        pid_before = proc.pid

        # a command that fails: the reload is refused by field path, the old keys keep working
        broken = {**cfg}
        broken["models"] = {**cfg["models"], "from-cmd": group(strict_sim, "from-cmd", api_key_cmd="false")}
        path.write_text(yaml.safe_dump(broken))
        status, body = admin(gw.url, "/admin/reload")
        assert status == 400
        assert (
            "$.models.from-cmd.deployments[0].api_key_cmd: the command exited with status 1"
            in (body["error"]["message"])
        )
        shown.append(str(body))
        proc.send_signal(signal.SIGHUP)
        ask("from-cmd")
        assert proc.pid == pid_before and proc.poll() is None

        check = subprocess.run(
            [PY, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True, env=env
        )
        shown.append(check.stdout + check.stderr)
        path.write_text(yaml.safe_dump(cfg))
        check = subprocess.run(
            [PY, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True, env=env
        )
        assert check.returncode == 0, check.stderr
        shown.append(check.stdout + check.stderr)
        records = gw.records(wait_for=12)
    finally:
        stop(proc)
    shown.append(log.read_text())
    shown.extend(str(r) for r in records)
    assert len(records) >= 12
    everything = "\n".join(shown)
    leaked = [s for s in SECRETS if s in everything]
    assert leaked == [], leaked


def admin(url: str, path: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    import orjson

    req = urllib.request.Request(
        url + path, data=b"", method="POST", headers={"authorization": f"Bearer {ADMIN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())
