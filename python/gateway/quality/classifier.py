"""The request-category classifier: a linear (softmax) model over the Rust core's category features (lower-cased
words, word pairs and byte 4-grams from the first 512 and last 256 characters of the prompt:
``rust/src/category.rs``), trained from the suites' inputs.

Inference is one pass in Rust (``_core.CategoryModel``: features, the sum of their int8 weight rows, the softmax,
with no feature list crossing into Python), bounded by the cut whatever the prompt's length. Training is NumPy over
the same features (``_core.category_features``). The confidence is the softmax probability of the top category:
below the group's ``min_confidence`` a request is treated as category-less (it goes to the default, strong model).

The features are the classifier's own, not the compliance scanners' (their byte n-grams see through obfuscation
and cost several times as much); a file trained under another version of them is refused at load.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway import _core

BITS = 15
HEAD = _core.CATEGORY_HEAD_CHARS  # characters read from the start of a prompt
TAIL = _core.CATEGORY_TAIL_CHARS  # and from its end

PROBE = "The quick brown fox asks: what is 12 + 30? Answer: 42. Ünïcödé ΣΩ 中文"


def features(text: str, bits: int = BITS, head: int = HEAD, tail: int = TAIL) -> list[int]:
    """The hashed feature occurrences of a prompt (what training and inference read of it)."""
    return _core.category_features(text, bits, head, tail)


def fingerprint(bits: int = BITS, head: int = HEAD, tail: int = TAIL) -> int:
    """A digest of the feature function's version and of what it makes of a fixed text (a long one, so the cut
    lengths count too): a classifier trained under other features would score garbage, so loading one is
    refused."""
    probe = PROBE + " filler" * 200 + " " + PROBE
    acc = _core.CATEGORY_FEATURES_VERSION
    for i, f in enumerate(sorted(features(probe, bits, head, tail))):
        acc = (acc + (i + 1) * f) % (1 << 61)
    return acc


class ClassifierError(ValueError):
    pass


class Classifier:
    """Categories from text: ``predict(text) -> (category, confidence)``."""

    __slots__ = ("b", "bits", "head", "labels", "model", "tail", "w")

    def __init__(
        self,
        labels: list[str],
        w: np.ndarray,
        b: np.ndarray,
        bits: int = BITS,
        head: int = HEAD,
        tail: int = TAIL,
    ) -> None:
        self.labels = labels
        self.w = np.ascontiguousarray(w, dtype=np.float32)  # (2**bits, K)
        self.b = np.asarray(b, dtype=np.float32)
        self.bits = bits
        self.head, self.tail = head, tail  # what training read of each text: inference reads the same
        self.model = _core.CategoryModel(self.w.astype("<f4").tobytes(), self.b.tolist(), bits, head, tail)

    def probs(self, text: str) -> np.ndarray:
        """The probability of every category (``labels`` order)."""
        return np.asarray(self.model.probs(text), dtype=np.float32)

    def predict(self, text: str) -> tuple[str, float]:
        p = self.probs(text)
        k = int(np.argmax(p))
        return self.labels[k], float(p[k])

    def predict_grouped(self, text: str, groups: np.ndarray, n_groups: int) -> tuple[str, float]:
        """The most probable category of the most probable *group* of categories (``groups[k]`` is category k's
        group, e.g. the model its routing-table row names), and that group's probability: categories the
        classifier cannot tell apart but that route alike still yield a confident route."""
        p = self.probs(text)
        mass = np.bincount(groups, weights=p, minlength=n_groups)
        g = int(np.argmax(mass))
        k = int(np.argmax(np.where(groups == g, p, -1.0)))
        return self.labels[k], float(mass[g])

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            w=self.w.astype(np.float16),
            b=self.b,
            labels=np.array(self.labels),
            bits=self.bits,
            head=self.head,
            tail=self.tail,
            fingerprint=fingerprint(self.bits, self.head, self.tail),
        )
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ClassifierError(f"classifier {path}: {e}") from None
        with z:
            cut = (int(z["head"]), int(z["tail"])) if {"head", "tail"} <= set(z.files) else None
            if (
                cut is None
                or "fingerprint" not in z.files
                or int(z["fingerprint"]) != fingerprint(int(z["bits"]), *cut)
            ):
                raise ClassifierError(
                    f"classifier {path} was trained on another version of the gateway's category features;"
                    " retrain it with `gateway bench train-classifier`"
                )
            return cls([str(x) for x in z["labels"]], z["w"].astype(np.float32), z["b"], int(z["bits"]), *cut)


def train(
    texts: Sequence[str],
    labels: Sequence[str],
    bits: int = BITS,
    epochs: int = 24,  # chosen on half A of the RouteLLM suites (trained on one part, scored on the other)
    lr: float = 20.0,
    l2: float = 1e-5,
    batch: int = 128,
    seed: int = 0,
) -> Classifier:
    """Softmax regression by mini-batch SGD over sparse hashed features (no dense design matrix)."""
    cats = sorted(set(labels))
    index = {c: i for i, c in enumerate(cats)}
    y = np.array([index[c] for c in labels])
    feats = [np.array(features(t, bits), dtype=np.int64) for t in texts]
    scale = np.array([1 / np.sqrt(max(1, len(f))) for f in feats], dtype=np.float32)
    k, d = len(cats), 1 << bits
    w = np.zeros((d, k), dtype=np.float32)
    b = np.zeros(k, dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = len(texts)
    for epoch in range(epochs):
        step = lr / (1 + epoch * 0.5)
        order = rng.permutation(n)
        for s in range(0, n, batch):
            ids = order[s : s + batch]
            z = np.stack([w[feats[i]].sum(axis=0) * scale[i] for i in ids]) + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(ids)), y[ids]] -= 1.0  # gradient of the loss wrt the logits
            g = p / len(ids)
            b -= step * g.sum(axis=0)
            for row, i in enumerate(ids):
                np.add.at(w, feats[i], -step * g[row] * scale[i])
            if l2:
                w *= 1 - step * l2
    return Classifier(cats, w, b, bits)


class RouteGroups:
    """Each category's route group for :meth:`Classifier.predict_grouped`: categories whose routing-table rows
    name the same model form one group; categories without a row form one more (the default's). A row with a
    ``min_chars`` sends its shorter prompts to the default, so a request's groups follow its length (``at``)."""

    __slots__ = ("default", "groups", "min_chars", "n")

    def __init__(self, labels: Sequence[str], q: Any) -> None:
        from gateway.quality.table import read_table

        rows: dict[str, str] = {}
        min_chars: dict[str, int] = {}
        default = q.default
        if q.table:
            doc = read_table(q.table)
            default = default or doc.get("default")
            for cat, row in (doc.get("categories") or {}).items():
                rows[str(cat)] = str(row.get("model") if isinstance(row, dict) else row)
                if isinstance(row, dict) and row.get("min_chars"):
                    min_chars[str(cat)] = int(row["min_chars"])
        rows.update(q.categories)
        for cat in q.categories:
            min_chars.pop(cat, None)
        names = sorted(set(rows.values()))
        index = {m: i for i, m in enumerate(names)}
        self.groups = np.array([index.get(rows.get(c, ""), len(names)) for c in labels], dtype=np.int64)
        minc = np.array([min_chars.get(c, 0) for c in labels], dtype=np.int64)
        self.min_chars = minc if minc.any() else None  # None: no row depends on the length
        self.default = index.get(str(default), len(names))
        self.n = len(names) + 1

    def at(self, chars: Callable[[], int]) -> np.ndarray:
        """The groups for a prompt of ``chars()`` characters (asked only when some row has a ``min_chars``)."""
        if self.min_chars is None:
            return self.groups
        return np.where(chars() >= self.min_chars, self.groups, self.default)
