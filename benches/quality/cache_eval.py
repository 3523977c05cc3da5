"""Semantic cache quality on third-party paraphrase pairs: false hits and hit rate, per maximum error rate δ.

Run: .venv/bin/python benches/quality/cache_eval.py [--write-calibration] [--json OUT]

Corpora (../shared/corpora): ``msrp`` (Microsoft Research Paraphrase Corpus, ~3,600 news sentence pairs labelled
paraphrase / not; the negatives share most of their words) and ``gptcache-mock-pairs`` (999 paraphrase pairs,
positives only: its false hits come from retrieving another item's question).

Protocol, per corpus: the pairs are split in two halves by a hash of their ids (the code and thresholds were
never tuned on half B). In a half, the first sentence of every pair is a cached question and the second a new
request: its nearest cached question (exact search, all-MiniLM-L6-v2 embeddings, the gateway's own Embedder) is
served when the guards find no difference and the similarity reaches the threshold. A served answer is wrong
unless the neighbour is the request's own pair and the pair is labelled a paraphrase.

- calibrate: the (similarity, correct) evidence of half A of both corpora → ``gateway.cache.decide.Pooled`` →
  one threshold per δ (the lowest t whose one-sided 95% Wilson upper bound of the error among served ≥ t is ≤ δ).
  ``--write-calibration`` ships these counts as python/gateway/cache/calibration.json (the gateway's prior).
- report on half B: false-hit rate = wrong served / served (95% Wilson interval), the share of all requests
  answered wrongly, and the hit rate on true paraphrases = right served / paraphrase requests. Static thresholds
  0.8 (GPTCache's default) and 0.9 on the same embeddings, without guards, side by side, and with guards.

Confounds: MSRP sentences are news, not chat prompts; gptcache-mock-pairs has no hard negatives; the evaluation is
offline (the pooled calibration; the online per-entry learning only adds evidence on top of it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import pathlib
import random
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads (see gateway/cache/__init__.py)

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPORA = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT / "python"))

from gateway.cache.decide import Pooled, wilson_interval  # noqa: E402
from gateway.cache.embed import Embedder  # noqa: E402
from gateway.cache.guards import Features, veto  # noqa: E402

DELTAS = (0.01, 0.02, 0.05)
STATIC = (0.8, 0.9)


def load_msrp() -> list[tuple[str, str, str, bool]]:
    out = []
    with open(CORPORA / "msrp" / "msr-para-train.tsv", encoding="utf-8-sig") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 5 or row[0] not in ("0", "1"):
                continue
            out.append((f"{row[1]}-{row[2]}", row[3], row[4], row[0] == "1"))
    return out


def load_gptcache() -> list[tuple[str, str, str, bool]]:
    data = json.loads((CORPORA / "gptcache-mock-pairs" / "mock_data.json").read_text())
    return [(f"g{i}", d["origin"], d["similar"], True) for i, d in enumerate(data)]


def half(pair_id: str) -> str:
    return "A" if hashlib.sha256(pair_id.encode()).digest()[0] < 128 else "B"


def evidence(pairs, emb: dict[str, np.ndarray]):
    """Per request: (similarity to its nearest cached question, correct if served, vetoed by the guards)."""
    cached = [p[1] for p in pairs]
    m = np.stack([emb[t] for t in cached])
    feats = [Features(t) for t in cached]
    out = []
    for j, (_, _, q, label) in enumerate(pairs):
        sims = m @ emb[q]
        i = int(np.argmax(sims))
        correct = label and (i == j or cached[i] == cached[j])
        out.append((float(sims[i]), bool(correct), veto(feats[i], Features(q)) is not None, label))
    return out


def report(ev, threshold: float, guards: bool) -> dict:
    served = [(s, c) for s, c, v, _ in ev if s >= threshold and not (guards and v)]
    wrong = sum(1 for _, c in served if not c)
    para = sum(1 for *_, label in ev if label)
    right = len(served) - wrong
    lo, hi = wilson_interval(wrong, len(served))
    return {
        "threshold": round(threshold, 3),
        "requests": len(ev),
        "served": len(served),
        "wrong": wrong,
        "false_hit_rate": wrong / len(served) if served else 0.0,
        "false_hit_ci95": [lo, hi],
        "wrong_per_request": wrong / len(ev),
        "paraphrase_requests": para,
        "hit_rate_on_paraphrases": right / para if para else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-calibration", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--vectors", help="keep the embeddings in this .npz file and reuse them on the next run")
    ap.add_argument(
        "--max-pairs", type=int, default=0, help="embed at most this many pairs (a uniform sample)"
    )
    args = ap.parse_args()
    corpora = {"msrp": load_msrp(), "gptcache-mock-pairs": load_gptcache()}
    embedder = Embedder()
    # Pairs in a fixed random order, both sentences together, embedded in length-sorted batches and saved as they
    # go: a run cut short (or --max-pairs) leaves a uniform sample of pairs, reported with its size.
    order = [(name, p) for name, pairs in corpora.items() for p in pairs]
    random.Random(7).shuffle(order)
    saved = pathlib.Path(args.vectors) if args.vectors else None
    emb: dict[str, np.ndarray] = {}
    if saved is not None and saved.exists():
        data = np.load(saved, allow_pickle=False)
        emb = dict(zip(data["texts"].tolist(), data["vecs"], strict=True))
    t0, done = time.perf_counter(), 0
    for start in range(0, len(order), 32):
        chunk = [t for _, p in order[start : start + 32] for t in (p[1], p[2]) if t not in emb]
        chunk = sorted(set(chunk), key=len)
        for i in range(0, len(chunk), 32):
            batch = chunk[i : i + 32]
            emb.update(zip(batch, embedder.embed_many(batch), strict=True))
            done += len(batch)
        if saved is not None and chunk and (start // 32) % 10 == 9:
            np.savez(saved, texts=np.array(list(emb)), vecs=np.stack(list(emb.values())))
        if args.max_pairs and start + 32 >= args.max_pairs:
            break
    took = time.perf_counter() - t0
    if done:
        print(f"embedded {done} sentences in {took:.1f}s ({done / took:.1f}/s, length-sorted batches of 32)")
    if saved is not None:
        np.savez(saved, texts=np.array(list(emb)), vecs=np.stack(list(emb.values())))
    corpora = {name: [p for p in pairs if p[1] in emb and p[2] in emb] for name, pairs in corpora.items()}
    took = took if done else float("nan")

    ev = {
        (name, h): evidence([p for p in pairs if half(p[0]) == h], emb)
        for name, pairs in corpora.items()
        for h in "AB"
    }
    pooled = Pooled()
    for name in corpora:
        for s, c, v, _ in ev[(name, "A")]:
            if not v:
                pooled.add(s, c)
    if args.write_calibration:
        out = ROOT / "python" / "gateway" / "cache" / "calibration.json"
        out.write_bytes(pooled.to_json())
        print(f"wrote {out.relative_to(ROOT)} ({sum(pooled.total)} pairs of half A)")
    results: dict = {"embed_per_s": done / took if done else None, "corpora": {}}
    for name, _pairs in corpora.items():
        b = ev[(name, "B")]
        rows = {}
        for d in DELTAS:
            rows[f"learned delta={d:.0%}"] = report(b, pooled.threshold(d), guards=True)
        for t in STATIC:
            rows[f"static {t}"] = report(b, t, guards=False)
            rows[f"static {t} + guards"] = report(b, t, guards=True)
        results["corpora"][name] = {
            "pairs_half_A": len(ev[(name, "A")]),
            "pairs_half_B": len(b),
            "rows": rows,
        }
        print(
            f"\n{name}: calibrated on half A ({len(ev[(name, 'A')])} pairs, both corpora pooled), "
            f"reported on half B ({len(b)} requests, {rows[next(iter(rows))]['paraphrase_requests']} paraphrases)"
        )
        print(
            f"{'policy':24} {'thresh':>6} {'served':>6} {'wrong':>5} {'false-hit rate (95% CI)':>28} "
            f"{'wrong/req':>9} {'hit rate on paraphrases':>24}"
        )
        for label, r in rows.items():
            lo, hi = r["false_hit_ci95"]
            print(
                f"{label:24} {r['threshold']:6.3f} {r['served']:6d} {r['wrong']:5d} "
                f"{r['false_hit_rate']:10.2%} [{lo:6.2%}, {hi:6.2%}]   {r['wrong_per_request']:9.2%} "
                f"{r['hit_rate_on_paraphrases']:24.1%}"
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
