"""The tier-1 detector on a compressed clock: 30 minutes of steady jittered traffic raise nothing; each incident
raises one alert, fast, and a recovery notice when it ends."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from gateway.config import AlertsConfig
from gateway.observability.alerts import Detector

TENANTS = {"acme": ["key_a1", "key_a2"], "globex": ["key_g1"], "initech": ["key_i1", "key_i2"]}
AGENTS = {"acme": "planner", "globex": "summariser"}


def traffic(
    seconds: float,
    rng: random.Random,
    rps: float = 6.0,
    start: float = 1_000_000.0,
    twist: Callable[[float, dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Poisson arrivals over three tenants, lognormal token counts and latencies, a 0.5 % background of upstream
    errors (retried elsewhere), occasional PII, a few agents; ``twist`` may rewrite or add records."""
    t = start
    while t < start + seconds:
        t += rng.expovariate(rps)
        tenant = rng.choice(list(TENANTS))
        key = rng.choice(TENANTS[tenant])
        out_tokens = int(rng.lognormvariate(5, 0.6))
        r: dict[str, Any] = {
            "ts": t,
            "endpoint": "chat",
            "status": 200,
            "tenant": tenant,
            "key_id": key,
            "agent": AGENTS.get(tenant) if rng.random() < 0.5 else None,
            "model_served": rng.choice(["4o-a", "4o-b", "mini-a"]),
            "route": "weighted",
            "cost_usd": out_tokens * 10e-6,
            "overhead_ms": rng.lognormvariate(-0.5, 0.4),
            "flags": {},
        }
        if rng.random() < 0.005:
            r["route"] = f"failover after 503 from {rng.choice(['4o-a', '4o-b'])}"
        if rng.random() < 0.03:
            r["flags"] = {"pii": {"EMAIL_ADDRESS": 1}}
        yield from (twist(t - start, r) if twist else [r])


def replay(det: Detector, records: Iterator[dict[str, Any]], every_s: float = 5.0) -> list[Any]:
    events, next_eval = [], None
    for r in records:
        if next_eval is None:
            next_eval = r["ts"] + every_s
        while r["ts"] >= next_eval:
            events += det.evaluate(next_eval)
            next_eval += every_s
        det.add(r)
    for _ in range(40):  # let the clock run on after the traffic, so incidents can resolve
        events += det.evaluate(next_eval)
        next_eval += every_s
    return events


def test_thirty_minutes_of_steady_traffic_raise_no_tier1_alert():
    for seed in range(3):
        det = Detector(AlertsConfig())
        events = replay(det, traffic(1800, random.Random(seed)))
        assert [e for e in events if e.tier == 1] == [], [e.message for e in events]


def first_alert(events: list[Any], signal: str) -> Any:
    hits = [e for e in events if e.signal == signal and e.state == "firing"]
    assert hits, f"no {signal} alert in {[e.message for e in events]}"
    return hits[0]


def test_runaway_agent_pages_within_a_minute_once_and_recovers():
    start = 1_000_000.0
    runaway = (600, 780)  # 3 minutes of an agent loop spending 20x its usual rate

    def twist(t: float, r: dict[str, Any]) -> list[dict[str, Any]]:
        if runaway[0] <= t < runaway[1] and r["tenant"] == "acme" and r["agent"] == "planner":
            # the loop's requests: like the first, but each with its own upstream outcome (not 20 copies of a
            # failover it may have had)
            return [r] + [dict(r, ts=r["ts"] + i * 0.01, flags={}, route="weighted") for i in range(1, 20)]
        return [r]

    det = Detector(AlertsConfig())
    events = replay(det, traffic(1200, random.Random(7), start=start, twist=twist))
    a = first_alert(events, "cost_spike")
    assert a.subject in ("agent acme/planner", "tenant acme", "key key_a1", "key key_a2")
    assert a.started_at - (start + runaway[0]) <= 60
    fired = [e for e in events if e.state == "firing"]
    assert {e.signal for e in fired} == {"cost_spike"}
    assert len([e for e in fired if e.subject == "agent acme/planner"]) == 1  # one incident, one alert
    resolved = [e for e in events if e.state == "resolved" and e.subject == "agent acme/planner"]
    assert resolved and resolved[0].resolved_at >= start + runaway[1]


