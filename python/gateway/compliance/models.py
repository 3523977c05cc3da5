"""The compliance scanners with their shipped weights (package data), built once per process.

`scripts/train_injection.py` and `scripts/train_content.py` write the weights
(`injection.gwlm.gz`, `content.gwlm.gz`) and the thresholds they calibrated on the training split
(`injection.json`, `content.json`) into `gateway/data/`.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import orjson

from gateway import _core

# Used when no calibration file ships (then the scanners run on signatures alone).
FALLBACK = {"injection_threshold": 0.5, "indirect_threshold": 0.5}


def _data(name: str) -> bytes | None:
    f = resources.files("gateway.data").joinpath(name)
    return f.read_bytes() if f.is_file() else None


@functools.cache
def injection_scanner() -> _core.InjectionScanner:
    raw = _data("injection.gwlm.gz")
    return _core.InjectionScanner(gzip.decompress(raw) if raw else None)


@functools.cache
def content_scanner() -> _core.ContentScanner:
    raw = _data("content.gwlm.gz")
    return _core.ContentScanner(gzip.decompress(raw) if raw else None)


@functools.cache
def defaults() -> dict[str, float]:
    """Default injection thresholds: the ones calibrated on the training split."""
    raw = _data("injection.json")
    if raw is None:
        return dict(FALLBACK)
    meta = orjson.loads(raw)
    return {
        "injection_threshold": meta["direct"]["default_threshold"],
        "indirect_threshold": meta["indirect"]["default_threshold"],
    }


@functools.cache
def content_thresholds() -> dict[str, float]:
    """Per text category, the score from which it counts (best F1 on the training split)."""
    raw = _data("content.json")
    out = {"dangerous": 0.5}
    if raw is not None:
        out.update({c: v["threshold"] for c, v in orjson.loads(raw)["categories"].items()})
    return out
