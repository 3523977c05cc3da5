"""The verifier: how likely a cached question's answer is right for a new question, from features of the pair.

Cosine similarity alone cannot tell a paraphrase from a hard negative that shares most of its words ("the shares
rose 5%" / "the shares fell 5%"). The verifier looks at what such pairs differ in: content words of one side with
no close counterpart on the other (a token-level alignment on the static word vectors), content words not shared,
numbers, names, negations, and the length ratio. A logistic model over these features (``verifier.json``,
trained by ``benches/quality/cache_eval.py`` on the calibration half of the corpora only) turns them into a score
in [0, 1]; the thresholds that bound the error rate (``gateway.cache.decide``) are calibrated on that score.

A pair costs a few tens of microseconds (a small matrix product over the two sides' content words).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np
import orjson

from gateway.cache.embed import Encoded
from gateway.cache.guards import Features

FUNCTION_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "also",
        "said",
        "says",
        "say",
        "'s",
    ]
)

NAMES = (
    "cos",
    "align_min",
    "align_mean",
    "miss",
    "jaccard",
    "only_diff",
    "len_ratio",
    "numbers",
    "names",
    "negation",
    "cos_x_align",
)


class Side:
    """What the verifier keeps of one text: its sentence vector, its content words and their vectors."""

    __slots__ = ("content", "cvecs", "features", "n_words", "vec")

    def __init__(self, enc: Encoded, features: Features) -> None:
        keep = [i for i, w in enumerate(enc.words) if w not in FUNCTION_WORDS and any(c.isalnum() for c in w)]
        self.vec = enc.vec
        self.content = frozenset(enc.words[i] for i in keep)
        self.cvecs = enc.wvecs[keep] if keep else np.zeros((0, enc.wvecs.shape[1]), dtype=np.float32)
        self.n_words = sum(1 for w in enc.words if any(c.isalnum() for c in w))
        self.features = features


def pair_features(a: Side, b: Side) -> list[float]:
    cos = float(a.vec @ b.vec)
    if len(a.cvecs) and len(b.cvecs):
        s = a.cvecs @ b.cvecs.T
        ra, rb = s.max(1), s.max(0)
        align_min = float(min(ra.min(), rb.min()))
        align_mean = float((ra.mean() + rb.mean()) / 2)
        miss = float((1 - ra).sum() + (1 - rb).sum())
    else:
        align_min = align_mean = 1.0 if len(a.cvecs) == len(b.cvecs) else 0.0
        miss = float(len(a.cvecs) + len(b.cvecs))
    union = a.content | b.content
    only = a.content ^ b.content
    fa, fb = a.features, b.features
    la, lb = max(a.n_words, 1), max(b.n_words, 1)
    return [
        cos,
        align_min,
        align_mean,
        math.log1p(miss),
        len(a.content & b.content) / len(union) if union else 1.0,
        math.log1p(len(only)),
        min(la, lb) / max(la, lb),
        float(fa.numbers != fb.numbers),
        math.log1p(len(fa.names ^ fb.names)),
        float((fa.negations == 0) != (fb.negations == 0)),
        cos * align_min,
    ]


class Verifier:
    """``score(a, b)``: the trained logistic model's probability that ``a``'s answer is right for ``b``."""

    def __init__(self, model: dict[str, Any]) -> None:
        if tuple(model["features"]) != NAMES:
            raise ValueError("verifier.json was trained on other features: train it again")
        self.mean = np.asarray(model["mean"], dtype=np.float64)
        self.scale = np.asarray(model["scale"], dtype=np.float64)
        self.coef = np.asarray(model["coef"], dtype=np.float64)
        self.intercept = float(model["intercept"])

    def score_features(self, f: list[float]) -> float:
        z = float(((np.asarray(f) - self.mean) / self.scale) @ self.coef) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def score(self, a: Side, b: Side) -> float:
        return self.score_features(pair_features(a, b))

    @classmethod
    def shipped(cls) -> Verifier:
        raw = resources.files("gateway.cache").joinpath("verifier.json").read_bytes()
        return cls(orjson.loads(raw))
