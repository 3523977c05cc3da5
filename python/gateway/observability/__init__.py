"""Observability: Prometheus metrics, OpenTelemetry traces, alerts, reports, cost attribution and the dashboard.

Everything here is derived from the finished request records on the record writer's thread, or read from the
record store; the request path meets this package only through :class:`Observability` (built once per worker):
its record observers, and the routes ``/metrics``, ``/dashboard`` and ``/admin/costs|alerts``.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.observability import metrics as _metrics
from gateway.telemetry.records import Observer


class Observability:
    """One worker's observability layer."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = _metrics.for_worker(cfg)
        self.tracer: Any = None
        if cfg.observability.tracing.enabled:
            from gateway.observability.tracing import Tracer

            self.tracer = Tracer(cfg.observability.tracing)
        self.alerts: Any = None
        if cfg.observability.alerts.enabled:
            from gateway.observability.alerts import AlertRunner

            self.alerts = AlertRunner(cfg)

    @property
    def observers(self) -> list[Observer]:
        """What the record writer hands each batch of finished records to (on its own thread)."""
        return [o for o in (self.metrics, self.tracer) if o is not None]

    def begin(self, ctx: Any, headers: Any) -> None:
        """At a request's start (the request path): its trace, when it is sampled."""
        if self.tracer is not None:
            ctx.trace = self.tracer.begin(headers)

    def attach(self, gw: Any) -> None:
        """Called once the worker's gateway is built (live gauges read it)."""
        if self.metrics is not None:
            self.metrics.attach(gw)
        if self.alerts is not None:
            self.alerts.start()

    def close(self) -> None:
        """After the record writer wrote its last records: publish what this worker counted."""
        if self.alerts is not None:
            self.alerts.stop()
        if self.tracer is not None:
            self.tracer.close()
        if self.metrics is not None:
            self.metrics.sample()
            self.metrics.publish()

    async def serve(self, gw: Any, scope: Any, proto: Any) -> None:
        from gateway.observability.http import serve

        await serve(self, gw, scope, proto)
