"""What a bench run found: per category x model quality (95% interval), cost per 1,000 requests, p50/p95
latency and error rate; the proposed routing table; the HTML report (plots inline as SVG, no network)."""

from __future__ import annotations

import html
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.quality.allocate import Allocation
from gateway.quality.runner import Result
from gateway.quality.stats import mean_interval, percentile


class Cell(msgspec.Struct):
    """One category x model of a bench run."""

    category: str
    model: str
    n: int  # scored calls
    errors: int
    quality: float
    lo: float
    hi: float
    cost_per_1k: float  # USD per 1,000 requests
    p50_ms: float
    p95_ms: float

    @property
    def error_rate(self) -> float:
        total = self.n + self.errors
        return self.errors / total if total else 0.0


class Route(msgspec.Struct):
    """A routing-table row: which model serves a category, and why."""

    category: str
    model: str
    threshold: float
    quality: float
    lo: float
    cost_per_1k: float
    why: str
    n: int = 0  # the bench items behind the row's quality
    min_chars: int = 0  # shorter prompts stay on the default model (what they would save is worth less)


def summarise(results: Sequence[Result]) -> list[Cell]:
    by: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        by[(r.category, r.model)].append(r)
    cells = []
    for (cat, model), rs in sorted(by.items()):
        ok = [r for r in rs if r.score is not None]
        q, lo, hi = mean_interval([r.score for r in ok if r.score is not None])
        lat = [r.latency_ms for r in ok]
        cells.append(
            Cell(
                category=cat,
                model=model,
                n=len(ok),
                errors=len(rs) - len(ok),
                quality=q,
                lo=lo,
                hi=hi,
                cost_per_1k=1000 * sum(r.cost_usd for r in rs) / len(rs),
                p50_ms=percentile(lat, 50),
                p95_ms=percentile(lat, 95),
            )
        )
    return cells


def propose(
    cells: Sequence[Cell],
    thresholds: dict[str, float],
    default_threshold: float | None = None,
    relative: float | None = None,
    max_error_rate: float = 0.05,
    fallback: str | None = None,
) -> list[Route]:
    """Per category, the cheapest model whose quality's lower bound meets the category's threshold.

    The threshold is the suite's own, else ``default_threshold``, else ``relative`` x the best model's measured
    quality there. A model erring more than ``max_error_rate`` never qualifies. When none qualifies the category
    goes to ``fallback`` (the category-less default, e.g. the strong model), else to its best-quality model."""
    by: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by[c.category].append(c)
    out = []
    for cat, cs in sorted(by.items()):
        best = max(cs, key=lambda c: (c.quality, -c.cost_per_1k))
        t = thresholds.get(cat, default_threshold)
        if t is None:
            t = (relative if relative is not None else 1.0) * best.quality
        ok = [c for c in cs if c.n and c.lo >= t and c.error_rate <= max_error_rate]
        if ok:
            pick = min(ok, key=lambda c: (c.cost_per_1k, -c.quality))
            why = f"cheapest with lower bound {pick.lo:.3f} >= {t:.3f}"
        else:
            pick = next((c for c in cs if c.model == fallback), best)
            why = f"none reaches {t:.3f} at its lower bound: " + (
                "the default" if pick.model == fallback else "best quality"
            )
        out.append(Route(cat, pick.model, round(t, 4), pick.quality, pick.lo, pick.cost_per_1k, why, pick.n))
    return out


