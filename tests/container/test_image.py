"""The container image, built from this checkout by ``scripts/image.sh`` (podman from Debian, a Debian base made
locally with mmdebstrap, the wheel built on the host by maturin) and run with ``--network=host`` against the
simulator on the host: it answers a chat call through the official SDK, runs as a non-root user on a read-only
root filesystem, passes its healthcheck, writes its records to the volume, never prints the provider key, and
exits 0 on SIGTERM. Config once from the environment (the image's default config), once from a mounted file.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KEY_A, ROOT, Sim, free_port

pytestmark = pytest.mark.container

# one tag per checkout: test runs of several checkouts on one machine never run each other's image
IMAGE = "localhost/ai-gateway:test-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
PROVIDER_KEY = "sk-sim-provider-secret-7f3a9c"  # must never leave the gateway


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
    return subprocess.run(["podman", *args], env=env, check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def image() -> str:
    t0 = time.monotonic()
    # the fast cargo profile `make test-setup` already built (make image builds the release profile)
    env = {**os.environ, "GATEWAY_PROFILE": "fast"}
    out = subprocess.run(
        ["bash", "scripts/image.sh", IMAGE], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    print(f"\n{out.stdout.strip()}\nimage build wall time: {time.monotonic() - t0:.0f} s")
    return IMAGE


def run(image: str, data: Path, env: dict[str, str], *extra: str) -> str:
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o777)  # the image's user (uid 10001) writes the records here
    args = ["run", "-d", "--network=host", "--read-only", "-v", f"{data}:/var/lib/gateway"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return podman(*args, *extra, image).stdout.strip()


def wait_ready(ctr: str, url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = podman("inspect", ctr, "--format", "{{.State.Status}}").stdout.strip()
        if state != "running":
            raise AssertionError(f"the container stopped ({state}):\n{podman('logs', ctr).stderr}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"not ready in {timeout_s}s:\n{podman('logs', ctr).stderr}")


def records(db: Path) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT request_id, body FROM records").fetchall()
    finally:
        conn.close()


@pytest.fixture
def containers() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for ctr in made:
        podman("rm", "-f", "-v", ctr, check=False)


def test_image_serves_from_env_config(
    image: str, simulator: Sim, tmp_path: Path, containers: list[str]
) -> None:
    import openai

    port = free_port()
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "1",
        "GATEWAY_KEY": KEY_A,
        "OPENAI_API_BASE": simulator.url + "/v1",
        "OPENAI_API_KEY": PROVIDER_KEY,
    }
    ctr = run(image, tmp_path / "data", env)
    containers.append(ctr)
    url = f"http://127.0.0.1:{port}"
    wait_ready(ctr, url)

    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY_A, max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from the container"}]
    )
    assert resp.parse().choices[0].message.content
    assert resp.headers["x-gateway-provider"] == "openai"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()

    assert podman("exec", ctr, "id", "-u").stdout.strip() == "10001"
    assert podman("healthcheck", "run", ctr, check=False).returncode == 0
    assert podman("exec", ctr, "touch", "/opt/gateway/x", check=False).returncode != 0  # read-only root

    podman("stop", "-t", "30", ctr)
    assert podman("inspect", ctr, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
    rows = records(tmp_path / "data" / "gateway.db")
    assert len(rows) >= 2  # the chat call and the rejected one
    logs = podman("logs", ctr)
    everything = logs.stdout + logs.stderr + "".join(bytes(body).decode() for _, body in rows)
    assert PROVIDER_KEY not in everything


def test_image_serves_a_mounted_config_file(
    image: str, simulator: Sim, tmp_path: Path, containers: list[str]
) -> None:
    import openai

    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "store": {"sqlite_path": "/var/lib/gateway/gateway.db"},
        "keys": [{"key": KEY_A, "tenant": "t"}],
        "models": {
            "house-model": {
                "deployments": [
                    {"id": "sim", "model": "gpt-4o-mini", "api_base": simulator.url + "/v1", "api_key": "k"}
                ]
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o644)
    ctr = run(image, tmp_path / "data", {}, "-v", f"{path}:/etc/gateway/config.yaml:ro")
    containers.append(ctr)
    url = f"http://127.0.0.1:{port}"
    wait_ready(ctr, url)
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY_A, max_retries=0)
    out = client.chat.completions.create(model="house-model", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content
    podman("stop", "-t", "30", ctr)
    assert podman("inspect", ctr, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
