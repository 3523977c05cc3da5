"""Distil the semantic cache's static embedder from all-MiniLM-L6-v2, the model2vec way.

Every token of MiniLM's vocabulary goes once through the full model (``[CLS] token [SEP]``, mean-pooled), the
30,522 vectors are reduced to ``DIM`` dimensions by PCA, and each is weighted by smooth inverse frequency (SIF),
with the token's frequency estimated from its rank in the vocabulary (WordPiece vocabularies are ordered by
frequency, as model2vec assumes). At run time a sentence is the mean of its tokens' rows: no transformer at all.

    python -m gateway.cache.distil [--out PATH]

Deterministic (same weights, same order, eigenvector signs fixed); a few minutes on one core, run once by
``scripts/setup.sh`` and otherwise by the first worker that needs the table (others wait on a file lock). The
result (~31 MB) is kept outside the repository, at ``gateway.cache.embed.table_path()``.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

log = logging.getLogger("gateway.cache")

SIF = 1e-4  # model2vec's SIF coefficient: weight = a / (a + p(token))
BATCH = 512


def distil(out: Path, dim: int, version: int) -> None:
    from gateway.cache.minilm import MiniLM, model_dir

    t0 = time.perf_counter()
    teacher = MiniLM()
    v = teacher.word.shape[0]
    cls, sep = teacher.tok.token_to_id("[CLS]"), teacher.tok.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise RuntimeError("the teacher's tokenizer has no [CLS]/[SEP]")
    x = np.empty((v, teacher.hidden), dtype=np.float64)
    for start in range(0, v, BATCH):
        ids = [[cls, t, sep] for t in range(start, min(v, start + BATCH))]
        x[start : start + len(ids)] = teacher.forward(ids, normalize=False)
    x -= x.mean(0)
    evals, evecs = np.linalg.eigh(x.T @ x)
    top = evecs[:, np.argsort(evals)[::-1][:dim]]
    top *= np.sign(top[np.abs(top).argmax(0), np.arange(dim)])  # fixed signs: the same table on every machine
    y = x @ top
    p = 1.0 / np.arange(2, v + 2)
    p /= p.sum()
    y *= (SIF / (SIF + p))[:, None]
    tokenizer = (model_dir() / "tokenizer.json").read_text()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, vectors=y.astype(np.float32), tokenizer=np.array(tokenizer), version=np.array(version))
    tmp.replace(out)  # atomic: a reader sees the whole table or none
    log.warning("cache: distilled the static embedder in %.0f s into %s", time.perf_counter() - t0, out)


def main() -> None:
    from gateway.cache import embed

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help=f"default: {embed.table_path()}")
    ap.add_argument("--force", action="store_true", help="distil again even if the table exists")
    args = ap.parse_args()
    out = args.out or embed.table_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    # several checkouts set up at once distil the table once: the others wait here, then find it made
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists() and not args.force:
            print(f"{out} exists")
            return
        logging.basicConfig(level=logging.INFO)
        distil(out, embed.DIM, embed.VERSION)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
