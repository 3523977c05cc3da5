"""A rolling restart of one replica after the other, under load, behind HAProxy (Debian's, as in
deploy/compose.yaml: it polls /readyz and retries only failed connects): no request fails, every replica exits 0.

Each replica gets SIGTERM, turns /readyz 503 at once and keeps accepting for drain_grace_s, long enough for HAProxy
to take it out of rotation, then finishes what it has in flight and exits; a new process takes its port.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import KEY_A, PY, base_config, free_port, stop, wait_http

HAPROXY_CFG = """
global
  maxconn 1024
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  retry-on conn-failure empty-response
  option redispatch
frontend gateway
  bind 127.0.0.1:{port}
  default_backend gateways
backend gateways
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 300ms fall 1 rise 2 check
  server a 127.0.0.1:{a}
  server b 127.0.0.1:{b}
"""


def start_replica(cfg_path: Path, port: int, cwd: Path) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "serve", "--config", str(cfg_path), "--port", str(port)], cwd=cwd
    )
    wait_http(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


def test_rolling_restart_of_two_replicas_behind_haproxy_loses_no_request(
    simulator, redis_url, tmp_path
) -> None:
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.fail("haproxy is not installed; run scripts/setup.sh --test (make test does)")
    simulator.post("/_sim/models/rolling-slow", {"tokens_per_s": 40, "output_tokens": 40})
    cfg = base_config(simulator.url, tmp_path / "unused.db")
    cfg["server"].update(drain_grace_s=1.5, drain_timeout_s=30)
    cfg["state"] = {"redis_url": redis_url}
    cfg["models"]["rolling-slow"] = {
        "deployments": [
            {"id": "slow", "model": "rolling-slow", "api_base": simulator.url + "/v1", "api_key": "k"}
        ]
    }
    ports, paths = {}, {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        c = {**cfg, "store": {"sqlite_path": str(tmp_path / name / "gw.db"), "record_flush_ms": 50}}
        paths[name] = tmp_path / name / "config.yaml"
        paths[name].write_text(yaml.safe_dump(c))
        ports[name] = free_port()
    procs = {n: start_replica(paths[n], ports[n], tmp_path / n) for n in ("a", "b")}
    lb_port = free_port()
    (tmp_path / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=lb_port, a=ports["a"], b=ports["b"]))
    lb = subprocess.Popen([exe, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL)
    stop_load = threading.Event()
    ok, failures = [0], []

    def traffic(i: int) -> None:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{lb_port}/v1", api_key=KEY_A, max_retries=0, timeout=60
        )
        n = 0
        while not stop_load.is_set():
            n += 1
            try:
                if n % 2:
                    s = client.chat.completions.create(
                        model="rolling-slow", messages=[{"role": "user", "content": "s"}], stream=True
                    )
                    chunks = list(s)
                    assert chunks[-1].choices[0].finish_reason == "stop"
                else:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                    )
                ok[0] += 1
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

    exit_codes = []
    try:
        wait_http(f"http://127.0.0.1:{lb_port}/readyz", lb)
        time.sleep(1)  # both replicas up in HAProxy (rise 2 x 300 ms)
        threads = [threading.Thread(target=traffic, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(2)
        for name in ("a", "b"):
            procs[name].send_signal(signal.SIGTERM)
            exit_codes.append(procs[name].wait(60))
            procs[name] = start_replica(paths[name], ports[name], tmp_path / name)
            time.sleep(2)  # back in rotation before the next one goes
        time.sleep(1)
        stop_load.set()
        for t in threads:
            t.join(90)
    finally:
        stop_load.set()
        lb.terminate()
        lb.wait(10)
        for p in procs.values():
            stop(p)
    print(
        f"\nrolling restart behind HAProxy: {ok[0]} requests answered, {len(failures)} failed, exits {exit_codes}"
    )
    assert failures == []
    assert exit_codes == [0, 0]
    assert ok[0] > 50
