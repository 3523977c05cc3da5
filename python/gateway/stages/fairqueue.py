"""Where requests over a rate limit wait for their turn (``stages.limits.on_exceed: queue``).

Fair between callers: each caller (key) has its own FIFO, and callers are served round robin, so one caller's
burst cannot starve another's single request. One pump per worker retries the head of each caller's queue against
the (shared) buckets as they refill, sleeping until the soonest refill; a waiter still waiting at its deadline is
answered with the last refusal (the stage turns it into a 429). Across workers and replicas the buckets are
shared, the queues are not: every worker's pump competes for the same tokens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

from gateway.state.types import LimitCheck, LimitDecision, StateBackend
from gateway.telemetry.metrics import METRICS, Metrics

log = logging.getLogger("gateway.limits")

POLL_MAX_S = 0.1  # the pump looks again at least this often (a new caller's bucket may refill sooner)


@dataclass(slots=True)
class Waiter:
    checks: list[LimitCheck]
    deadline: float
    last: LimitDecision
    fut: asyncio.Future[LimitDecision] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairQueue:
    def __init__(self, state: StateBackend, metrics: Metrics = METRICS) -> None:
        self.state = state
        self.metrics = metrics
        self.callers: dict[str, deque[Waiter]] = {}  # insertion order is the round-robin order
        self._pump: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return sum(len(q) for q in self.callers.values())

    async def wait(
        self, caller: str, checks: list[LimitCheck], first: LimitDecision, max_wait_s: float
    ) -> LimitDecision:
        """Admitted (the checks are charged) or, at the deadline, the last refusal."""
        w = Waiter(checks, time.monotonic() + max_wait_s, first)
        self.callers.setdefault(caller, deque()).append(w)
        self.metrics.inc("queue_depth")
        self.metrics.inc("queued_total")
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())
        try:
            d = await w.fut
        finally:
            self.metrics.inc("queue_depth", -1)
        self.metrics.inc("queue_admitted_total" if d.allowed else "queue_timeouts_total")
        return d

    async def _run(self) -> None:
        try:
            while self.callers:
                soonest = await self._pass()
                if self.callers:
                    now = time.monotonic()
                    nearest = min(q[0].deadline for q in self.callers.values() if q) - now
                    await asyncio.sleep(max(0.001, min(soonest, nearest, POLL_MAX_S)))
        except Exception as e:  # never leave a waiter hanging
            log.exception("rate-limit queue failed")
            for q in self.callers.values():
                for w in q:
                    if not w.fut.done():
                        w.fut.set_exception(e)
            self.callers.clear()

    async def _pass(self) -> float:
        """One round: the head of each caller's queue tries once. Returns the soonest refill seen (seconds)."""
        soonest = math.inf
        for caller in list(self.callers):
            q = self.callers.get(caller)
            now = time.monotonic()
            while q and (q[0].fut.done() or q[0].deadline <= now):
                w = q.popleft()
                if not w.fut.done():
                    w.fut.set_result(w.last)  # waited long enough: the last refusal
            if not q:
                self.callers.pop(caller, None)
                continue
            w = q[0]
            try:
                d = await self.state.acquire(w.checks)
            except Exception as e:  # e.g. the shared state is down and the policy is fail_closed
                q.popleft()
                if not w.fut.done():
                    w.fut.set_exception(e)
                continue
            if w.fut.done():  # the caller went away while we asked: give back what it was just charged
                q.popleft()
                if d.allowed:
                    for c in w.checks:
                        await self.state.adjust(c, c.cost)
                continue
            if d.allowed or d.retry_after_s < 0:
                q.popleft()
                w.fut.set_result(d)
                self.callers.pop(caller, None)  # served: to the back of the round robin
                if q:
                    self.callers[caller] = q
            else:
                w.last = d
                soonest = min(soonest, d.retry_after_s)
        return soonest