def propose_allocation(
    cells: Sequence[Cell], alloc: Allocation, target: float, reference: str, max_error_rate: float = 0.05
) -> list[Route]:
    """The routing table of an overall quality goal (``allocate``): per category, the reference model or a
    cheaper one from a prompt length on. A cheaper model erring more than ``max_error_rate`` is never proposed.
    Each moved row's threshold is the lower bound measured for its model: the closed loop demotes a model whose
    live quality falls below it."""
    by: dict[str, dict[str, Cell]] = defaultdict(dict)
    for c in cells:
        by[c.category][c.model] = c
    out = []
    for cat, cs in sorted(by.items()):
        ref = cs.get(reference)
        mv = alloc.moves.get(cat)
        cheap = cs.get(mv.model) if mv is not None else None
        if ref is None or cheap is None or cheap.error_rate > max_error_rate:
            pick = ref or max(cs.values(), key=lambda x: x.quality)
            out.append(Route(cat, pick.model, round(pick.lo, 4), pick.quality, pick.lo, pick.cost_per_1k,
                             "reference model", pick.n))  # fmt: skip
            continue
        assert mv is not None
        longer = f"prompts of {mv.min_chars}+ characters, " if mv.min_chars else ""
        why = f"within the overall goal ({target:.0%} of {reference}): {longer}{-mv.gap:+.3f} here"
        c = cheap
        out.append(
            Route(cat, c.model, round(c.lo, 4), c.quality, c.lo, c.cost_per_1k, why, c.n, mv.min_chars)
        )
    return out


