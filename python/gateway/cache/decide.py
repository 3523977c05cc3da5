"""When is a neighbour close enough? Thresholds that meet a maximum error rate δ, learned from evidence.

The score compared with a threshold is the verifier's (``gateway.cache.verify``: a probability in [0, 1] from
the pair's features, cosine similarity among them). Evidence is (score, correct) pairs: a request whose best cached
question scored ``s`` and whose answer turned out to be (or not to be) the same as that question's answer. The
gateway gets such a pair for free on every miss that had a neighbour (it asks upstream anyway and compares), and
on a small share of would-be hits that it verifies on purpose (``explore_rate``), so thresholds keep learning
after they start serving.

Two levels, as in vCache's per-entry decision boundaries:

- **pooled**: counts in score bins. The threshold for δ comes from a fixed-sequence test (Learn-then-Test): going
  down from the highest score with enough evidence below it, each candidate threshold ``t``
  (starting at twice the fewest pairs that could show δ at all) passes when the exact binomial (Clopper-Pearson) test
  rejects "the error rate among pairs scored ≥ t exceeds δ"
  at the 5% level; the first failure stops the descent, and the lowest passing ``t`` is the threshold. Starts
  from the calibration shipped with the package (``calibration.json``: the calibration half of the corpora,
  pairs the verifier was not trained on) and moves with the traffic's own evidence.
- **per entry**: an entry that was wrong for a neighbour at score ``s`` is never again served at ≤ ``s``; an
  entry with enough verified-correct evidence of its own may serve below the pooled threshold, under the same
  test on its own counts.

δ bounds the share of wrong answers among the answers served from a neighbour (not among all requests, which
would be looser).
"""

from __future__ import annotations

import math
import time
from importlib import resources

import orjson

BIN = 0.005
NBINS = int(1 / BIN) + 1
Z95 = 1.6449  # one-sided 95%
ALPHA = 0.05  # the tests' level: a threshold meets δ with 95% confidence
MIN_EVIDENCE = 30  # no threshold from fewer pairs than this
START = 2  # the descent starts where there are START x the fewest pairs that could show δ (see threshold)
RECOMPUTE_S = 1.0  # thresholds follow new evidence at most this often (the test is not free)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    term = n * lq  # log P(X = 0)
    total = math.exp(term)
    for i in range(1, k + 1):
        term += math.log((n - i + 1) / i) + lp - lq
        total += math.exp(term)
    return min(1.0, total)


def safe(errors: int, n: int, delta: float, alpha: float = ALPHA) -> bool:
    """The exact binomial test rejects "error rate > δ" at level alpha (Clopper-Pearson upper bound ≤ δ)."""
    return n >= MIN_EVIDENCE and binom_cdf(errors, n, delta) <= alpha


def min_evidence(delta: float, alpha: float = ALPHA) -> int:
    """The fewest pairs (all correct) that can show an error rate ≤ δ: (1 - δ)^n ≤ alpha (at least MIN_EVIDENCE)."""
    return max(MIN_EVIDENCE, math.ceil(math.log(alpha) / math.log1p(-delta)))


def clopper_pearson(errors: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval of a rate (for reports)."""
    if n == 0:
        return (0.0, 1.0)
    a = (1 - conf) / 2

    def solve(target: float, k: int) -> float:  # p with P(X <= k; n, p) = target (decreasing in p)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if binom_cdf(k, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if errors == 0 else solve(1 - a, errors - 1)
    upper = 1.0 if errors == n else solve(a, errors)
    return (lower, upper)


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
        self._stale_since: float | None = None

    def add(self, s: float, correct: bool) -> None:
        b = _bin(s)
        self.total[b] += 1
        self.wrong[b] += 0 if correct else 1
        if self._stale_since is None:
            self._stale_since = time.monotonic()

    def threshold(self, delta: float) -> float:
        """The lowest score at which serving meets δ; above 1 (never serve) without enough evidence."""
        if self._stale_since is not None and time.monotonic() - self._stale_since >= RECOMPUTE_S:
            self._memo.clear()
            self._stale_since = None
        t = self._memo.get(delta)
        if t is not None:
            return t
        # where the sequence starts depends on the scores only, never on the labels (so the test stays valid); at
        # twice the bare minimum, one wrong answer among the very top pairs does not end it before it began
        need = START * min_evidence(delta)
        n = k = 0
        best = 1.01
        started = False
        for b in range(NBINS - 1, -1, -1):
            if not self.total[
                b
            ]:  # only where there is evidence: below the lowest observed score nothing is known
                continue
            n += self.total[b]
            k += self.wrong[b]
            if not started and n < need:
                continue  # too few pairs above here to show δ whatever they say: not a test of its own
            started = True
            if not safe(k, n, delta):
                break  # fixed sequence: the first failure ends the descent
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
        return safe(0, n, delta)
