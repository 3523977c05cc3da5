"""Task suites: per category, items with an input, an expected answer and the metric that scores an output.

A suite is a YAML file (or a directory of them)::

    category: extraction
    threshold: 0.9                  # the quality bar a model must meet (lower bound of its 95% interval)
    metric: {type: json, schema: {...}, fields: [name, date]}
    system: "Answer in JSON."       # optional system message
    max_tokens: 256
    items:                          # inline, and/or
      - {id: e1, input: "...", expected: {...}}
    items_file: extraction.jsonl    # one item a line: {"id", "input" | "messages", "expected", "metric"?, "split"?}

An item may carry its own ``metric`` (it overrides the suite's) and a ``split`` (``bench`` | ``held``): ``gateway
bench --split bench`` runs only one half, so what is routed later was never used to choose the route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml


class SuiteError(ValueError):
    pass


class Item(msgspec.Struct):
    id: str
    category: str
    messages: list[dict[str, Any]]
    expected: Any = None
    metric: dict[str, Any] | None = None
    split: str | None = None

    def prompt(self) -> str:
        """The last user message's text (what a classifier and the simulator see)."""
        for m in reversed(self.messages):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
        return ""


class Suite(msgspec.Struct):
    category: str
    metric: dict[str, Any]
    items: list[Item]
    threshold: float | None = None
    max_tokens: int | None = None


def _item(raw: Any, category: str, system: str | None, where: str) -> Item:
    if not isinstance(raw, dict) or "id" not in raw:
        raise SuiteError(f"{where}: an item must be a mapping with an id")
    if "messages" in raw:
        messages = raw["messages"]
        if not isinstance(messages, list) or not messages:
            raise SuiteError(f"{where}: messages must be a non-empty list")
    elif isinstance(raw.get("input"), str):
        messages = [{"role": "user", "content": raw["input"]}]
    else:
        raise SuiteError(f"{where}: an item needs input (text) or messages")
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    metric = raw.get("metric")
    if metric is not None and not isinstance(metric, dict):
        raise SuiteError(f"{where}: metric must be a mapping")
    return Item(
        id=str(raw["id"]),
        category=category,
        messages=messages,
        expected=raw.get("expected"),
        metric=metric,
        split=raw.get("split"),
    )


def load_suite(path: Path) -> Suite:
    from gateway.quality.metrics import check_metric

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SuiteError(f"{path}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("category"), str):
        raise SuiteError(f"{path}: a suite is a mapping with a category")
    category = doc["category"]
    metric = doc.get("metric") or {"type": "normalised"}
    check_metric(metric, str(path))
    system = doc.get("system")
    items = [_item(r, category, system, f"{path}: items[{i}]") for i, r in enumerate(doc.get("items") or [])]
    if doc.get("items_file"):
        f = path.parent / str(doc["items_file"])
        try:
            lines = f.read_bytes().splitlines()
        except OSError as e:
            raise SuiteError(f"{path}: items_file: {e}") from None
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    raw = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise SuiteError(f"{f}:{n}: {e}") from None
                items.append(_item(raw, category, system, f"{f}:{n}"))
    for it in items:
        if it.metric is not None:
            check_metric(it.metric, f"{path}: item {it.id}")
    threshold = doc.get("threshold")
    if threshold is not None and not 0 <= float(threshold) <= 1:
        raise SuiteError(f"{path}: threshold must be within [0, 1]")
    return Suite(
        category=category,
        metric=metric,
        items=items,
        threshold=None if threshold is None else float(threshold),
        max_tokens=doc.get("max_tokens"),
    )


def load_suites(path: str | Path) -> list[Suite]:
    """One suite file, or every ``*.yaml``/``*.yml`` in a directory (sorted)."""
    p = Path(path)
    files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
    if not files:
        raise SuiteError(f"{p}: no suite files (*.yaml)")
    suites = [load_suite(f) for f in files]
    seen: set[str] = set()
    for s in suites:
        if s.category in seen:
            raise SuiteError(f"category {s.category!r} is defined twice")
        seen.add(s.category)
    return suites
