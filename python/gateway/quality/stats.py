"""Intervals for quality estimates: Wilson for pass/fail scores, a normal interval for graded ones, a
percentile bootstrap for ratios (cost saved, quality kept)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k/n`` (well-behaved near 0 and 1 and for small n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(scores: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and 95% interval of scores in [0, 1]: Wilson when every score is 0 or 1, else mean ± z·se."""
    n = len(scores)
    if n == 0:
        return 0.0, 0.0, 1.0
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        lo, hi = wilson(sum(scores), n, z)
        return mean, lo, hi
    var = sum((s - mean) ** 2 for s in scores) / max(1, n - 1)
    half = z * math.sqrt(var / n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def bootstrap(
    rows: Sequence[object], stat: Callable[[Sequence[object]], float], n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat`` over ``rows`` (resampled with replacement)."""
    rng = random.Random(seed)
    k = len(rows)
    if k == 0:
        return 0.0, 0.0
    vals = sorted(stat([rows[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    return vals[int(0.025 * n)], vals[min(n - 1, int(0.975 * n))]
