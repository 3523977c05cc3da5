"""When is a neighbour close enough? Thresholds that meet a maximum error rate δ, learned from evidence.

Evidence is (similarity, correct) pairs: a request whose nearest cached question was at similarity ``s`` and whose
answer turned out to be (or not to be) the same as that question's answer. The gateway gets such a pair for free
on every miss that had a neighbour (it asks upstream anyway and compares), and on a small share of would-be hits
that it verifies on purpose (``explore_rate``), so thresholds keep learning after they start serving.

Two levels, as in vCache's per-entry decision boundaries:

- **pooled**: counts in similarity bins; the threshold for δ is the lowest ``t`` such that the one-sided 95%
  Wilson upper bound of the error rate among all evidence at similarity ≥ ``t`` is ≤ δ (and there is enough of
  it). Starts from the calibration shipped with the package (``calibration.json``, learned on a third-party
  paraphrase corpus) and moves with the traffic's own evidence.
- **per entry**: an entry that was wrong for a neighbour at similarity ``s`` is never again served at ≤ ``s``;
  an entry with enough verified-correct evidence of its own may serve below the pooled threshold, under the same
  Wilson bound on its own counts.

δ bounds the share of wrong answers among the answers served from a neighbour (not among all requests, which
would be looser).
"""

from __future__ import annotations

import math
from importlib import resources

import orjson

BIN = 0.005
NBINS = int(1 / BIN) + 1
Z95 = 1.6449  # one-sided 95%
MIN_EVIDENCE = 30  # no threshold from fewer pairs than this


def wilson_upper(errors: int, n: int, z: float = Z95) -> float:
    if n == 0:
        return 1.0
    p = errors / n
    den = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / den)


def wilson_interval(errors: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Two-sided 95% interval of a rate (for reports)."""
    if n == 0:
        return (0.0, 1.0)
    p = errors / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _bin(s: float) -> int:
    return max(0, min(NBINS - 1, int(s / BIN)))


class Pooled:
    """Evidence counts per similarity bin, and the threshold each δ gets from them."""

    def __init__(self, total: list[int] | None = None, wrong: list[int] | None = None) -> None:
        self.total = list(total) if total else [0] * NBINS
        self.wrong = list(wrong) if wrong else [0] * NBINS
        self._memo: dict[float, float] = {}

    def add(self, s: float, correct: bool) -> None:
        b = _bin(s)
        self.total[b] += 1
        self.wrong[b] += 0 if correct else 1
        self._memo.clear()

    def threshold(self, delta: float) -> float:
        """The lowest similarity at which serving meets δ; above 1 (never serve) without enough evidence."""
        t = self._memo.get(delta)
        if t is not None:
            return t
        n = k = 0
        best = 1.01
        for b in range(NBINS - 1, -1, -1):
            n += self.total[b]
            k += self.wrong[b]
            # only where there is evidence: below the lowest observed similarity nothing is known
            if self.total[b] and n >= MIN_EVIDENCE and wilson_upper(k, n) <= delta:
                best = b * BIN
        self._memo[delta] = best
        return best

    def to_json(self) -> bytes:
        return orjson.dumps({"bin": BIN, "total": self.total, "wrong": self.wrong})

    @classmethod
    def shipped(cls, path: str | None = None) -> Pooled:
        """From ``path``, else the calibration shipped with the package."""
        try:
            if path is not None:
                with open(path, "rb") as f:
                    raw = f.read()
            else:
                raw = resources.files("gateway.cache").joinpath("calibration.json").read_bytes()
        except FileNotFoundError:
            if path is not None:
                raise
            return cls()
        data = orjson.loads(raw)
        return cls(data["total"], data["wrong"])


class EntryEvidence:
    """One cached question's own record: the highest similarity at which it was wrong, and the similarities at
    which it was right."""

    __slots__ = ("right", "wrong_above")

    def __init__(self) -> None:
        self.wrong_above = -1.0
        self.right: list[float] = []

    def add(self, s: float, correct: bool) -> None:
        if correct:
            self.right.append(s)
        else:
            self.wrong_above = max(self.wrong_above, s)

    def serves(self, s: float, pooled_t: float, delta: float) -> bool:
        if s <= self.wrong_above:
            return False
        if s >= pooled_t:
            return True
        # below the pooled threshold only on this entry's own evidence at or below s (all of it correct, since
        # s is above every wrong one)
        n = sum(1 for r in self.right if self.wrong_above < r <= s + BIN)
        return n >= MIN_EVIDENCE and wilson_upper(0, n) <= delta
