"""Train and write the hashed n-gram linear models the Rust core loads (GWLM v3 files).

Features come from the Rust core itself (`gateway._core.normalize` and `hash_features`), so
training and serving see exactly the same numbers. Needs the `train` extra (scikit-learn).
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from gateway import _core

VERSION = 3  # GWLM format: distinct features of gateway._core.hash_features (byte 3-5-grams, words, bigrams)


def features(norms: Sequence[str], bits: int) -> csr_matrix:
    """Presence of each distinct feature / sqrt(distinct features), as `LinearModel::predict` computes it."""
    indptr, indices, data = [0], [], []
    for norm in norms:
        uniq = np.unique(np.asarray(_core.hash_features(norm, bits), dtype=np.int64))
        indices.extend(uniq.tolist())
        data.extend([1.0 / math.sqrt(max(len(uniq), 1))] * len(uniq))
        indptr.append(len(indices))
    return csr_matrix((data, indices, indptr), shape=(len(norms), 1 << bits), dtype=np.float64)


def fit(x: csr_matrix, y: np.ndarray, c: float, weights: np.ndarray | None = None) -> LogisticRegression:
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, solver="liblinear")
    model.fit(x, y, sample_weight=weights)
    return model


def cv_scores(
    x: csr_matrix,
    y: np.ndarray,
    c: float,
    folds: int = 5,
    seed: int = 0,
    weights: np.ndarray | None = None,
    groups: Sequence[str] | None = None,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold probabilities on the training split (for thresholds; never the test split).

    ``groups`` keeps near-duplicates in one fold (else the estimate is optimistic); ``strata`` (default ``y``)
    spreads each kind of example evenly over the folds."""
    out = np.zeros(len(y))
    g = np.asarray(groups if groups is not None else np.arange(len(y)).astype(str))
    s = strata if strata is not None else y
    for tr, va in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, s, g):
        w = weights[tr] if weights is not None else None
        out[va] = fit(x[tr], y[tr], c, w).predict_proba(x[va])[:, 1]
    return out


class Weights(NamedTuple):
    """One class's weights over the hashed features and its bias, when they are not a fitted model's own
    (scripts/word_prior.py folds extra columns back into the word slots)."""

    coef: np.ndarray
    bias: float


def quantize(model: LogisticRegression | Weights) -> tuple[float, float, bytes]:
    w, bias = (
        (model.coef, model.bias) if isinstance(model, Weights) else (model.coef_[0], model.intercept_[0])
    )
    scale = float(np.abs(w).max() / 127) or 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return float(bias), scale, q.tobytes()


def write(path: Path, bits: int, classes: Sequence[tuple[str, LogisticRegression | Weights]]) -> int:
    """Write a gzip-compressed GWLM v3 file; returns its size in bytes."""
    out = bytearray(b"GWLM" + struct.pack("<BBH", VERSION, bits, len(classes)))
    for name, model in classes:
        bias, scale, q = quantize(model)
        raw = name.encode()
        out += struct.pack("<B", len(raw)) + raw + struct.pack("<ff", bias, scale) + q
    data = gzip.compress(bytes(out), mtime=0)
    path.write_bytes(data)
    return len(data)


def threshold_at_fpr(benign_scores: Sequence[float], fpr: float) -> float:
    """Smallest threshold whose false-positive rate on `benign_scores` is at most `fpr`
    (a score >= threshold is flagged)."""
    s = sorted(benign_scores, reverse=True)
    allowed = math.floor(fpr * len(s))
    return float(np.nextafter(s[allowed], 1.0)) if allowed < len(s) else 0.0
