"""Where a benchmark's result goes: a JSON file under the project root, then its report on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def save_result(result: dict[str, Any], out: str, report: Callable[[dict[str, Any]], None]) -> int:
    """Write ``result`` to ``out`` (relative to the project root), print ``report(result)`` and where it went;
    returns the command's exit status (0)."""
    path = ROOT / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    report(result)
    print(f"\nwritten to {path}")
    return 0
