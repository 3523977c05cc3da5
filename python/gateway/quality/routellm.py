"""Suites and simulator answers from RouteLLM's per-item data (``shared/corpora/routellm``).

RouteLLM recorded, per item, whether GPT-4 (gpt-4-1106-preview, the strong model) and Mixtral-8x7B-Instruct (the
weak one) answered correctly: MMLU by subject (57 categories) and GSM8K (one). This writes:

- ``suites/<category>.yaml`` + ``.jsonl``: the items, each in split ``bench`` or ``held`` (a hash of the prompt:
  half of each category each), with metric ``choice`` (MMLU) or ``numeric`` (GSM8K);
- ``answers.jsonl``: for the simulator (``answers:`` in its profile): per item the right and a wrong answer and
  which model was correct, so a simulated model answers each item right or wrong as the real one did;
- ``simulator.yaml``: a simulator profile serving both models with those answers.

MMLU's files record correctness, not the answer letter: an item's letter is derived from its prompt's hash (any
fixed letter would do: only right-or-wrong is measured). GSM8K's answer comes from its test set; a model's
recorded reasoning is kept as the text before its final answer line (so output tokens are realistic). Prompts
RouteLLM lists as contaminated (overlapping its router's training data) are left out.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway.simulate.answers import prompt_key

STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct-v0.1"
_COLUMNS = {STRONG: "gpt-4-1106-preview", WEAK: "mistralai/Mixtral-8x7B-Instruct-v0.1"}
LETTERS = "ABCD"


def split_of(prompt: str) -> str:
    """``bench`` or ``held``: a fixed half of every category, from the prompt alone."""
    return (
        "bench"
        if hashlib.blake2b(prompt_key(prompt).encode(), digest_size=4).digest()[0] & 1 == 0
        else "held"
    )


def _contaminated(evals: Path) -> set[str]:
    out: set[str] = set()
    for f in evals.glob("*/contaminated_prompts.jsonl"):
        for line in f.read_bytes().splitlines():
            if line.strip():
                out.add(prompt_key(orjson.loads(line)["eval_prompt"]))
    return out


def load_items(corpus: Path) -> list[dict[str, Any]]:
    """Every usable item: category, prompt, expected, per-model correctness, right/wrong answer texts."""
    evals = corpus / "routellm" / "evals" if (corpus / "routellm").is_dir() else corpus
    skip = _contaminated(evals)
    items: list[dict[str, Any]] = []
    for f in sorted((evals / "mmlu" / "responses").glob("mmlu_*.csv")):
        cat = "mmlu_" + f.stem.removeprefix("mmlu_")
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                p = row["prompt"]
                key = prompt_key(p)
                if key in skip:
                    continue
                h = int(key, 16)
                gold = LETTERS[h % 4]
                wrong = LETTERS[(h % 4 + 1 + (h >> 8) % 3) % 4]
                items.append(
                    {
                        "category": cat,
                        "prompt": p,
                        "expected": gold,
                        "metric": {"type": "choice"},
                        "right": f"Answer: {gold}",
                        "wrong": f"Answer: {wrong}",
                        "correct": {m: row[c] == "True" for m, c in _COLUMNS.items()},
                        "text": {},
                    }
                )
    gold_by_q: dict[str, str] = {}
    for line in (evals / "gsm8k" / "test.jsonl").read_bytes().splitlines():
        if line.strip():
            d = orjson.loads(line)
            gold_by_q[prompt_key(d["question"])] = d["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
    with (evals / "gsm8k" / "gsm8k_responses.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            p = row["prompt"]
            key = prompt_key(p)
            if key in skip or key not in gold_by_q:
                continue
            gold = gold_by_q[key]
            wrong = (
                str(int(float(gold)) + 1 + int(key, 16) % 7) if re.fullmatch(r"-?\d+(\.\d+)?", gold) else "0"
            )
            # the recorded reasoning, with its digits at the end dropped so only the final line carries an answer
            texts = {
                m: re.sub(r"[\s\d.,$#]*$", "", row[f"{c}_response"].strip())[-1500:]
                for m, c in _COLUMNS.items()
            }
            items.append(
                {
                    "category": "gsm8k",
                    "prompt": p,
                    "expected": gold,
                    "metric": {"type": "numeric", "tolerance": 1e-6},
                    "right": f"Final answer: {gold}",
                    "wrong": f"Final answer: {wrong}",
                    "correct": {m: row[c] == "True" for m, c in _COLUMNS.items()},
                    "text": texts,
                }
            )
    return items


def write_corpus(corpus: Path, out: Path) -> dict[str, int]:
    items = load_items(corpus)
    suites = out / "suites"
    suites.mkdir(parents=True, exist_ok=True)
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_cat.setdefault(it["category"], []).append(it)
    with (out / "answers.jsonl").open("wb") as ans:
        for cat, rows in sorted(by_cat.items()):
            lines = []
            for i, it in enumerate(rows):
                key = prompt_key(it["prompt"])
                lines.append(
                    orjson.dumps(
                        {
                            "id": f"{cat}-{i}",
                            "input": it["prompt"],
                            "expected": it["expected"],
                            "split": split_of(it["prompt"]),
                        }
                    )
                )
                ans.write(
                    orjson.dumps(
                        {
                            "key": key,
                            "category": cat,
                            "right": it["right"],
                            "wrong": it["wrong"],
                            "correct": it["correct"],
                            "text": it["text"],
                        }
                    )
                    + b"\n"
                )
            (suites / f"{cat}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
            suite = {
                "category": cat,
                "metric": rows[0]["metric"],
                "max_tokens": 512,
                "items_file": f"{cat}.jsonl",
            }
            (suites / f"{cat}.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    profile = {
        "seed": 7,
        "auth": False,
        "answers": "answers.jsonl",
        "models": {
            STRONG: {"latency_ms": 40, "latency_jitter_ms": 10},
            WEAK: {"latency_ms": 20, "latency_jitter_ms": 5},
        },
    }
    (out / "simulator.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return {
        "items": len(items),
        "categories": len(by_cat),
        "bench": sum(split_of(i["prompt"]) == "bench" for i in items),
    }
