"""Suites and simulator answers from RouteLLM's per-item data (``shared/corpora/routellm``).

RouteLLM recorded, per item, whether GPT-4 (gpt-4-1106-preview, the strong model) and Mixtral-8x7B-Instruct (the
weak one) answered correctly: MMLU by subject (57 categories) and GSM8K (one); and for MT-Bench (8 categories of
10 questions) both models' answers with GPT-4's 1-10 judgement of each (first turns are used: ``mtbench_*``
suites with the ``judge`` metric, judged by a ``judge`` model group). This writes:

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
    items += _mt_bench(evals / "mt_bench", skip)
    return items


JUDGE_MODEL = "gpt-4-judge"
_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)


def _mt_bench(d: Path, skip: set[str]) -> list[dict[str, Any]]:
    """MT-Bench's first turns (8 categories of 10 questions): each model answers with its recorded answer, and a
    judge (``JUDGE_MODEL``) rates it with GPT-4's recorded 1-10 score for that answer (the ``judge`` metric)."""
    from gateway.quality.metrics import judge_messages

    if not (d / "question.jsonl").exists():
        return []
    questions = {}
    for line in (d / "question.jsonl").read_bytes().splitlines():
        if line.strip():
            q = orjson.loads(line)
            questions[q["question_id"]] = q
    graded: dict[int, dict[str, tuple[str, float]]] = {}
    for line in (d / "judgements.jsonl").read_bytes().splitlines():
        if not line.strip():
            continue
        j = orjson.loads(line)
        model = {"gpt-4-1106-preview": STRONG, "mistralai/Mixtral-8x7B-Instruct-v0.1": WEAK}.get(j["model"])
        m = _ANSWER.search(j["user_prompt"])
        if j.get("turn") != 1 or model is None or m is None or j.get("score", -1) < 0:
            continue
        graded.setdefault(j["question_id"], {})[model] = (m.group(1).strip(), float(j["score"]))
    metric = {"type": "judge", "group": "judge"}
    out = []
    for qid, by in sorted(graded.items()):
        q = questions.get(qid)
        if q is None or len(by) < 2 or prompt_key(q["turns"][0]) in skip:
            continue
        prompt = q["turns"][0]
        judged = {
            prompt_key(judge_messages(metric, prompt, text, None)[0]["content"]): f"Rating: [[{score:g}]]"
            for text, score in by.values()
        }
        out.append(
            {
                "category": f"mtbench_{q['category']}",
                "prompt": prompt,
                "expected": None,
                "metric": metric,
                "by_model": {m: text for m, (text, _) in by.items()},
                "judged": judged,
                "correct": {m: score / 10 for m, (_, score) in by.items()},
            }
        )
    return out


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
                if "by_model" in it:  # graded: the models' answers, and the judge's rating of each
                    ans.write(orjson.dumps({"key": key, "category": cat, "by_model": it["by_model"]}) + b"\n")
                    for jkey, rating in it["judged"].items():
                        ans.write(
                            orjson.dumps({"key": jkey, "category": "judge", "by_model": {"*": rating}})
                            + b"\n"
                        )
                    continue
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
                "max_tokens": 2048 if "by_model" in rows[0] else 512,
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
            JUDGE_MODEL: {"latency_ms": 40, "latency_jitter_ms": 10},
        },
    }
    (out / "simulator.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return {
        "items": len(items),
        "categories": len(by_cat),
        "bench": sum(split_of(i["prompt"]) == "bench" for i in items),
    }
