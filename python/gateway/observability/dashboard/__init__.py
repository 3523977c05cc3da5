"""The built-in dashboard: static assets shipped in this package (no CDN, works offline) and one JSON summary.

``GET /dashboard`` serves the page; it asks for the admin key or the read-only ``observability.dashboard.key``
and then polls ``GET /dashboard/api/summary?range=15m|1h|6h|24h|7d|30d`` (bearer key). The summary reads the
record store for the range (a thread with its own read-only connection) and adds the live numbers of the
workers (circuits, queue depth, in-flight, from the shared metrics) and the alerts.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.observability.metrics import CATEGORY_SQL

HERE = Path(__file__).parent
ASSETS = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
    "/dashboard/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SAMPLE = 20000  # records read for percentiles; larger ranges are sampled evenly
BODY = "(SELECT *, CAST(body AS TEXT) AS b FROM records WHERE ts >= ? AND ts < ?)"
CHAT = "json_extract(b, '$.endpoint') IN ('chat', 'embeddings')"


def asset(path: str) -> tuple[bytes, str] | None:
    hit = ASSETS.get(path)
    if hit is None:
        return None
    name, ctype = hit
    return (HERE / name).read_bytes(), ctype


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def _quantiles(rows: list[tuple[Any, ...]], key: int, value: int) -> list[dict[str, Any]]:
    groups: dict[Any, list[float]] = {}
    for row in rows:
        if row[key] is not None and row[value] is not None:
            groups.setdefault(row[key], []).append(row[value])
    return [
        {"name": k, "n": len(v), "p50": pct(v, 0.5), "p95": pct(v, 0.95), "p99": pct(v, 0.99)}
        for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]


def period_start(rule: dict[str, Any], now: float) -> float:
    if rule.get("window_s"):
        return now - rule["window_s"]
    d = datetime.fromtimestamp(now, UTC)
    if rule.get("period") == "day":
        return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if rule.get("period") == "lifetime":
        return 0.0
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


SPEND_EXPR = {
    "tenant": "tenant",
    "team": "json_extract(b, '$.team')",
    "key": "key_id",
    "user": "json_extract(b, '$.user')",
    "agent": "json_extract(b, '$.agent')",
}


def summary(conn: sqlite3.Connection, span: str, now: float, budgets: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the page draws for the range ``span``, from the records."""
    secs = RANGES[span]
    start, end = now - secs, now
    step = max(10, secs // 60)
    args = (start, end)
    by_bucket: dict[int, dict[str, Any]] = {}
    for bucket, n, err, tin, tout, usd in conn.execute(
        f"SELECT CAST(ts / {step} AS INTEGER) * {step}, COUNT(*), SUM(status >= 400),"
        " SUM(json_extract(b, '$.input_tokens')), SUM(json_extract(b, '$.output_tokens')), SUM(cost_usd)"
        f" FROM {BODY} WHERE {CHAT} GROUP BY 1 ORDER BY 1",
        args,
    ):
        by_bucket[bucket] = {
            "t": bucket,
            "rps": round(n / step, 4),
            "errors": round((err or 0) / step, 4),
            "error_rate": round((err or 0) / n, 4),
            "tokens_in": tin or 0,
            "tokens_out": tout or 0,
            "cost": round(usd or 0, 6),
        }
    zero = {"rps": 0, "errors": 0, "error_rate": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0}
    first = int(start // step) * step
    # every bucket of the range, quiet ones as zeros, so the chart spans the range the user picked
    series = (
        [by_bucket.get(t) or {"t": t, **zero} for t in range(first, int(end) + 1, step)] if by_bucket else []
    )
    total = conn.execute(f"SELECT COUNT(*), MIN(seq), MAX(seq) FROM {BODY} WHERE {CHAT}", args).fetchone()
    every = max(1, (total[0] or 0) // SAMPLE)
    rows = conn.execute(
        "SELECT json_extract(b, '$.model_requested'), json_extract(b, '$.provider'),"
        f" {CATEGORY_SQL}, json_extract(b, '$.latency_ms'),"
        " json_extract(b, '$.overhead_ms'), json_extract(b, '$.ttfb_ms'), json_extract(b, '$.upstream_ms'), status"
        f" FROM {BODY} WHERE {CHAT} AND seq % ? = 0",
        (*args, every),
    ).fetchall()
    ok = [r for r in rows if r[7] < 400]
    latency = {
        "model": _quantiles(ok, 0, 3),
        "provider": _quantiles(ok, 1, 3),
        "category": _quantiles(ok, 2, 3),
        "overhead": _quantiles([("gateway", *r[1:]) for r in rows], 0, 4),
        "ttft": _quantiles(ok, 0, 5),
        "sampled_every": every,
    }
    spend: dict[str, list[dict[str, Any]]] = {}
    for scope, join, expr in (
        ("tenant", "", "tenant"),
        ("team", "", "json_extract(b, '$.team')"),
        ("key", "", "key_id"),
        ("tag", " LEFT JOIN json_each(r.b, '$.tags') AS t", "t.value"),
        ("agent", "", "json_extract(b, '$.tenant') || '/' || json_extract(b, '$.agent')"),
    ):
        spend[scope] = [
            {"id": who, "requests": n, "usd": round(usd or 0, 6)}
            for who, n, usd in conn.execute(
                f"SELECT {expr}, COUNT(*), SUM(r.cost_usd) FROM {BODY} AS r{join}"
                f" WHERE {CHAT} AND {expr} IS NOT NULL GROUP BY 1 ORDER BY 3 DESC LIMIT 20",
                args,
            )
        ]
    budget_rows = []
    for b in budgets:
        column = SPEND_EXPR.get(b["scope"])
        if b["scope"] == "tag":
            sql = (
                f"SELECT SUM(r.cost_usd) FROM {BODY} AS r, json_each(r.b, '$.tags') AS t"
                f" WHERE {CHAT} AND t.value = ?"
            )
            ids: list[Any] = [b["id"]]
        elif column is None or b["id"] == "*":
            continue
        else:
            sql = f"SELECT SUM(cost_usd) FROM {BODY} WHERE {CHAT} AND {column} IN (?, ?)"
            ids = [b["id"], b.get("key_id") or b["id"]]
        spent = conn.execute(sql, (period_start(b["rule"], now), now + 1, *ids)).fetchone()[0] or 0.0
        budget_rows.append({**b, "spent_usd": round(spent, 6), "limit_usd": b["rule"]["usd"]})
    routing = [
        {"group": g, "deployment": d, "requests": n, "failover": f or 0}
        for g, d, n, f in conn.execute(
            "SELECT json_extract(b, '$.model_requested'), model_served, COUNT(*),"
            " SUM(json_extract(b, '$.route') LIKE '%after%' OR json_extract(b, '$.route') LIKE 'fallback%')"
            f" FROM {BODY} WHERE {CHAT} AND model_served IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC",
            args,
        )
    ]
    interventions: dict[str, dict[str, int]] = {"pii": {}, "policy": {}}
    for (flags,) in conn.execute(
        f"SELECT json_extract(b, '$.flags.pii') FROM {BODY} WHERE json_extract(b, '$.flags.pii') IS NOT NULL",
        args,
    ):
        for entity, n in orjson.loads(flags).items():
            interventions["pii"][entity] = interventions["pii"].get(entity, 0) + n
    for code, n in conn.execute(
        f"SELECT json_extract(b, '$.error_code'), COUNT(*) FROM {BODY} WHERE status >= 400 AND status < 500"
        " AND json_extract(b, '$.error_code') IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
        args,
    ):
        interventions["policy"][code] = n
    return {
        "range": span,
        "from": start,
        "to": end,
        "step_s": step,
        "requests": total[0] or 0,
        "series": series,
        "latency": latency,
        "spend": spend,
        "budgets": budget_rows,
        "routing": routing,
        "failovers": sum(r["failover"] for r in routing),
        "interventions": interventions,
    }


def budgets_of(gw: Any) -> list[dict[str, Any]]:
    """Budget rules from the config and those set at run time (the latter win), with key names resolved."""
    import msgspec

    pol = gw.state.policies
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (pol.config_budgets, pol.budgets):
        for scope, by_id in source.items():
            for ident, rule in by_id.items():
                out[(scope, ident)] = {"scope": scope, "id": ident, "rule": msgspec.to_builtins(rule)}
    for p in gw.auth.static.values():
        b = out.get(("key", p.name or ""))
        if b is not None:
            b["key_id"] = p.key_id
    return list(out.values())


def live(gw: Any) -> dict[str, Any]:
    """This moment's numbers over every worker, from the shared metrics."""
    m = gw.obs.metrics
    if m is None:
        return {}
    from gateway.observability import metrics as mt

    merged = m.read()
    circuits = [
        {
            "group": k[0],
            "deployment": k[1],
            "state": {0.0: "closed", 1.0: "half_open", 2.0: "open"}.get(v, "?"),
        }
        for k, v in merged.gauges.get(mt.CIRCUIT, {}).items()
    ]
    return {
        "workers": sum(merged.gauges.get(mt.WORKERS, {}).values()),
        "queue_depth": sum(merged.gauges.get(mt.QUEUE_DEPTH, {}).values()),
        "inflight": sum(merged.gauges.get(mt.INFLIGHT, {}).values()),
        "record_backlog": sum(merged.gauges.get(mt.BACKLOG, {}).values()),
        "circuits": circuits,
        "open_circuits": sum(1 for c in circuits if c["state"] != "closed"),
        "cooling_down": [k[0] for k, v in merged.gauges.get(mt.COOLDOWN, {}).items() if v > 0],
        "requests_total": merged.counter(mt.REQUESTS),
        "at": time.time(),
    }
