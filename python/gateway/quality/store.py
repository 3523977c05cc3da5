"""Bench results kept in the gateway's store (SQLite), so reports can show what was measured for which model
and when ("benchmark results for model versions under evaluation")."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from gateway.quality.report import Cell

SCHEMA = """CREATE TABLE IF NOT EXISTS bench_results (
    run TEXT NOT NULL, ts REAL NOT NULL, category TEXT NOT NULL, model TEXT NOT NULL, n INTEGER NOT NULL,
    errors INTEGER NOT NULL, quality REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, cost_per_1k REAL NOT NULL,
    p50_ms REAL NOT NULL, p95_ms REAL NOT NULL, PRIMARY KEY (run, category, model))"""


def save_cells(path: str, run: str, cells: Sequence[Cell]) -> None:
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute(SCHEMA)
        now = time.time()
        conn.executemany(
            "INSERT OR REPLACE INTO bench_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    run,
                    now,
                    c.category,
                    c.model,
                    c.n,
                    c.errors,
                    c.quality,
                    c.lo,
                    c.hi,
                    c.cost_per_1k,
                    c.p50_ms,
                    c.p95_ms,
                )
                for c in cells
            ],
        )
        conn.commit()
    finally:
        conn.close()


def read_cells(path: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Every kept result since ``since`` (unix seconds), newest run first."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute(SCHEMA)
        cur = conn.execute(
            "SELECT * FROM bench_results WHERE ts >= ? ORDER BY ts DESC, category, model", (since,)
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
