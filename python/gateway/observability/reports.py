"""Tier-2 (daily review) and tier-3 (weekly planning) reports from the record store, as Markdown and CSV.

``gateway report daily|weekly [--config F] [--out DIR] [--date YYYY-MM-DD]`` writes ``DIR/daily-DATE.md`` and one
CSV per section (``DIR/daily-DATE-<section>.csv``). The period ends at the start of ``--date`` + 1 day (UTC;
default today), so a daily report run at midnight covers the day that just ended.

Daily: per-caller cost trend (the day against the average day of the week before, per tenant, key and agent),
cache hit rate per category, routing distribution per model group, token consumption per model per category.
Weekly: cost attribution by team and by feature (tag), quality per category (errors, schema failures, fallbacks),
models under evaluation, and the compliance audit summary (PII intercepts by type, policy rejections by code,
content-filter activations). A request's category is its record's ``category`` (set by routing), else its
first tag.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from gateway.observability.metrics import CATEGORY_SQL

Section = tuple[str, str, list[str], list[list[Any]], str]  # (slug, title, columns, rows, note)
BODY = "(SELECT *, CAST(body AS TEXT) AS b FROM records WHERE ts >= ? AND ts < ?)"
BILLABLE = "json_extract(b, '$.endpoint') IN ('chat', 'embeddings')"
CATEGORY = CATEGORY_SQL


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[list[Any]]:
    return [list(r) for r in conn.execute(sql, args)]


def cost_trends(conn: sqlite3.Connection, start: float, end: float) -> Section:
    day = end - 86400
    rows: list[list[Any]] = []
    for scope, expr in (
        ("tenant", "tenant"),
        ("key", "key_id"),
        ("agent", "json_extract(b, '$.tenant') || '/' || json_extract(b, '$.agent')"),
    ):
        sql = (
            f"SELECT {expr} AS who, SUM(CASE WHEN ts >= ? THEN cost_usd ELSE 0 END),"
            " SUM(CASE WHEN ts < ? THEN cost_usd ELSE 0 END) / 7.0"
            f" FROM {BODY} WHERE {BILLABLE} AND {expr} IS NOT NULL GROUP BY who ORDER BY 2 DESC"
        )
        for who, today, avg in _rows(conn, sql, (day, day, end - 8 * 86400, end)):
            change = f"{(today / avg - 1) * 100:+.0f}%" if avg else "new"
            rows.append([scope, who, round(today, 6), round(avg, 6), change])
    return (
        "cost_trends",
        "Cost per caller: the day against the week before",
        ["scope", "id", "usd_day", "usd_avg_day_prev_week", "change"],
        rows,
        "",
    )


def cache_hit_rate(conn: sqlite3.Connection, start: float, end: float) -> Section:
    status = "COALESCE(json_extract(b, '$.cache'), json_extract(b, '$.flags.cache'), 'off')"
    sql = (
        f"SELECT {CATEGORY}, COUNT(*), SUM({status} IN ('hit', 'semantic-hit')), SUM({status} IN ('hit', 'semantic-hit', 'miss'))"
        f" FROM {BODY} WHERE json_extract(b, '$.endpoint') = 'chat' GROUP BY 1 ORDER BY 2 DESC"
    )
    rows = []
    for cat, n, hits, looked in _rows(conn, sql, (start, end)):
        rows.append([cat, n, hits or 0, f"{(hits or 0) / looked:.1%}" if looked else "cache off"])
    return ("cache", "Cache hit rate per category", ["category", "requests", "hits", "hit_rate"], rows, "")


def routing(conn: sqlite3.Connection, start: float, end: float) -> Section:
    sql = (
        "SELECT json_extract(b, '$.model_requested') AS g, model_served, COUNT(*),"
        " SUM(json_extract(b, '$.route') LIKE '%after%' OR json_extract(b, '$.route') LIKE 'fallback%')"
        f" FROM {BODY} WHERE {BILLABLE} AND model_served IS NOT NULL GROUP BY g, model_served ORDER BY g, 3 DESC"
    )
    data = _rows(conn, sql, (start, end))
    totals: dict[str, int] = {}
    for g, _dep, n, _f in data:
        totals[g] = totals.get(g, 0) + n
    rows = [[g, dep, n, f"{n / totals[g]:.1%}", fo or 0] for g, dep, n, fo in data]
    return (
        "routing",
        "Routing distribution per model group",
        ["group", "deployment", "requests", "share", "after_failover"],
        rows,
        "",
    )


def tokens(conn: sqlite3.Connection, start: float, end: float) -> Section:
    sql = (
        f"SELECT json_extract(b, '$.model_requested'), {CATEGORY}, COUNT(*),"
        " SUM(json_extract(b, '$.input_tokens')), SUM(json_extract(b, '$.output_tokens')), SUM(cost_usd)"
        f" FROM {BODY} WHERE {BILLABLE} AND json_extract(b, '$.model_requested') IS NOT NULL"
        " GROUP BY 1, 2 ORDER BY 6 DESC"
    )
    rows = [
        [m, c, n, i or 0, o or 0, round(u or 0, 6)] for m, c, n, i, o, u in _rows(conn, sql, (start, end))
    ]
    return (
        "tokens",
        "Token consumption per model per category",
        ["model", "category", "requests", "input_tokens", "output_tokens", "usd"],
        rows,
        "",
    )


def attribution(conn: sqlite3.Connection, start: float, end: float) -> Section:
    rows: list[list[Any]] = []
    for scope, join, expr in (
        ("team", "", "COALESCE(json_extract(b, '$.team'), '(none)')"),
        ("feature", " LEFT JOIN json_each(r.b, '$.tags') AS t", "COALESCE(t.value, '(untagged)')"),
    ):
        sql = (
            f"SELECT {expr}, COUNT(*), SUM(r.cost_usd) FROM {BODY} AS r{join}"
            f" WHERE {BILLABLE} GROUP BY 1 ORDER BY 3 DESC"
        )
        rows += [[scope, who, n, round(u or 0, 6)] for who, n, u in _rows(conn, sql, (start, end))]
    return (
        "attribution",
        "Cost attribution by team and feature",
        ["scope", "id", "requests", "usd"],
        rows,
        "A request with several tags counts under each.",
    )


def quality(conn: sqlite3.Connection, start: float, end: float) -> Section:
    sql = (
        f"SELECT {CATEGORY}, COUNT(*), SUM(status >= 500), SUM(json_extract(b, '$.flags.schema_valid') = 0),"
        " SUM(json_extract(b, '$.route') LIKE '%after%' OR json_extract(b, '$.route') LIKE 'fallback%'),"
        " AVG(json_extract(b, '$.latency_ms'))"
        f" FROM {BODY} WHERE json_extract(b, '$.endpoint') = 'chat' GROUP BY 1 ORDER BY 2 DESC"
    )
    rows = [
        [c, n, f"{(e or 0) / n:.2%}", s or 0, f or 0, round(lat or 0, 1)]
        for c, n, e, s, f, lat in _rows(conn, sql, (start, end))
    ]
    return (
        "quality",
        "Quality per category (what routing records)",
        ["category", "requests", "error_rate", "schema_failures", "failovers", "avg_latency_ms"],
        rows,
        "",
    )


def evaluations(conn: sqlite3.Connection, start: float, end: float) -> Section:
    """Bench results kept in this store (``gateway bench ... --store``) during the period, newest run first."""
    try:
        found = _rows(
            conn,
            "SELECT run, category, model, n, quality, lo, hi, cost_per_1k, p50_ms, p95_ms FROM bench_results"
            " WHERE ts >= ? AND ts < ? ORDER BY ts DESC, category, model",
            (start, end),
        )
    except sqlite3.OperationalError:  # no bench ever kept its results here
        found = []
    rows = [
        [run, cat, model, n, f"{q:.3f} [{lo:.3f}, {hi:.3f}]", round(cost, 4), round(p50, 1), round(p95, 1)]
        for run, cat, model, n, q, lo, hi, cost, p50, p95 in found
    ]
    return (
        "evaluations",
        "Models under evaluation (gateway bench)",
        ["run", "category", "model", "n", "quality_95ci", "usd_per_1k", "p50_ms", "p95_ms"],
        rows,
        ""
        if rows
        else "No benchmark results in this period (`gateway bench run ... --store <the store>` adds them).",
    )


def compliance(conn: sqlite3.Connection, start: float, end: float) -> Section:
    rows: list[list[Any]] = []
    pii: dict[str, int] = {}
    for (flags,) in conn.execute(
        f"SELECT json_extract(b, '$.flags.pii') FROM {BODY} WHERE json_extract(b, '$.flags.pii') IS NOT NULL",
        (start, end),
    ):
        for entity, n in orjson.loads(flags).items():
            pii[entity] = pii.get(entity, 0) + n
    rows += [["pii_intercepted", k, v] for k, v in sorted(pii.items(), key=lambda kv: -kv[1])]
    sql = (
        f"SELECT json_extract(b, '$.error_code'), COUNT(*) FROM {BODY} WHERE json_extract(b, '$.error_code') IN"
        " ('pii_rejected', 'model_not_allowed', 'residency_violation', 'budget_exceeded', 'approval_required',"
        " 'rate_limited', 'prompt_injection', 'content_filtered') GROUP BY 1 ORDER BY 2 DESC"
    )
    rows += [["policy_rejection", code, n] for code, n in _rows(conn, sql, (start, end))]
    n = conn.execute(
        f"SELECT COUNT(*) FROM {BODY} WHERE json_extract(b, '$.flags.content_filter') IS NOT NULL",
        (start, end),
    ).fetchone()[0]
    rows.append(["content_filter", "activations", n])
    return ("compliance", "Compliance audit summary", ["kind", "what", "count"], rows, "")


DAILY = (cost_trends, cache_hit_rate, routing, tokens)
WEEKLY = (attribution, quality, evaluations, compliance, cost_trends)


def build(conn: sqlite3.Connection, kind: str, day: date) -> tuple[str, list[Section]]:
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    span = timedelta(days=1 if kind == "daily" else 7)
    start = end - span
    sections = [f(conn, start.timestamp(), end.timestamp()) for f in (DAILY if kind == "daily" else WEEKLY)]
    n, usd = conn.execute(
        f"SELECT COUNT(*), SUM(cost_usd) FROM {BODY} WHERE {BILLABLE}", (start.timestamp(), end.timestamp())
    ).fetchone()
    title = (
        f"# Gateway {kind} report: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC\n\n"
        f"{n} requests, ${usd or 0:.4f} spent.\n"
    )
    return title, sections


def markdown(title: str, sections: list[Section]) -> str:
    out = [title]
    for _slug, head, cols, rows, note in sections:
        out.append(f"\n## {head}\n")
        if note:
            out.append(f"{note}\n")
        if not rows:
            out.append("_nothing in this period_\n")
            continue
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def to_csv(cols: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows(rows)
    return buf.getvalue()


def write(db: str, kind: str, out: Path, day: date | None = None) -> list[Path]:
    """Write the report's Markdown and CSV files into ``out``; returns their paths."""
    day = day or datetime.now(UTC).date()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        title, sections = build(conn, kind, day)
    finally:
        conn.close()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{day:%Y-%m-%d}"
    md = out / f"{stem}.md"
    md.write_text(markdown(title, sections))
    paths = [md]
    for slug, _head, cols, rows, _note in sections:
        p = out / f"{stem}-{slug}.csv"
        p.write_text(to_csv(cols, rows))
        paths.append(p)
    return paths
