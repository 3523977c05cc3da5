"""Contract counters of this worker process (queue depth, queued / admitted / timed out, soft-budget alerts,
degraded decisions, retry-budget refusals), published through the state backend once a second so the admin API
can sum them over every worker and replica (``GET /admin/stats``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from gateway.state.types import StateBackend

PUBLISH_EVERY_S = 1.0
MAX_AGE_S = 10.0  # a snapshot older than this belongs to a worker that is gone


class Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def inc(self, name: str, n: float = 1) -> None:
        """Counters only grow; gauges (``queue_depth``) move both ways through ``inc`` with a negative n."""
        self.values[name] = self.values.get(name, 0) + n
        self._dirty = True

    def snapshot(self) -> dict[str, float]:
        return dict(self.values)

    def start(self, state: StateBackend) -> None:
        """Publish this worker's snapshot from now on (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self.worker = f"{socket.gethostname()}:{os.getpid()}"  # after a fork, a new worker
            self._task = asyncio.get_running_loop().create_task(self._publish(state))

    async def _publish(self, state: StateBackend) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            if self._dirty:
                self._dirty = False
                with contextlib.suppress(Exception):
                    await state.publish_metrics(self.worker, self.snapshot(), MAX_AGE_S)


def total(snapshots: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for snap in snapshots.values():
        for name, value in snap.items():
            if name != "ts" and isinstance(value, int | float):
                out[name] = out.get(name, 0) + value
    return out


METRICS = Metrics()
