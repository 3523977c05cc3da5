"""Metrics folded from request records: names, labels, bounded cardinality, and the sum over workers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.config import MetricsConfig
from gateway.context import Record
from gateway.observability.metrics import GatewayMetrics, bucket_quantile, reject_reason, route_reason


def rec(**kw) -> Record:
    base = dict(
        request_id="r",
        ts=1.0,
        endpoint="chat",
        dialect="openai",
        status=200,
        tenant="acme",
        team="t1",
        key_id="key_1",
        model_requested="gpt-4o",
        model_served="4o-a",
        upstream_model="gpt-4o-2024-08-06",
        provider="openai",
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.001,
        latency_ms=120.0,
        upstream_ms=119.0,
        overhead_ms=1.0,
        attempts=1,
        route="weighted",
    )
    base.update(kw)
    return Record(**base)


def families(m: GatewayMetrics) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        out[fam.name] = fam.samples
    return out


def test_two_workers_sum_exactly(tmp_path):
    a, b = (GatewayMetrics(MetricsConfig(), tmp_path) for _ in range(2))
    b.worker = "other-worker"
    for _ in range(7):
        a.observe(rec())
    for _ in range(5):
        b.observe(rec(status=429, error_code="rate_limited", model_served=None, attempts=0, cost_usd=0))
    b.publish()
    fams = families(a)  # a scrape on worker a: its own tables from memory, b's from its file
    reqs = {(s.labels["status"], s.labels["error_code"]): s.value for s in fams["gateway_requests"]}
    assert reqs == {("200", ""): 7.0, ("429", "rate_limited"): 5.0}
    rejects = [s for s in fams["gateway_rejections"] if s.name.endswith("_total")]
    assert [(s.labels["reason"], s.value) for s in rejects] == [("rate_limit", 5.0)]
    dur = [s for s in fams["gen_ai_client_operation_duration_seconds"] if s.name.endswith("_count")]
    assert sum(s.value for s in dur) == 12
    assert {s.labels["gen_ai_provider_name"] for s in dur} >= {"openai"}
    tokens = [s for s in fams["gen_ai_client_token_usage"] if s.name.endswith("_sum")]
    assert {s.labels["gen_ai_token_type"]: s.value for s in tokens} == {"input": 70.0, "output": 35.0}
    cost = {
        (s.labels["scope"], s.labels["id"]): s.value
        for s in fams["gateway_cost_usd"]
        if s.name.endswith("_total")
    }
    assert cost[("tenant", "acme")] == cost[("all", "")] == cost[("team", "t1")]
    assert abs(cost[("all", "")] - 0.007) < 1e-12


def test_label_values_are_capped(tmp_path):
    m = GatewayMetrics(MetricsConfig(max_label_values=3, label_scopes=["tenant"]), None)
    for i in range(10):
        m.observe(rec(tenant=f"t{i}", team=f"team{i}"))
    by_tenant = m.read().by("gateway_requests", "tenant")
    assert by_tenant == {"t0": 1, "t1": 1, "t2": 1, "other": 7}
    # scopes not configured as labels do not appear at all
    assert set(m.read().by("gateway_cost_usd", "scope")) == {"tenant", "all"}


def test_failovers_and_upstream_errors_from_the_route():
    m = GatewayMetrics(MetricsConfig(), None)
    m.observe(rec(model_served="4o-b", route="failover after 503 from 4o-a, timeout from 4o-c", attempts=3))
    r = m.read()
    assert r.by("gateway_upstream_errors", "status") == {"503": 1, "timeout": 1}
    assert r.by("gateway_failovers", "deployment") == {"4o-b": 1}
    assert r.by("gateway_routing_decisions", "reason") == {"failover": 1}


def test_pii_queue_and_overhead_quantile():
    m = GatewayMetrics(MetricsConfig(), None)
    for ms in (0.2, 0.4, 0.6, 0.8, 3.0):
        m.observe(rec(overhead_ms=ms, flags={"pii": {"EMAIL": 2}, "queued_ms": 5.0}))
    r = m.read()
    assert r.by("gateway_pii_detections", "entity") == {"EMAIL": 10}
    assert 0.0005 <= r.quantile("gateway_overhead_seconds", 0.5) <= 0.00075  # the median, 0.6 ms
    assert r.quantile("gateway_overhead_seconds", 0.99) > 0.002


def test_reasons():
    assert reject_reason("budget_exceeded") == "budget"
    assert reject_reason("upstream_unavailable") is None
    assert route_reason("fallback to gpt-4o after 503 from x") == "fallback"
    assert route_reason("least_latency") == "least_latency"
    assert bucket_quantile((1.0, 2.0), [0, 0, 0], 0.5) is None