def test_provider_503s_and_rate_limit_bursts_and_pii_jump():
    start = 1_000_000.0

    def twist(t: float, r: dict[str, Any]) -> list[dict[str, Any]]:
        if 300 <= t < 420 and r["model_served"] == "4o-a":
            r = dict(r, model_served="4o-b", route="failover after 503 from 4o-a")
        if 500 <= t < 520 and r["tenant"] == "globex":
            r = dict(r, status=429, error_code="rate_limited", model_served=None, cost_usd=0)
        if 600 <= t < 700 and r["key_id"] == "key_i1":
            r = dict(r, flags={"pii": {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1}})
        return [r]

    det = Detector(AlertsConfig())
    events = replay(det, traffic(900, random.Random(3), start=start, twist=twist))
    errors = first_alert(events, "provider_errors")
    assert errors.subject == "4o-a" and errors.started_at - (start + 300) <= 30
    limits = first_alert(events, "rate_limit")
    assert limits.subject == "tenant globex" and limits.started_at - (start + 500) <= 15
    pii = first_alert(events, "pii_spike")
    assert pii.subject == "key key_i1" and pii.started_at - (start + 600) <= 30
    assert {e.signal for e in events if e.state == "firing"} == {"provider_errors", "rate_limit", "pii_spike"}


def test_a_dead_provider_behind_an_open_circuit_stays_alerted_until_it_answers():
    """The breaker opens after a few failures: the deployment then gets only a probe now and then, far fewer
    attempts than a window's minimum. The alert pages on the first failures and lasts until the provider answers."""
    start, dead = 1_000_000.0, (300, 600)
    state = {"failures": 0, "probe": 0.0}

    def twist(t: float, r: dict[str, Any]) -> list[dict[str, Any]]:
        if dead[0] <= t < dead[1] and r["model_served"] == "4o-a":
            if state["failures"] < 5 or t - state["probe"] >= 30:  # the breaker's threshold, then its probes
                state["failures"] += 1
                state["probe"] = t
                return [dict(r, model_served="4o-b", route="failover after 503 from 4o-a")]
            return [dict(r, model_served="4o-b")]  # the circuit is open: 4o-a is not even tried
        return [r]

    det = Detector(AlertsConfig())
    events = replay(det, traffic(900, random.Random(5), start=start, twist=twist))
    errors = [e for e in events if e.signal == "provider_errors" and e.subject == "4o-a"]
    assert [e.state for e in errors] == ["firing", "resolved"], [e.message for e in errors]
    assert errors[0].started_at - (start + dead[0]) <= 20
    assert errors[1].resolved_at >= start + dead[1]  # no recovery notice while the provider was still dead


def test_gateway_p99_overhead_over_threshold_pages_once_and_recovers():
    """Two minutes in which one request in fifty spends 80 ms in the gateway (a p99 over the 50 ms threshold):
    one alert, raised within a window of the start, resolved after the end."""
    start, slow = 1_000_000.0, (400, 520)
    rng = random.Random(11)

    def twist(t: float, r: dict[str, Any]) -> list[dict[str, Any]]:
        if slow[0] <= t < slow[1] and rng.random() < 0.02:
            return [dict(r, overhead_ms=80.0)]
        return [r]

    det = Detector(AlertsConfig())
    events = replay(det, traffic(900, random.Random(2), start=start, twist=twist))
    over = [e for e in events if e.signal == "overhead_p99"]
    assert [e.state for e in over] == ["firing", "resolved"], [e.message for e in events]
    assert over[0].subject == "gateway" and over[0].value > 50
    assert over[0].started_at - (start + slow[0]) <= 60
    assert over[1].resolved_at >= start + slow[1]
    assert {e.signal for e in events} == {"overhead_p99"}
