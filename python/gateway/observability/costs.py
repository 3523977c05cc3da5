"""Cost attribution over the request records: who spent what, on which model, per hour or day.

``GET /admin/costs?group_by=tenant,team,tag,agent,model&from=&to=&granularity=hour|day|total[&tenant=][&format=csv]``
and ``gateway admin costs`` answer from the record store, so a finished request is counted the moment its record
is written, on every worker. A request with several tags counts once under each of its tags (so the rows of a
``group_by=tag`` answer may add up to more than the total, which is given separately).
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

from gateway.errors import GatewayError

# group_by name -> SQL expression over the records table (``b`` is the record's JSON body as text)
DIMENSIONS: dict[str, str] = {
    "tenant": "r.tenant",
    "key": "r.key_id",
    "team": "json_extract(b, '$.team')",
    "tag": "t.value",
    "agent": "json_extract(b, '$.agent')",
    "user": "json_extract(b, '$.user')",
    "model": "json_extract(b, '$.model_requested')",
    "deployment": "r.model_served",
    "provider": "json_extract(b, '$.provider')",
    "endpoint": "json_extract(b, '$.endpoint')",
}
GRANULARITY = {"hour": 3600, "day": 86400, "total": 0}
COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd")
BILLABLE = ("chat", "embeddings")


def parse_time(value: str | None, default: float, what: str) -> float:
    """Unix seconds, or an ISO 8601 date / date-time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GatewayError(
            "invalid_request",
            f"{what}={value!r} is not a time: use unix seconds or ISO 8601 (2026-12-01 or 2026-12-01T10:00:00Z).",
            param=what,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_query(query: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """Validated parameters of a costs query; errors name the parameter and the accepted values."""
    now = time.time() if now is None else now
    group_by = [g.strip() for g in (query.get("group_by") or "tenant").split(",") if g.strip()]
    unknown = [g for g in group_by if g not in DIMENSIONS]
    if unknown:
        raise GatewayError(
            "invalid_request",
            f"Unknown group_by {', '.join(unknown)}; use any of {', '.join(DIMENSIONS)}.",
            param="group_by",
        )
    granularity = query.get("granularity") or "day"
    if granularity not in GRANULARITY:
        raise GatewayError("invalid_request", "granularity is one of hour, day, total.", param="granularity")
    end = parse_time(query.get("to"), now, "to")
    start = parse_time(query.get("from"), end - (86400 if granularity == "hour" else 30 * 86400), "from")
    if start >= end:
        raise GatewayError("invalid_request", "from must be before to.", param="from")
    fmt = query.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise GatewayError("invalid_request", "format is json or csv.", param="format")
    return {
        "group_by": list(dict.fromkeys(group_by)),
        "granularity": granularity,
        "from": start,
        "to": end,
        "tenant": query.get("tenant") or None,
        "format": fmt,
    }


def costs(conn: Any, q: dict[str, Any]) -> dict[str, Any]:
    """Spend, tokens and requests per period and group over [from, to) from the records table."""
    step = GRANULARITY[q["granularity"]]
    dims = q["group_by"]
    period = f"CAST(r.ts / {step} AS INTEGER) * {step}" if step else "0"
    select = [f"{period} AS period", *(f"{DIMENSIONS[d]} AS {d}" for d in dims)]
    join = " LEFT JOIN json_each(b, '$.tags') AS t" if "tag" in dims else ""
    where = ["r.ts >= ?", "r.ts < ?", f"json_extract(b, '$.endpoint') IN ({','.join('?' * len(BILLABLE))})"]
    args: list[Any] = [q["from"], q["to"], *BILLABLE]
    if q["tenant"]:
        where.append("r.tenant = ?")
        args.append(q["tenant"])
    sql = (
        f"SELECT {', '.join(select)}, COUNT(*), SUM(r.status >= 400),"
        " SUM(json_extract(b, '$.input_tokens')), SUM(json_extract(b, '$.output_tokens')), SUM(r.cost_usd)"
        f" FROM (SELECT *, CAST(body AS TEXT) AS b FROM records) AS r{join}"
        f" WHERE {' AND '.join(where)} GROUP BY {', '.join(['period', *dims])} ORDER BY period, {len(dims) + 6} DESC"
    )
    rows = []
    for row in conn.execute(sql, args):
        d: dict[str, Any] = {"period": iso(row[0]) if step else iso(q["from"])}
        d.update(zip(dims, row[1 : 1 + len(dims)], strict=True))
        n, errors, tin, tout, usd = row[1 + len(dims) :]
        d.update(
            requests=n,
            errors=errors or 0,
            input_tokens=tin or 0,
            output_tokens=tout or 0,
            cost_usd=round(usd or 0.0, 9),
        )
        rows.append(d)
    total_sql = (
        "SELECT COUNT(*), SUM(r.cost_usd) FROM (SELECT *, CAST(body AS TEXT) AS b FROM records) AS r"
        f" WHERE {' AND '.join(where)}"
    )
    n, usd = conn.execute(total_sql, args).fetchone()
    return {
        "from": iso(q["from"]),
        "to": iso(q["to"]),
        "granularity": q["granularity"],
        "group_by": dims,
        "tenant": q["tenant"],
        "total_requests": n,
        "total_usd": round(usd or 0.0, 9),
        "data": rows,
    }


def to_csv(answer: dict[str, Any]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    cols = ["period", *answer["group_by"], *COLUMNS]
    w.writerow(cols)
    for row in answer["data"]:
        w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return out.getvalue().encode()
