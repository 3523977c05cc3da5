"""A real Prometheus (Debian's package) scraping a 2-worker gateway under traffic: one scrape sums every worker,
exactly, and histogram_quantile answers for the gateway's overhead and the upstream time."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import yaml

from gateway.observability.metrics import OVERHEAD_S
from tests.conftest import KEY_A, KEY_B, base_config, free_port, stop, wait_http

pytestmark = pytest.mark.heavy


def start_prometheus(tmp: Any, target: str) -> tuple[subprocess.Popen[Any], str]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed; run scripts/setup.sh --test (make test does)")
    port = free_port()
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", proc)
    return proc, url


def promql(url: str, q: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": q, **({"time": str(at)} if at else {})}
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(url: str, q: str, at: float | None = None) -> float | None:
    res = promql(url, q, at)
    return float(res[0]["value"][1]) if res else None


@pytest.fixture(scope="module")
def stack(simulator, start_gateway, tmp_path_factory) -> Iterator[tuple[Any, str]]:
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    gw = start_gateway(cfg, workers=2)
    proc, url = start_prometheus(tmp_path_factory.mktemp("prom"), gw.url.removeprefix("http://"))
    yield gw, url
    stop(proc)


def wait_for(url: str, q: str, want: float, timeout_s: float = 30) -> float | None:
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = scalar(url, q)
        if got == want:
            return got
        time.sleep(0.5)
    return got


def test_one_scrape_sums_every_worker_exactly(stack):
    gw, prom = stack
    a, b = gw.openai(KEY_A), gw.openai(KEY_B)
    a.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "warm up"}])
    assert wait_for(prom, 'sum(gateway_requests_total{endpoint="chat"})', 1) == 1
    time.sleep(2)  # a few scrapes with the series at 1 before the traffic starts
    before = time.time()

    def one(i: int) -> tuple[int, str]:
        client, tenant = (a, "tenant-a") if i % 2 else (b, "tenant-b")
        if i % 10 == 0:  # a model that does not exist: a 404 counted under its error code
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
            return 404, tenant
        model = "gpt-4o" if i % 3 else "gpt-4o-mini"
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"hello {i}"}])
        return 200, tenant

    n = 200
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(n)))
    missing = sum(1 for s, _ in results if s == 404)
    ok_a = 1 + sum(1 for s, t in results if s == 200 and t == "tenant-a")  # + the warm-up
    ok_b = sum(1 for s, t in results if s == 200 and t == "tenant-b")
    gw.records(wait_for=n + 1)
    total = wait_for(prom, 'sum(gateway_requests_total{endpoint="chat"})', n + 1)
    assert total == n + 1  # every worker's requests, in one scrape of one target
    time.sleep(2)
    now = time.time()
    window = f"{math.ceil(now - before) + 1}s"
    # the counter's growth over the traffic, without the extrapolation increase() applies at window edges
    grown = scalar(
        prom,
        f'sum(gateway_requests_total{{endpoint="chat"}}) - sum(gateway_requests_total{{endpoint="chat"}} offset {window})',
    )
    assert grown == n
    assert (
        scalar(prom, 'sum(gateway_requests_total{endpoint="chat",status="404",error_code="model_not_found"})')
        == missing
    )
    per_tenant = {
        r["metric"]["tenant"]: float(r["value"][1])
        for r in promql(prom, 'sum by (tenant) (gateway_requests_total{endpoint="chat",status="200"})')
    }
    assert per_tenant == {"tenant-a": ok_a, "tenant-b": ok_b}
    # rate() over the traffic window, times the window, comes back to the count (up to edge extrapolation)
    rate = scalar(prom, f'sum(rate(gateway_requests_total{{endpoint="chat"}}[{window}]))')
    assert rate is not None and rate > 0
    assert scalar(prom, "sum(gateway_workers)") == 2  # both workers publish into the one scrape
    ops = scalar(prom, 'sum(gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat"})')
    assert ops == n + 1
    tokens = promql(prom, "sum by (gen_ai_token_type) (gen_ai_client_token_usage_count)")
    assert {r["metric"]["gen_ai_token_type"] for r in tokens} == {"input", "output"}


def test_histogram_quantile_answers_for_overhead_and_upstream(stack):
    gw, prom = stack
    records = [r for r in gw.records() if r["endpoint"] == "chat" and r["status"] == 200]
    assert records
    q_over = scalar(prom, "histogram_quantile(0.99, sum by (le) (rate(gateway_overhead_seconds_bucket[5m])))")
    q_up = scalar(
        prom, "histogram_quantile(0.99, sum by (le) (rate(gateway_upstream_duration_seconds_bucket[5m])))"
    )
    q_op = scalar(
        prom,
        "histogram_quantile(0.5, sum by (le, gen_ai_request_model) "
        '(rate(gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="gpt-4o"}[5m])))',
    )
    assert q_over is not None and q_up is not None and q_op is not None
    assert q_over > 0 and q_up > 0 and q_op > 0
    # the estimate lies in the bucket (or its neighbour) that holds the records' own p99 of the overhead
    over = sorted(r["overhead_ms"] / 1000 for r in gw.records() if r["endpoint"] == "chat")
    true_p99 = over[min(len(over) - 1, int(0.99 * len(over)))]
    bounds = (0.0, *OVERHEAD_S, math.inf)
    i = next(i for i in range(1, len(bounds)) if true_p99 <= bounds[i])
    assert bounds[max(0, i - 2)] <= q_over <= bounds[min(len(bounds) - 1, i + 1)]


def test_the_grafana_dashboard_queries_run_on_these_metrics(stack):
    """deploy/grafana/ai-gateway.json: every query parses in Prometheus and names only metrics the gateway
    exports; those fed by the traffic above answer with data."""
    import re
    from pathlib import Path

    from gateway.observability.metrics import SPECS

    _gw, prom = stack
    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/ai-gateway.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = set(SPECS) | {f"{n}_total" for n in SPECS} | {f"{n}_bucket" for n in SPECS}
    answered = 0
    for e in exprs:
        used = {
            m
            for m in re.findall(r"\b(gateway_\w+|gen_ai_\w+)\b", e)
            if not m.startswith("gen_ai_request")
            and m
            not in (
                "gen_ai_token_type",
                "gen_ai_provider_name",
                "gen_ai_response_model",
                "gen_ai_operation_name",
            )
        }
        assert used <= names, (e, used - names)
        answered += bool(promql(prom, e.replace("$__rate_interval", "2m")))
    assert answered >= len(exprs) // 2
