"""A word-level prior folded into a hashed n-gram linear model's word slots (training only).

With a few dozen positives (openai-moderation's training half has 39 hateful texts) an n-gram model learns the
exact words it saw and nothing about the ones it did not. HateSonar's lexicon gives words a score before any of
our data is seen: ``hatesonar`` 0.1.0 on PyPI (MIT licence), a TF-IDF + L1 logistic regression trained on Davidson
et al.'s 25k labelled tweets (ICWSM 2017); per word, its hate coefficient minus the mean of the other two classes'
(offensive, neither), times its IDF, read from the package's ONNX graph.

A text's lexicon feature is the hashed features (presence / sqrt(distinct features), as the Rust scan computes
them) times the lexicon's words placed in their hashed word slots. It is an extra column next to the hashed
features in one logistic regression; being linear in those features, its learned weight folds back exactly into
the slots: the model still ships as one GWLM v3 class and the scan is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def word_slot(word: str, bits: int) -> int:
    """The hashed index of a word unigram (`for_each_feature` in rust/src/textnorm.rs)."""
    h = 0xCBF29CE484222325
    for c in word.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    h ^= 6 << 44
    return ((h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 17 & ((1 << bits) - 1)


def hatesonar_lexicon() -> dict[str, float]:
    """HateSonar's per-word hate weight (hate coefficient minus the others' mean, times IDF); non-zero words only."""
    import hatesonar
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(Path(hatesonar.__file__).parent / "model" / "model.onnx")).graph
    attrs = {(n.op_type, a.name): helper.get_attribute_value(a) for n in graph.node for a in n.attribute}
    pool = [s.decode() for s in attrs[("TfIdfVectorizer", "pool_strings")]]
    index = attrs[("TfIdfVectorizer", "ngram_indexes")]
    idf = numpy_helper.to_array(next(i for i in graph.initializer if i.name == "idfcst"))
    coef = np.asarray(attrs[("LinearClassifier", "coefficients")]).reshape(3, -1)  # hate, offensive, neither
    out = {}
    for word, i in zip(pool, index, strict=True):
        if coef[:, i].any():
            out[word] = float((coef[0, i] - coef[1:, i].mean()) * idf[i])
    return out


def slot_weights(lexicon: dict[str, float], bits: int) -> np.ndarray:
    """The lexicon as weights over the hashed features: each word's score in its word slot.

    A text's lexicon column is ``features @ slot_weights``: computed from the hashed features themselves, so a
    slot that a character n-gram of another text shares (hash collisions) counts in training as it will in the
    scan, and a learned column weight ``a`` folds back exactly as ``a * slot_weights``."""
    w = np.zeros(1 << bits)
    for word, x in lexicon.items():
        w[word_slot(word, bits)] += x
    return w
