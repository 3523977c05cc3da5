"""gateway._core RateLimiter: GCRA semantics, all-or-nothing, adjust, sweep, the rate property."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._core import RateLimiter


def test_full_bucket_burst_then_refill():
    rl = RateLimiter()
    for _ in range(10):
        assert rl.acquire([("k", 10, 1.0, 1)], now=0.0)[0]
    allowed, failed, retry, remaining, reset = rl.acquire([("k", 10, 1.0, 1)], now=0.0)
    assert (allowed, failed) == (False, 0)
    assert retry == pytest.approx(0.1)
    assert remaining == [pytest.approx(0.0)] and reset == [pytest.approx(1.0)]
    assert rl.acquire([("k", 10, 1.0, 1)], now=0.1)[0]


def test_all_or_nothing_and_reporting():
    rl = RateLimiter()
    limits = [("tenant", 100, 60.0, 10), ("key", 20, 60.0, 10), ("model", 1000, 60.0, 10)]
    allowed, failed, retry, remaining, reset = rl.acquire(limits, now=0.0)
    assert (allowed, failed, retry) == (True, -1, 0.0)
    assert remaining == pytest.approx([90, 10, 990])
    assert reset == pytest.approx([6.0, 30.0, 0.6])
    rl.acquire(limits, now=0.0)
    allowed, failed, retry, remaining, _ = rl.acquire(limits, now=0.0)
    assert (allowed, failed) == (False, 1)
    assert retry == pytest.approx(30.0)  # 10 tokens at 20/60s
    assert remaining == pytest.approx([80, 0, 980])  # nothing charged
    assert rl.peek("tenant", 100, 60.0, now=0.0) == pytest.approx(80)


def test_cost_above_capacity_is_never_admitted():
    rl = RateLimiter()
    allowed, failed, retry, *_ = rl.acquire([("a", 5, 1.0, 1), ("b", 5, 1.0, 6)], now=0.0)
    assert (allowed, failed, retry) == (False, 1, -1.0)
    assert rl.peek("a", 5, 1.0, now=0.0) == 5


def test_adjust_refunds_and_debts():
    rl = RateLimiter()
    rl.acquire([("k", 100, 10.0, 80)], now=0.0)
    rl.adjust("k", 100, 10.0, 30, now=0.0)  # actual usage was lower
    assert rl.peek("k", 100, 10.0, now=0.0) == pytest.approx(50)
    rl.adjust("k", 100, 10.0, 1000, now=0.0)  # clamped at full
    assert rl.peek("k", 100, 10.0, now=0.0) == pytest.approx(100)
    rl.adjust("k", 100, 10.0, -150, now=0.0)  # actual usage was higher: debt
    assert rl.peek("k", 100, 10.0, now=0.0) == pytest.approx(-50)
    assert not rl.acquire([("k", 100, 10.0, 1)], now=0.0)[0]
    assert rl.peek("k", 100, 10.0, now=10.0) == pytest.approx(50)


def test_sweep_and_len():
    rl = RateLimiter(idle_ttl_s=100.0)
    rl.acquire([("short", 10, 1.0, 10), ("long", 10, 1000.0, 1)], now=0.0)
    assert len(rl) == 2
    assert rl.sweep(now=0.5) == 0
    assert rl.sweep(now=1.0) == 1  # full again: forgetting it changes nothing
    assert rl.sweep(now=200.0) == 1  # idle longer than idle_ttl_s
    assert len(rl) == 0


def test_default_clock_and_validation():
    rl = RateLimiter()
    assert rl.acquire([("k", 1, 3600.0, 1)])[0]
    assert not rl.acquire([("k", 1, 3600.0, 1)], now=time.monotonic())[0]  # same clock
    for bad in [("k", 0, 1.0, 1), ("k", 1, 0.0, 1), ("k", 1, 1.0, -1), ("k", float("nan"), 1.0, 1)]:
        with pytest.raises(ValueError):
            rl.acquire([bad], now=0.0)
    with pytest.raises(ValueError):
        RateLimiter(idle_ttl_s=0)


def test_threads_never_overadmit():
    rl = RateLimiter()
    admitted = []

    def worker():
        n = sum(
            rl.acquire([("shared", 500, 60.0, 1), ("other", 10_000, 60.0, 1)], now=0.0)[0] for _ in range(400)
        )
        admitted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500
    assert rl.peek("other", 10_000, 60.0, now=0.0) == pytest.approx(10_000 - 500)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.floats(1, 100),
    window=st.floats(0.1, 60),
    schedule=st.lists(
        st.tuples(st.floats(0, 5), st.floats(0, 20), st.floats(-5, 5)), min_size=1, max_size=150
    ),
)
def test_never_admits_more_than_its_rate(capacity, window, schedule):
    """Within any interval of length L at most capacity + capacity * L / window is admitted
    (burst of a full bucket, then the refill rate); refunds can only return what was taken."""
    rl = RateLimiter()
    now, admitted = 0.0, []
    for dt, cost, refund in schedule:
        now += dt
        if rl.acquire([("k", capacity, window, cost)], now=now)[0]:
            admitted.append((now, cost))
            if refund > 0:  # give part of it back, as after a reservation
                back = min(refund, cost)
                rl.adjust("k", capacity, window, back, now=now)
                admitted[-1] = (now, cost - back)
    for i, (t0, _) in enumerate(admitted):
        total = 0.0
        for t1, c in admitted[i:]:
            total += c
            assert total <= capacity + capacity * (t1 - t0) / window + 1e-6 * capacity