def routing_yaml(
    routes: Sequence[Route],
    default: str | None,
    cells: Sequence[Cell] = (),
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The routing table as the ``quality`` strategy reads it (``quality: {table: FILE}``). Each row also keeps
    every model's bench result there (``models``): the priors of the closed loop's estimates. ``notes``: how the
    proposal was made (e.g. the overall goal and its cross-validated check)."""
    measured: dict[str, dict[str, Any]] = defaultdict(dict)
    for c in cells:
        measured[c.category][c.model] = {"quality": round(c.quality, 4), "n": c.n}
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "default": default,
        **({"proposal": notes} if notes else {}),
        "categories": {
            r.category: {
                "model": r.model,
                "threshold": r.threshold,
                "quality": round(r.quality, 4),
                "lo": round(r.lo, 4),
                "n": r.n,
                **({"min_chars": r.min_chars} if r.min_chars else {}),
                **({"models": measured[r.category]} if measured.get(r.category) else {}),
            }
            for r in routes
        },
    }


def rich_table(cells: Sequence[Cell], title: str = "bench results") -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("category", "model", "n", "quality [95% CI]", "$ / 1k req", "p50 ms", "p95 ms", "errors"):
        t.add_column(col, justify="left" if col in ("category", "model") else "right")
    for c in cells:
        t.add_row(
            c.category,
            c.model,
            str(c.n),
            f"{c.quality:.3f} [{c.lo:.3f}, {c.hi:.3f}]",
            f"{c.cost_per_1k:.4f}",
            f"{c.p50_ms:.1f}",
            f"{c.p95_ms:.1f}",
            f"{c.error_rate:.1%}",
        )
    return t


# ------------------------------------------------------------------------------------------------ HTML


def _svg_quality(cells: Sequence[Cell], models: list[str]) -> str:
    """Quality with its interval per category, one colour per model (a dot-and-whisker plot)."""
    cats = sorted({c.category for c in cells})
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    row_h, left, width = 16, 190, 420
    h = row_h * len(cats) + 40
    parts = [f'<svg width="{left + width + 20}" height="{h}" font-size="11">']
    for k in range(0, 11, 2):
        x = left + width * k / 10
        parts.append(f'<line x1="{x}" y1="10" x2="{x}" y2="{h - 25}" stroke="#ddd"/>')
        parts.append(f'<text x="{x}" y="{h - 10}" text-anchor="middle">{k / 10:.1f}</text>')
    idx = {(c.category, c.model): c for c in cells}
    for i, cat in enumerate(cats):
        y = 20 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{html.escape(cat)}</text>')
        for j, m in enumerate(models):
            c = idx.get((cat, m))
            if c is None:
                continue
            col = colours[j % len(colours)]
            yy = y + (j - (len(models) - 1) / 2) * 4
            x0, x1, xm = (left + width * v for v in (c.lo, c.hi, c.quality))
            parts.append(f'<line x1="{x0:.1f}" y1="{yy}" x2="{x1:.1f}" y2="{yy}" stroke="{col}"/>')
            parts.append(f'<circle cx="{xm:.1f}" cy="{yy}" r="3" fill="{col}"/>')
    parts.append("</svg>")
    legend = " ".join(
        f'<span style="color:{colours[j % len(colours)]}">&#9679; {html.escape(m)}</span>'
        for j, m in enumerate(models)
    )
    return f"<div>{legend}</div>" + "".join(parts)


def _svg_cost_quality(cells: Sequence[Cell], models: list[str]) -> str:
    """Mean quality against cost per 1,000 requests per model (the trade-off the routing table makes)."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    pts = []
    for j, m in enumerate(models):
        cs = [c for c in cells if c.model == m and c.n]
        if cs:
            n = sum(c.n for c in cs)
            q = sum(c.quality * c.n for c in cs) / n
            cost = sum(c.cost_per_1k for c in cs) / len(cs)
            pts.append((m, cost, q, colours[j % len(colours)]))
    if not pts:
        return ""
    top = max(p[1] for p in pts) * 1.15 or 1.0
    w, h, left = 420, 240, 50
    parts = [f'<svg width="{w + left + 160}" height="{h + 40}" font-size="11">']
    parts.append(f'<line x1="{left}" y1="{h}" x2="{left + w}" y2="{h}" stroke="#000"/>')
    parts.append(f'<line x1="{left}" y1="10" x2="{left}" y2="{h}" stroke="#000"/>')
    parts.append(f'<text x="{left + w / 2}" y="{h + 30}" text-anchor="middle">$ per 1,000 requests</text>')
    for k in range(0, 11, 2):
        y = h - (h - 10) * k / 10
        parts.append(f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{k / 10:.1f}</text>')
    for m, cost, q, col in pts:
        x, y = left + w * cost / top, h - (h - 10) * q
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{col}"/>')
        parts.append(f'<text x="{x + 8:.1f}" y="{y + 4:.1f}">{html.escape(m)} (${cost:.3f})</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(cells: Sequence[Cell], routes: Sequence[Route], title: str, notes: str = "") -> str:
    models = sorted({c.model for c in cells})
    rows = "".join(
        f"<tr><td>{html.escape(c.category)}</td><td>{html.escape(c.model)}</td><td>{c.n}</td>"
        f"<td>{c.quality:.3f} [{c.lo:.3f}, {c.hi:.3f}]</td><td>{c.cost_per_1k:.4f}</td>"
        f"<td>{c.p50_ms:.1f}</td><td>{c.p95_ms:.1f}</td><td>{c.error_rate:.1%}</td></tr>"
        for c in cells
    )
    route_rows = "".join(
        f"<tr><td>{html.escape(r.category)}</td><td><b>{html.escape(r.model)}</b></td><td>{r.threshold:.3f}</td>"
        f"<td>{r.quality:.3f}</td><td>{r.lo:.3f}</td><td>{r.cost_per_1k:.4f}</td><td>{html.escape(r.why)}</td></tr>"
        for r in routes
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
h2{{margin-top:28px}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
<h2>Quality by category (95% interval)</h2>{_svg_quality(cells, models)}
<h2>Quality against cost</h2>{_svg_cost_quality(cells, models)}
<h2>Proposed routing table</h2><table><tr><th>category</th><th>model</th><th>threshold</th><th>quality</th>
<th>lower bound</th><th>$ / 1k req</th><th>why</th></tr>{route_rows}</table>
<h2>Results</h2><table><tr><th>category</th><th>model</th><th>n</th><th>quality [95% CI]</th><th>$ / 1k req</th>
<th>p50 ms</th><th>p95 ms</th><th>errors</th></tr>{rows}</table>
</body></html>"""
