"""Semantic cache quality on third-party paraphrase pairs: false hits and hit rate, per maximum error rate δ.

Run: .venv/bin/python benches/quality/cache_eval.py [--write] [--json OUT]

Corpora (../shared/corpora): ``msrp`` (Microsoft Research Paraphrase Corpus, news sentence pairs labelled
paraphrase / not; its negatives share most of their words) and ``gptcache-mock-pairs`` (999 paraphrase pairs,
positives only: negatives are built by mismatching, see below).

Splits, by a hash of each pair's id: half A (calibration) and half B (the report; nothing was fitted or tuned on
it). Half A is split again into A1 and A2 for cross-fitting: a verifier (``gateway.cache.verify``) trained on A1
scores A2's requests and one trained on A2 scores A1's, so every calibration score comes from a verifier that never
saw that pair; the shipped verifier is trained on all of A. Protocol in a split, as the gateway does it: the first sentence of every pair is a cached
question, the second a new request; its K nearest cached questions by cosine similarity of the static embeddings
(``gateway.cache.embed``) at ≥ ``MIN_SIM``, minus those the guards veto, are scored by the verifier and the best is
served when its score reaches the threshold. A served answer is wrong unless it is the request's own pair and
the pair is a paraphrase (or the neighbour is a sentence that the corpus's own positive labels, joined through
shared sentences, make a paraphrase of the request: MSRP reuses sentences across pairs). gptcache-mock-pairs is
run twice: with every pair's question cached, and with the
request's own question withheld (a new question whose match is not cached: whatever is served is a false hit,
from the nearest other item).

- calibrate: A's candidate pairs (all top-K, labelled) → a logistic verifier (``--write``:
  python/gateway/cache/verifier.json); A's cross-fitted (score, correct) evidence → ``gateway.cache.decide.Pooled``
  → one threshold per δ by the fixed-sequence exact binomial test (``--write``: python/gateway/cache/calibration.json).
- report on B: false-hit rate = wrong served / served with its exact (Clopper-Pearson) 95% interval, and the hit
  rate on true paraphrases = right served / paraphrase requests. Side by side, on the same embeddings and the same
  nearest neighbour: static cosine thresholds 0.8 (GPTCache's default) and 0.9, with and without guards, and a
  threshold learned on cosine alone (no verifier) by the same test, and (never shipped) the verifier's threshold
  from the calibration half's point estimate without a confidence bound.

Confounds: MSRP sentences are news, not chat prompts; the guarantee holds for the mixture calibrated on (both
corpora pooled), so one corpus may sit above δ while the other sits below; the evaluation is offline (the pooled
calibration; online per-entry learning only adds evidence on top of it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads (see gateway/cache/__init__.py)

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPORA = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT / "python"))

from gateway.cache.decide import BIN, Pooled, clopper_pearson  # noqa: E402
from gateway.cache.embed import StaticEmbedder  # noqa: E402
from gateway.cache.guards import Features, veto  # noqa: E402
from gateway.cache.semantic import MIN_SIM, K  # noqa: E402
from gateway.cache.verify import NAMES, Side, Verifier, pair_features  # noqa: E402

DELTAS = (0.01, 0.02, 0.05)
STATIC = (0.8, 0.9)
Pair = tuple[str, str, str, bool]


def load_msrp() -> list[Pair]:
    out = []
    with open(CORPORA / "msrp" / "msr-para-train.tsv", encoding="utf-8-sig") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 5 or row[0] not in ("0", "1"):
                continue
            out.append((f"{row[1]}-{row[2]}", row[3], row[4], row[0] == "1"))
    return out


def load_gptcache() -> list[Pair]:
    data = json.loads((CORPORA / "gptcache-mock-pairs" / "mock_data.json").read_text())
    return [(f"g{i}", d["origin"], d["similar"], True) for i, d in enumerate(data)]


def split(pair_id: str) -> str:
    h = hashlib.sha256(pair_id.encode()).digest()
    return "B" if h[0] >= 128 else ("A1" if h[1] < 128 else "A2")


def paraphrase_classes(pairs: list[Pair]) -> dict[str, int]:
    """Sentences the corpus itself says are paraphrases of each other (positive pairs, joined through sentences
    they share, up to case and punctuation: MSRP reuses sentences across pairs, gptcache-mock-pairs repeats items):
    serving one for another is right, not a false hit."""
    parent: dict[str, str] = {}

    def norm(t: str) -> str:  # the same sentence up to case, spacing and punctuation
        return "".join(c for c in t.lower() if c.isalnum())

    def find(t: str) -> str:
        t = norm(t)
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for _, a, b, label in pairs:
        find(a), find(b)
        if label:
            parent[find(a)] = find(b)
    roots: dict[str, int] = {}
    return {t: roots.setdefault(find(t), len(roots)) for p in pairs for t in (p[1], p[2])}


class Run:
    """The requests of one split of one corpus, with each request's candidates (top-K, not vetoed)."""

    def __init__(
        self, pairs: list[Pair], sides: dict[str, Side], withhold: bool, same: dict[str, int]
    ) -> None:
        cached = [p[1] for p in pairs]
        m = np.stack([sides[t].vec for t in cached])
        self.requests: list[tuple[bool, list[tuple[list[float], bool]]]] = []
        for j, (_, _, q, label) in enumerate(pairs):
            sims = m @ sides[q].vec
            if withhold:
                sims[j] = -1.0
            cands = []
            for i in np.argsort(-sims)[:K]:
                if sims[i] < MIN_SIM or (withhold and cached[i] == cached[j]):
                    continue
                vetoed = veto(sides[cached[i]].features, sides[q].features) is not None
                # right: the request's own paraphrase, the same text, or one the corpus links to it by its labels
                correct = (cached[i] == q or same[cached[i]] == same[q]) and not (i == j and not label)
                f = pair_features(sides[cached[i]], sides[q])
                cands.append((f, correct, vetoed))
            self.requests.append((label and not withhold, cands))  # type: ignore[arg-type]

    def training_pairs(self) -> tuple[list[list[float]], list[int]]:
        x, y = [], []
        for _, cands in self.requests:
            for f, correct, vetoed in cands:  # type: ignore[misc]
                if not vetoed:
                    x.append(f)
                    y.append(int(correct))
        return x, y

    def decisions(self, verifier: Verifier | None, guards: bool) -> list[tuple[float, bool, bool]]:
        """Per request: (the best candidate's score, whether serving it is right, request is a paraphrase).
        Without a verifier the score is the cosine of the nearest candidate."""
        out = []
        for para, cands in self.requests:
            best: tuple[float, bool] | None = None
            for f, correct, vetoed in cands:  # type: ignore[misc]
                if guards and vetoed:
                    continue
                s = verifier.score_features(f) if verifier else f[0]
                if best is None or s > best[0]:
                    best = (s, correct)
                if verifier is None:
                    break  # the nearest one only
            out.append((best[0], best[1], para) if best else (-1.0, False, para))
        return out


