"""Per-deployment health: latency EWMAs, cooldowns after 429/5xx/timeouts, and a circuit breaker.

The breaker opens after ``failure_threshold`` consecutive failures, stays open for ``open_s`` seconds, then lets
a single half-open probe through: success closes it, failure re-opens it. A 429 is a cooldown (the provider said
when to come back), not a breaker failure.

With ``stall_s`` set, a deployment whose requests in flight have had no answer for that long counts as stalled
and is skipped until it answers or its requests end: a hung provider is routed around after ``stall_s``, not
after each caller's timeout.
"""

from __future__ import annotations

import time
from collections import deque

from gateway.errors import UpstreamError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Health:
    __slots__ = (
        "alpha",
        "consecutive_failures",
        "cooldown_until",
        "cooled_at",
        "ewma_total_ms",
        "ewma_ttft_ms",
        "failure_threshold",
        "failures",
        "inflight",
        "last_attempt",
        "open_s",
        "opened_at",
        "probe_in_flight",
        "requests",
        "samples",
        "stall_s",
        "stalled_since",
        "state",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        open_s: float = 30.0,
        alpha: float = 0.3,
        stall_s: float | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.stall_s = stall_s
        self.stalled_since: float | None = None  # since when requests have waited here without any answer
        self.open_s = open_s
        self.alpha = alpha
        self.ewma_ttft_ms: float | None = None
        self.ewma_total_ms: float | None = None
        self.consecutive_failures = 0
        self.cooldown_until = 0.0
        self.cooled_at = 0.0  # when this worker last started or adopted a cooldown
        self.state = CLOSED
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.inflight = 0
        self.last_attempt = 0.0  # monotonic time of the last request sent here (least-latency probes)
        self.requests = 0
        self.failures = 0
        self.samples: deque[float] = deque(maxlen=200)  # recent total latencies, for hedging's p95

    def available(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now < self.cooldown_until:
            return False
        if self.stalled(now):
            return False
        if self.state == OPEN:
            if now - self.opened_at < self.open_s:
                return False
            self.state = HALF_OPEN
            self.probe_in_flight = False
        if self.state == HALF_OPEN:
            return not self.probe_in_flight
        return True

    def stalled(self, now: float) -> bool:
        return (
            self.stall_s is not None
            and self.stalled_since is not None
            and now - self.stalled_since > self.stall_s
        )

    def begin(self) -> None:
        self.inflight += 1
        self.last_attempt = time.monotonic()
        if self.stalled_since is None:
            self.stalled_since = self.last_attempt
        self.requests += 1
        if self.state == HALF_OPEN:
            self.probe_in_flight = True

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self.stalled_since = None

    def answered(self) -> None:
        """Any answer (a success, or an error other than a timeout): the others in flight wait from now."""
        if self.stalled_since is not None:
            self.stalled_since = time.monotonic()

    def success(self, total_ms: float | None = None, ttft_ms: float | None = None) -> None:
        """A call worked. Non-stream calls report their total time, streams their time to first token."""
        self.consecutive_failures = 0
        self.state = CLOSED
        self.probe_in_flight = False
        self.answered()
        if total_ms is not None:
            self.ewma_total_ms = self._ewma(self.ewma_total_ms, total_ms)
            self.samples.append(total_ms)
        if ttft_ms is not None:
            self.ewma_ttft_ms = self._ewma(self.ewma_ttft_ms, ttft_ms)

    def failure(self, err: UpstreamError, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        self.probe_in_flight = False
        if not err.timeout:
            self.answered()
        if err.status == 429:
            self.cool(now + (err.retry_after if err.retry_after else 1.0), now)
            return
        if not err.retryable:
            return  # the request was bad, not the deployment
        self.consecutive_failures += 1
        if err.timeout:  # a timeout is the slowest answer there is, for either kind of request
            self.ewma_total_ms = self._ewma(self.ewma_total_ms, 60_000.0)
            self.ewma_ttft_ms = self._ewma(self.ewma_ttft_ms, 60_000.0)
        if self.state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.state = OPEN
            self.opened_at = now

    def cool(self, until: float, now: float) -> None:
        """Skip this deployment until ``until`` (monotonic); a later end wins."""
        if until > self.cooldown_until:
            self.cooldown_until = until
            self.cooled_at = now

    def clear(self) -> None:
        """An operator's reset (``DELETE /admin/cooldowns``): no cooldown, the circuit closed."""
        self.cooldown_until = 0.0
        self.consecutive_failures = 0
        self.state = CLOSED
        self.probe_in_flight = False

    def report(self, now: float) -> dict[str, object]:
        """What ``/admin/stats`` shows for this deployment in this worker."""
        return {
            "circuit": self.state,
            "cooldown_s": round(max(0.0, self.cooldown_until - now), 3),
            "consecutive_failures": self.consecutive_failures,
            "requests": self.requests,
            "failures": self.failures,
        }

    def _ewma(self, cur: float | None, sample: float) -> float:
        return sample if cur is None else cur + self.alpha * (sample - cur)

    def p95_ms(self, min_samples: int) -> float | None:
        if len(self.samples) < min_samples:
            return None
        xs = sorted(self.samples)
        return xs[int(0.95 * (len(xs) - 1))]

    def latency_ms(self, stream: bool = False) -> float:
        """What least-latency compares: time to first token for streams, total time otherwise (each falls back
        to the other until it has been measured; 0 = never measured)."""
        first, second = (
            (self.ewma_ttft_ms, self.ewma_total_ms) if stream else (self.ewma_total_ms, self.ewma_ttft_ms)
        )
        v = first if first is not None else second
        return v if v is not None else 0.0
