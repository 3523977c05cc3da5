"""A hung Redis (the process stopped, its socket still accepting) costs a request at most about one state timeout
(0.25 s), however many Redis calls the request's stages make (issue 11, defect 13)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import KEY_A, base_config, free_port, start_redis

STATE_TIMEOUT_S = 0.25
# Generous: one timeout, plus the simulator and a loaded 2-core box. Before the fix a request paid one socket
# timeout per round trip and per retry (clock read, script, retry: 0.5 s steps up to 2 s).
BOUND_S = 3 * STATE_TIMEOUT_S


def test_a_hung_redis_costs_a_request_at_most_one_timeout(simulator, start_gateway, tmp_path):
    port = free_port()
    rd = start_redis(port)
    cfg = base_config(simulator.url, tmp_path / "g.db")
    cfg["state"] = {"redis_url": f"redis://127.0.0.1:{port}/0", "on_redis_failure": "fail_open"}
    cfg["stages"] = {
        "limits": {"enabled": True, "per_tenant": {"rpm": 1_000_000}, "per_key": {"tpm": 100_000_000}},
        "budget": {"enabled": True, "tenants": {"tenant-a": {"usd": 1000.0, "period": "lifetime"}}},
    }
    gw = start_gateway(cfg)
    client = gw.openai(KEY_A, timeout=30)

    def ask(_: Any) -> tuple[int, float]:
        t0 = time.monotonic()
        r = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        return r.http_response.status_code, time.monotonic() - t0

    try:
        for _ in range(5):
            ask(None)  # warm: connections pooled, clock offset measured
        rd.send_signal(signal.SIGSTOP)
        results = []
        for _ in range(3):  # waves: in flight when the hang starts, during it, at each probe of it
            with ThreadPoolExecutor(8) as pool:
                results += list(pool.map(ask, range(16)))
            time.sleep(0.6)  # past the probe interval: the next wave includes a probe
        results += [ask(None) for _ in range(10)]
    finally:
        rd.send_signal(signal.SIGCONT)
        rd.send_signal(signal.SIGKILL)
        rd.wait()
    worst = max(d for _, d in results)
    print(f"\nhung redis: {len(results)} requests, worst {worst:.3f}s")
    assert all(s == 200 for s, _ in results)  # fail_open: answered from the in-process state
    assert worst < BOUND_S, sorted(round(d, 3) for _, d in results)[-10:]
