"""The observability routes: ``GET /metrics`` (Prometheus text format), ``/dashboard`` and the admin API's
``/admin/costs`` and ``/admin/alerts``. Reads of the store run in a thread with their own connection, so a long
query never holds the worker's event loop."""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
from typing import Any, NamedTuple

from gateway.auth import key_from_headers
from gateway.dialects.openai import error_body
from gateway.errors import GatewayError
from gateway.observability import costs as _costs

PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Raw(NamedTuple):
    """An admin answer that is not JSON (CSV exports)."""

    body: bytes
    content_type: str


def reader(gw: Any) -> sqlite3.Connection:
    """A read-only connection to the record store for one query, on the thread that runs it."""
    conn = sqlite3.connect(f"file:{gw.cfg.store.sqlite_path}?mode=ro", uri=True, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def may_read(cfg: Any, headers: Any) -> bool:
    """The admin key or the read-only dashboard key."""
    given = (key_from_headers(headers.get("authorization"), headers.get("x-api-key")) or "").encode()
    keys = [k for k in (cfg.admin.key, cfg.observability.dashboard.key) if k]
    return any(hmac.compare_digest(given, k.encode()) for k in keys)


async def serve(obs: Any, gw: Any, scope: Any, proto: Any) -> None:
    path = scope.path
    try:
        if path == "/metrics":
            if obs.metrics is None:
                raise GatewayError("not_found", "Metrics are off (observability.metrics.enabled).")
            if obs.cfg.observability.metrics.require_admin_key and not may_read(obs.cfg, scope.headers):
                raise GatewayError(
                    "invalid_api_key",
                    "GET /metrics needs the admin key or the dashboard key as a bearer token.",
                )
            body = await asyncio.to_thread(obs.metrics.render)
            proto.response_bytes(200, [("content-type", PROM_TYPE)], body)
            return
        if not obs.cfg.observability.dashboard.enabled:
            raise GatewayError("not_found", "The dashboard is off (observability.dashboard.enabled).")
        if path.startswith("/dashboard/api/"):
            if not may_read(obs.cfg, scope.headers):
                raise GatewayError(
                    "invalid_api_key", "The dashboard needs the admin key or the dashboard key."
                )
            ctype, body = await dashboard_api(gw, path, _query(scope.query_string))
            proto.response_bytes(200, [("content-type", ctype), ("cache-control", "no-store")], body)
            return
        from gateway.observability import dashboard

        hit = dashboard.asset(path)
        if hit is None:
            raise GatewayError("not_found", f"No route for {scope.method} {path}.")
        proto.response_bytes(200, [("content-type", hit[1]), ("cache-control", "no-cache")], hit[0])
    except GatewayError as e:
        proto.response_bytes(e.status, [("content-type", "application/json")], error_body(e))


def _query(qs: str) -> dict[str, str]:
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(qs).items()}


async def dashboard_api(gw: Any, path: str, query: dict[str, str]) -> tuple[str, bytes]:
    """``/dashboard/api/summary?range=`` (JSON) and ``/dashboard/api/report?kind=daily|weekly`` (Markdown)."""
    import time

    import orjson

    from gateway.observability import dashboard, reports
    from gateway.observability.alerts import read_alerts

    if path == "/dashboard/api/summary":
        span = query.get("range") or "15m"
        if span not in dashboard.RANGES:
            raise GatewayError(
                "invalid_request", f"range is one of {', '.join(dashboard.RANGES)}.", param="range"
            )
        budgets = dashboard.budgets_of(gw)
        now = time.time()

        def run() -> dict[str, Any]:
            conn = reader(gw)
            try:
                return {
                    "summary": dashboard.summary(conn, span, now, budgets),
                    "alerts": read_alerts(conn, None, now - dashboard.RANGES[span]),
                }
            finally:
                conn.close()

        out = await asyncio.to_thread(run)
        out["live"] = dashboard.live(gw)
        return "application/json", orjson.dumps(out)
    if path == "/dashboard/api/report":
        kind = query.get("kind") or "daily"
        if kind not in ("daily", "weekly"):
            raise GatewayError("invalid_request", "kind is daily or weekly.", param="kind")

        def build() -> str:
            from datetime import UTC, datetime

            conn = reader(gw)
            try:
                return reports.markdown(*reports.build(conn, kind, datetime.now(UTC).date()))
            finally:
                conn.close()

        return "text/markdown; charset=utf-8", (await asyncio.to_thread(build)).encode()
    raise GatewayError("not_found", f"No dashboard API at {path}.")


async def costs(gw: Any, query: dict[str, str]) -> Any:
    """``GET /admin/costs``: JSON, or CSV with ``format=csv``."""
    q = _costs.parse_query(query)

    def run() -> dict[str, Any]:
        conn = reader(gw)
        try:
            return _costs.costs(conn, q)
        finally:
            conn.close()

    answer = await asyncio.to_thread(run)
    if q["format"] == "csv":
        return Raw(_costs.to_csv(answer), "text/csv; charset=utf-8")
    return answer


async def alerts(gw: Any, query: dict[str, str]) -> Any:
    """``GET /admin/alerts[?state=firing|resolved][&since=T]``: incidents, newest first."""
    from gateway.observability.alerts import read_alerts

    state = query.get("state") or None
    if state not in (None, "firing", "resolved"):
        raise GatewayError("invalid_request", "state is firing or resolved.", param="state")
    since = _costs.parse_time(query.get("since"), 0.0, "since")

    def run() -> list[dict[str, Any]]:
        conn = reader(gw)
        try:
            return read_alerts(conn, state, since)
        finally:
            conn.close()

    data = await asyncio.to_thread(run)
    return {"data": data, "firing": sum(1 for a in data if a["state"] == "firing")}
