"""Train the output content classifier shipped in python/gateway/data/content.gwlm.gz.

One logistic model per category over the same hashed n-gram features as the injection scanner.
Third-party data only, train split only (benches/quality/compliance_data.py): the training half of
openai-moderation's dev-840, RealToxicityPrompts samples by attribute, HarmBench and Do-Not-Answer
(malicious uses as 'dangerous', hateful questions as 'hate'), and benign text (arena-hard prompts,
news/paraphrase sentences, BIPIA e-mails) as negatives. A threshold per category is chosen on
out-of-fold predictions of the training half (best F1, but flagging at most 1% of the real prompts and e-mails) and written
to content.json. Per category, the regularisation and how much the extra (prompt-like, not model-output) sets
weigh are chosen by the same cross-validation on the training half: for most categories the extra sets shift
the model away from what openai-moderation calls harmful.

For 'hate' the same cross-validation also chooses whether HateSonar's word lexicon is an extra column of the
logistic regression (scripts/word_prior.py), folded back into the word slots of the hashed table, so the file
format and the scan stay as they are.

Usage: .venv/bin/python scripts/train_content.py   (needs `pip install -e .[train]`)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benches" / "quality"), str(ROOT / "scripts")]

import compliance_data as cd  # noqa: E402
import linear_model as lm  # noqa: E402
import word_prior as wp  # noqa: E402
from scipy.sparse import csr_matrix, hstack  # noqa: E402

from gateway import _core  # noqa: E402

BITS = 17
# Candidates for (C, weight of every row that is not openai-moderation's: the extra labelled sets and the benign
# text), chosen per category by CV F1 on the training half's moderation rows.
GRID = [(4.0, 0.0), (16.0, 0.0), (4.0, 0.1), (16.0, 0.1), (4.0, 1.0)]
BENIGN_FPR = 0.01
# Categories for which the same CV also tries the lexicon column (scripts/word_prior.py) next to the n-grams.
LEXICON_CATEGORIES = {"hate"}
CATEGORIES = ["sexual", "sexual/minors", "hate", "harassment", "violence", "self-harm", "dangerous"]
DATA = ROOT / "python" / "gateway" / "data"


def best_f1_threshold(scores: np.ndarray, y: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """The threshold (at least `floor`) with the best F1."""
    best = (max(0.5, floor), 0.0)
    for t in np.unique(scores[scores >= floor]):
        pred = scores >= t
        tp = float((pred & (y == 1)).sum())
        if tp == 0:
            continue
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def main() -> None:
    if not cd.available():
        sys.exit(f"corpora not found at {cd.CORPORA}")
    mod = cd.moderation().train
    items: list[tuple[str, set[str], bool]] = [(r["prompt"], cd.labels(r), True) for r in mod]
    extra = cd.extra_content_train()
    items += [(t, cats, False) for t, cats in extra]
    # Real user prompts and e-mails: the text the false-positive budget is spent on.
    ordinary = cd.benign_prompts().train + cd.bipia_emails("train")
    # other_benign holds Do-Not-Answer's questions (not injections, but some are this filter's positives).
    labelled = {t for t, _ in extra}
    benign = ordinary + [t for t in cd.other_benign().train if len(t) > 40 and t not in labelled][:1500]
    items += [(t, set(), False) for t in benign]
    norms = [_core.normalize(t) for t, _, _ in items]
    x = lm.features(norms, BITS)
    # The lexicon's column (scripts/word_prior.py): the hashed features times the lexicon's word-slot weights.
    lexicon = wp.slot_weights(wp.hatesonar_lexicon(), BITS)
    x_lex = hstack([x, csr_matrix((x @ lexicon)[:, None])]).tocsr()
    is_mod = np.array([m for _, _, m in items])
    is_ordinary = np.zeros(len(items), dtype=bool)
    is_ordinary[len(items) - len(benign) : len(items) - len(benign) + len(ordinary)] = True
    models: list[tuple[str, lm.LogisticRegression | lm.Weights]] = []
    meta: dict = {"bits": BITS, "categories": {}}
    for cat in CATEGORIES:
        # a moderation row not labelled for the category is left out of its training and thresholds
        keep = np.ones(len(items), dtype=bool)
        if cat in cd.COLUMNS:
            keep[: len(mod)] = [cd.labelled(r, cat) for r in mod]
        xk, xk_lex, mod_k, ordinary_k = x[keep], x_lex[keep], is_mod[keep], is_ordinary[keep]
        y = np.array([int(cat in cats) for _, cats, _ in items])[keep]
        if y.sum() < 5:
            print(f"{cat}: too few positives ({int(y.sum())}), skipped")
            continue
        # Thresholds are picked on moderation rows only: they are what the filter sees in production
        # (model outputs), while the extra sets are prompts.
        sel = mod_k if y[mod_k].sum() >= 5 else np.ones_like(mod_k)
        # (f1, threshold, C, extra weight, lexicon)
        best: tuple[float, float, float, float, bool] | None = None
        grid = GRID if y[mod_k].sum() >= 5 else [(4.0, 1.0)]
        for lex in (False, True) if cat in LEXICON_CATEGORIES else (False,):
            xc = xk_lex if lex else xk
            for c, wx in grid:
                w = np.where(mod_k, 1.0, wx)
                oof = lm.cv_scores(xc, y, c, weights=w, strata=y * 2 + mod_k)
                # Most answers the filter sees are ordinary text, which moderation rows hardly hold: a threshold
                # picked on them never flags more than 1% of the real prompts and e-mails, whatever F1 it would
                # buy there. (A threshold picked on all rows already pays for the benign ones it flags.)
                floor = lm.threshold_at_fpr(oof[ordinary_k].tolist(), BENIGN_FPR) if sel is mod_k else 0.0
                t, f1 = best_f1_threshold(oof[sel], y[sel], floor)
                if cat in LEXICON_CATEGORIES:
                    print(f"  {cat}: lexicon {lex}, C {c}, extra weight {wx}: CV F1 {f1:.3f}", flush=True)
                if best is None or f1 > best[0]:
                    best = (f1, t, c, wx, lex)
        assert best is not None
        f1, t, c, wx, lex = best
        w = np.where(mod_k, 1.0, wx)
        model = lm.fit(xk_lex if lex else xk, y, c, w)
        if lex:
            coef = model.coef_[0]
            folded = coef[: 1 << BITS] + coef[-1] * lexicon  # the column's weight, back in the word slots
            models.append((cat, lm.Weights(folded, float(model.intercept_[0]))))
        else:
            models.append((cat, model))
        meta["categories"][cat] = {
            "positives": int(y.sum()),
            "rows": int(keep.sum()),
            "threshold": round(t, 4),
            "cv_f1": round(f1, 3),
            "C": c,
            "extra_weight": wx,
            "lexicon": lex,
        }
        print(
            f"{cat}: {int(y.sum())} positives, C {c}, extra weight {wx}, lexicon {lex}, "
            f"CV threshold {t:.3f}, CV F1 {f1:.3f}"
        )
    size = lm.write(DATA / "content.gwlm.gz", BITS, models)
    (DATA / "content.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {DATA / 'content.gwlm.gz'} ({size / 1024:.0f} KiB) and content.json")


if __name__ == "__main__":
    main()