def report(dec: list[tuple[float, bool, bool]], threshold: float) -> dict:
    served = [c for s, c, _ in dec if s >= threshold]
    wrong = sum(1 for c in served if not c)
    para = sum(1 for *_, p in dec if p)
    lo, hi = clopper_pearson(wrong, len(served))
    return {
        "threshold": round(threshold, 3),
        "requests": len(dec),
        "served": len(served),
        "wrong": wrong,
        "false_hit_rate": wrong / len(served) if served else 0.0,
        "false_hit_ci95": [lo, hi],
        "paraphrase_requests": para,
        "hit_rate_on_paraphrases": (len(served) - wrong) / para if para else 0.0,
    }


def point_threshold(pooled: Pooled, delta: float) -> float:
    """The lowest score whose calibration error rate (point estimate, no confidence bound) is ≤ δ: what the
    verifier could do if the calibration half were infinitely large. Reported for comparison, never shipped."""
    n = k = 0
    best = 1.01
    for b in range(len(pooled.total) - 1, -1, -1):
        n += pooled.total[b]
        k += pooled.wrong[b]
        if pooled.total[b] and n >= 30 and k / n <= delta:
            best = b * BIN
    return best


def calibration_top(pooled: Pooled, n_top: int) -> tuple[int, int]:
    """(pairs, wrong) among the ``n_top`` highest-scored calibration decisions (bin granularity)."""
    n = k = 0
    for b in range(len(pooled.total) - 1, -1, -1):
        n += pooled.total[b]
        k += pooled.wrong[b]
        if n >= n_top:
            break
    return n, k


