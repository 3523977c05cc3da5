"""A real Prometheus (Debian's package) scraping a 2-worker gateway under traffic: one scrape sums every worker,
exactly, and histogram_quantile answers for the gateway's overhead and the upstream time."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
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
    cfg["observability"] = {"metrics": {"port": free_port()}}
    gw = start_gateway(cfg, workers=2)
    gw.metrics_port = cfg["observability"]["metrics"]["port"]
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


def scrape_times(url: str, q: str, at: float, span_s: int = 120) -> list[int]:
    """The timestamps (ms) of the scrapes of the series ``q`` selects over the last ``span_s`` seconds."""
    res = promql(url, f"{q}[{span_s}s]", at)
    return sorted({round(float(t) * 1000) for r in res for t, _v in r["values"]})


def exact_window(times: list[int], before_ms: int, after_ms: int) -> tuple[int, int]:
    """Two scrape timestamps, one at or before ``before_ms`` and one at or after ``after_ms``, ``last - first``
    apart: a power of two seconds if the scrapes allow it (dividing by it is exact in floating point)."""
    firsts = [t for t in times if t <= before_ms]
    lasts = [t for t in times if t >= after_ms]
    assert firsts and lasts, (before_ms, after_ms, times)
    have = set(lasts)
    for w in (2**k * 1000 for k in range(1, 8)):
        for f in reversed(firsts):
            if f + w in have:
                return f, f + w
    return firsts[-1], lasts[0]


def test_one_scrape_sums_every_worker_exactly(stack):
    """PromQL ``sum(rate(...))`` over a window whose edges are scrapes (so Prometheus extrapolates nothing):
    times the window, it is the number of requests sent, exactly."""
    gw, prom = stack
    a, b = gw.openai(KEY_A), gw.openai(KEY_B)
    # one request of every kind the traffic below sends, so every series it grows exists before it starts
    # (rate() cannot see the first value of a series that appears mid-window)
    for client in (a, b):
        for model in ("gpt-4o", "gpt-4o-mini"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "warm up"}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    warm = 6
    sel = 'gateway_requests_total{endpoint="chat"}'
    assert wait_for(prom, f"sum({sel})", warm) == warm
    time.sleep(2.5)  # a few scrapes with every series at its warm-up value before the traffic starts
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
    missing = 2 + sum(1 for s, _ in results if s == 404)
    ok_a = 2 + sum(1 for s, t in results if s == 200 and t == "tenant-a")  # + the warm-up
    ok_b = 2 + sum(1 for s, t in results if s == 200 and t == "tenant-b")
    gw.records(wait_for=n + warm)
    total = wait_for(prom, f"sum({sel})", n + warm)
    assert total == n + warm  # every worker's requests, in one scrape of one target
    done = time.time()
    time.sleep(2.5)  # a few scrapes at the final values
    now = time.time()
    # the window's edges: a scrape before the first request of the traffic and one after the total was seen
    first, last = exact_window(scrape_times(prom, sel, now), int(before * 1000) - 1, int(done * 1000) + 1)
    w_ms = last - first
    at = last / 1000
    assert scalar(prom, f"sum({sel})", first / 1000) == warm and scalar(prom, f"sum({sel})", at) == n + warm
    rate = scalar(prom, f"sum(rate({sel}[{w_ms}ms]))", at)
    assert rate is not None
    print(
        f"\nsum(rate({sel}[{w_ms}ms])) at {at} = {rate!r}; x {w_ms / 1000} s = {rate * w_ms / 1000!r}; sent {n}"
    )
    if w_ms % 1000 == 0 and (w_ms // 1000).bit_count() == 1:
        assert rate * (w_ms / 1000) == n  # exactly: the window is a power of two seconds
    else:  # a window the scrape timestamps allowed: only the division's rounding remains
        assert abs(rate * (w_ms / 1000) - n) <= 1e-9 * n
    assert scalar(prom, f"sum(increase({sel}[{w_ms}ms]))", at) == n  # no extrapolation at either edge
    assert (
        scalar(prom, 'sum(gateway_requests_total{endpoint="chat",status="404",error_code="model_not_found"})')
        == missing
    )
    per_tenant = {
        r["metric"]["tenant"]: float(r["value"][1])
        for r in promql(prom, 'sum by (tenant) (gateway_requests_total{endpoint="chat",status="200"})')
    }
    assert per_tenant == {"tenant-a": ok_a, "tenant-b": ok_b}
    assert scalar(prom, "sum(gateway_workers)") == 2  # both workers publish into the one scrape
    ops = scalar(prom, 'sum(gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat"})')
    assert ops == n + warm
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


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        tuple(sorted(x.labels.items())): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
        if x.name == name
    }


def test_the_metrics_port_and_the_category_label(stack):
    """``observability.metrics.port`` serves the same sums as ``/metrics``; a request's category (the record's,
    else its first tag) labels ``gateway_request_duration_seconds``."""
    gw, _prom = stack
    client = gw.openai(KEY_A)
    before = len(gw.records())
    for i in range(4):  # three by their category, one by its first tag
        headers = {"x-gateway-category": "summarize"} if i < 3 else {"x-gateway-tags": "translate,team-x"}
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"summarize {i}"}],
            extra_headers=headers,
        )
    gw.records(wait_for=before + 4)
    port_url = f"http://127.0.0.1:{gw.metrics_port}/metrics"

    def both() -> tuple[str, str]:
        with urllib.request.urlopen(port_url, timeout=10) as r:
            side = r.read().decode()
        with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
            main = r.read().decode()
        return side, main

    deadline = time.monotonic() + 15
    while True:
        side, main = both()
        total = sum(samples(side, "gateway_requests_total").values())
        if total == before + 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert total == before + 4 == sum(samples(main, "gateway_requests_total").values())
    counts = samples(side, "gateway_request_duration_seconds_count")
    assert counts[(("category", "summarize"),)] == 3 and counts[(("category", "translate"),)] == 1
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(port_url.replace("/metrics", "/dashboard"), timeout=10)
    assert e.value.code == 404