def fit(x: list[list[float]], y: list[int]) -> dict:
    from sklearn.linear_model import LogisticRegression

    xa = np.asarray(x, dtype=np.float64)
    mean, scale = xa.mean(0), xa.std(0)
    scale[scale == 0] = 1.0
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((xa - mean) / scale, y)
    return {
        "features": list(NAMES),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": lr.coef_[0].tolist(),
        "intercept": float(lr.intercept_[0]),
        "trained_on": f"{len(y)} candidate pairs ({sum(y)} correct) of half A of msrp + gptcache-mock-pairs",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="ship verifier.json and calibration.json")
    ap.add_argument("--json")
    args = ap.parse_args()
    corpora = {"msrp": load_msrp(), "gptcache-mock-pairs": load_gptcache()}
    emb = StaticEmbedder()
    texts = sorted({t for pairs in corpora.values() for p in pairs for t in (p[1], p[2])})
    t0 = time.perf_counter()
    sides = {t: Side(emb.encode(t), Features(t)) for t in texts}
    took = time.perf_counter() - t0
    print(f"encoded {len(texts)} sentences in {took:.2f}s ({len(texts) / took:.0f}/s, with word vectors)")

    runs: dict[tuple[str, str], list[Run]] = {}
    for name, pairs in corpora.items():
        same = paraphrase_classes(pairs)
        for part in ("A1", "A2", "B"):
            sub = [p for p in pairs if split(p[0]) == part]
            runs[(name, part)] = [Run(sub, sides, withhold=False, same=same)]
            if name == "gptcache-mock-pairs":
                runs[(name, part)].append(Run(sub, sides, withhold=True, same=same))

    def training(parts: tuple[str, ...]) -> tuple[list[list[float]], list[int]]:
        x: list[list[float]] = []
        y: list[int] = []
        for name in corpora:
            for part in parts:
                for r in runs[(name, part)]:
                    xi, yi = r.training_pairs()
                    x += xi
                    y += yi
        return x, y

    # cross-fitting: each half of A is scored by a verifier trained on the other half only, so every calibration
    # score is out of sample; the shipped verifier is trained on all of A
    pooled, pooled_cos = Pooled(), Pooled()
    n_cal = 0
    for fit_on, score_on in (("A1", "A2"), ("A2", "A1")):
        fold = Verifier(fit(*training((fit_on,))))
        for name in corpora:
            for r in runs[(name, score_on)]:
                for s, c, _ in r.decisions(fold, guards=True):
                    if s >= 0:
                        pooled.add(s, c)
                        n_cal += 1
                for s, c, _ in r.decisions(None, guards=True):
                    if s >= 0:
                        pooled_cos.add(s, c)
    x, y = training(("A1", "A2"))
    model = fit(x, y)
    verifier = Verifier(model)
    thresholds = {d: pooled.threshold(d) for d in DELTAS}
    if args.write:
        pkg = ROOT / "python" / "gateway" / "cache"
        (pkg / "verifier.json").write_text(json.dumps(model, indent=1) + "\n")
        (pkg / "calibration.json").write_bytes(pooled.to_json())
        print(f"wrote verifier.json ({len(y)} pairs of A) and calibration.json ({n_cal} decisions of A)")
    print(
        f"verifier trained on {len(y)} candidate pairs of A ({sum(y)} correct); thresholds from {n_cal} "
        f"cross-fitted decisions of A: " + ", ".join(f"δ={d:.0%} → {t:.3f}" for d, t in thresholds.items())
    )
    top = {m: calibration_top(pooled, m) for m in (100, 300, 600)}
    print(
        "calibration half, highest-scored decisions: "
        + ", ".join(
            f"top {n}: {k} wrong ({k / n:.1%}, exact upper 95% {clopper_pearson(k, n, 0.90)[1]:.1%})"
            for n, k in top.values()
        )
    )
    results: dict = {
        "encode_per_s": len(texts) / took,
        "thresholds": thresholds,
        "calibration_decisions": n_cal,
        "calibration_top": {str(m): list(v) for m, v in top.items()},
        "corpora": {},
    }
    for name in [*corpora, "both"]:
        names = list(corpora) if name == "both" else [name]
        b = [r for n in names for r in runs[(n, "B")]]
        with_v = [d for r in b for d in r.decisions(verifier, guards=True)]
        near_g = [d for r in b for d in r.decisions(None, guards=True)]
        near = [d for r in b for d in r.decisions(None, guards=False)]
        rows = {}
        for d in DELTAS:
            rows[f"learned δ={d:.0%} (verifier)"] = report(with_v, thresholds[d])
        for d in DELTAS:
            rows[f"learned δ={d:.0%} (cosine)"] = report(near_g, pooled_cos.threshold(d))
        for d in DELTAS:
            rows[f"point est. δ={d:.0%} (verifier)"] = report(with_v, point_threshold(pooled, d))
        for t in STATIC:
            rows[f"static {t}"] = report(near, t)
            rows[f"static {t} + guards"] = report(near_g, t)
        paras = rows[next(iter(rows))]["paraphrase_requests"]
        results["corpora"][name] = {"requests_half_B": len(with_v), "paraphrases": paras, "rows": rows}
        print(f"\n{name}: half B, {len(with_v)} requests ({paras} paraphrases)")
        print(
            f"{'policy':28} {'thresh':>6} {'served':>6} {'wrong':>5} {'false-hit rate (95% CI)':>26} "
            f"{'hit rate on paraphrases':>24}"
        )
        for label, r in rows.items():
            lo, hi = r["false_hit_ci95"]
            print(
                f"{label:28} {r['threshold']:6.3f} {r['served']:6d} {r['wrong']:5d} "
                f"{r['false_hit_rate']:8.2%} [{lo:6.2%}, {hi:6.2%}] {r['hit_rate_on_paraphrases']:24.1%}"
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
