"""Benchmark-validated routing on RouteLLM's per-item data, replayed offline, and what no routing table can beat.

Run: .venv/bin/python benches/quality/routing_bounds.py [--table RUN/routing.yaml] [--check RUN/results.jsonl]

``routing_eval.py`` measures a routing table through a real gateway and simulator (minutes, under the machine
lock). This replays the same items through the same parts without the servers: the simulator's recorded answers,
its token counts and ``max_tokens`` cut (``gateway.simulate``), the gateway's price arithmetic
(``gateway.pricing.cost``, the eval's prices), the suites' metrics and MT-Bench's judge. ``--check`` compares the
replay with a gateway run's ``results.jsonl`` item by item; ``--table`` replays a routing table on the held-out
half (half B), with the eval's paired-bootstrap intervals.

Then the ceiling: the most cost any routing of a kind can save on half B while keeping 95% of the strong model's
quality there, chosen *in hindsight on half B itself* (an exact knapsack over categories):

- per category, all of it to one model (per-subject routing);
- per category, its prompts from some length on (a routing-table row with ``min_chars``: what the product routes);
- the same two chosen in hindsight on half A and applied to half B (what perfect fitting of the bench half buys);
- every category's true half-B quality gap known, the savings as the product predicts them from the prompt's
  length, and the cut in hindsight (what any estimate of a category's gap can reach at best);
- per item (the weak model wherever it scores as well as the strong one): no category routing comes near it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from gateway.config import Price  # noqa: E402
from gateway.pricing import cost  # noqa: E402
from gateway.quality.allocate import Obs, _line, allocate, apply  # noqa: E402
from gateway.quality.metrics import judge_messages, judge_score, score  # noqa: E402
from gateway.quality.routellm import JUDGE_MODEL, STRONG, WEAK, write_corpus  # noqa: E402
from gateway.quality.stats import bootstrap  # noqa: E402
from gateway.quality.suites import load_suites  # noqa: E402
from gateway.quality.table import prompt_chars  # noqa: E402
from gateway.simulate.engine import generate  # noqa: E402
from gateway.simulate.openai import parse_chat  # noqa: E402
from gateway.simulate.profiles import load_profile_file  # noqa: E402
from gateway.types import Usage  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "routellm"
PRICES = {"strong": Price(input=10, output=30), "weak": Price(input=0.6, output=0.6)}  # routing_eval's
UPSTREAM = {"strong": STRONG, "weak": WEAK}
TARGET = 0.95
SCALE = 10  # quality in tenths: MMLU and GSM8K score 0 or 1, MT-Bench's judge rates in tenths


@dataclass
class Item:
    category: str
    id: str
    split: str
    chars: int
    score: dict[str, float]
    cost: dict[str, float]


def replay(corpus_dir: Path) -> list[Item]:
    """Every item answered by both models as the simulator answers it through the gateway: score and cost."""
    if not (corpus_dir / "answers.jsonl").exists():
        write_corpus(CORPUS, corpus_dir)
    profiles = load_profile_file(corpus_dir / "simulator.yaml")
    answers = profiles.answers
    assert answers is not None
    items = []
    for suite in load_suites(corpus_dir / "suites"):
        for it in suite.items:
            sc: dict[str, float] = {}
            usd: dict[str, float] = {}
            for group, model in UPSTREAM.items():
                body = {"model": model, "messages": it.messages, "max_tokens": suite.max_tokens or 512}
                req = parse_chat(body)
                prof = profiles.get(model)
                text = answers.answer(model, req.last_user, prof.quality, profiles.seed)
                res = generate(req, prof, None if text is None else {"output": text})
                said = res.choices[0].text
                usd[group] = cost(Usage(res.prompt_tokens, res.completion_tokens), PRICES[group])
                metric = it.metric or suite.metric
                if metric["type"] == "judge":
                    prompt = judge_messages(metric, it.prompt(), said, it.expected)[0]["content"]
                    rating = answers.answer(JUDGE_MODEL, prompt, {}, profiles.seed)
                    r = judge_score(rating) if rating is not None else None
                    sc[group] = 0.0 if r is None else r
                else:
                    sc[group] = score(metric, said, it.expected)
            chars = prompt_chars(m.get("content") for m in it.messages)
            items.append(Item(it.category, it.id, it.split or "bench", chars, sc, usd))
    return items


def check(items: Sequence[Item], results: Path) -> dict[str, int]:
    """How many of a gateway run's scored answers (``results.jsonl``) the replay reproduces exactly."""
    by = {(i.category, i.id): i for i in items}
    n = same = 0
    for line in results.read_text().splitlines():
        r = json.loads(line)
        it = by.get((r["category"], r["item"]))
        if it is None or r.get("score") is None:
            continue
        n += 1
        m = r["model"]
        same += it.score[m] == r["score"] and abs(it.cost[m] - r["cost_usd"]) < 1e-9
    return {"results": n, "reproduced": same}


def measure(items: Sequence[Item], weak: Sequence[bool], intervals: bool = False) -> dict[str, Any]:
    """Cost saved vs always-strong and quality kept (routed / strong), as routing_eval computes them."""
    pairs = list(zip(items, weak, strict=True))

    def saved(ps: Sequence[Any]) -> float:
        base = sum(i.cost["strong"] for i, _ in ps)
        return 1 - sum(i.cost["weak" if w else "strong"] for i, w in ps) / base

    def kept(ps: Sequence[Any]) -> float:
        base = sum(i.score["strong"] for i, _ in ps)
        return sum(i.score["weak" if w else "strong"] for i, w in ps) / base

    out: dict[str, Any] = {
        "n": len(pairs),
        "cost_saved": round(saved(pairs), 4),
        "quality_kept": round(kept(pairs), 4),
    }
    if intervals:
        out["cost_saved_ci"] = [round(x, 4) for x in bootstrap(pairs, saved)]
        out["quality_kept_ci"] = [round(x, 4) for x in bootstrap(pairs, kept)]
    out["weak_share"] = round(sum(weak) / max(1, len(pairs)), 4)
    return out


def by_category(items: Sequence[Item]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        out[it.category].append(k)
    return out


Options = Callable[[Sequence[Item], list[int]], list[list[int]]]


def whole(items: Sequence[Item], idx: list[int]) -> list[list[int]]:
    """A category stays on strong or moves whole."""
    return [[], idx]


def from_length(items: Sequence[Item], idx: list[int]) -> list[list[int]]:
    """A category's prompts from some length on move (a table row's ``min_chars``), for every length it has."""
    order = sorted(idx, key=lambda k: -items[k].chars)
    return [[]] + [
        order[:n]
        for n in range(1, len(order) + 1)
        if n == len(order) or items[order[n]].chars != items[order[n - 1]].chars
    ]


def knapsack(items: Sequence[Item], options: Options, target: float = TARGET) -> list[bool]:
    """The cheapest routing of ``items`` keeping ``target`` of strong's quality, one option per category: an exact
    multiple-choice knapsack over the quality lost (integer tenths), maximising the cost saved."""
    loss = [round((i.score["strong"] - i.score["weak"]) * SCALE) for i in items]
    gain = [i.cost["strong"] - i.cost["weak"] for i in items]
    cap = int((1 - target) * sum(i.score["strong"] for i in items) * SCALE + 1e-9)
    groups = by_category(items)
    # a loss can be negative (the weak model right where the strong one was wrong): dp's index is shifted by them all
    shift = sum(max(0, -x) for x in loss)
    width = cap + shift + 1
    dp = np.full(width, -np.inf)
    dp[shift] = 0.0  # dp[shift + used loss] = best saving
    picks = []
    for idx in groups.values():
        opts = options(items, idx)
        new = np.full(width, -np.inf)
        arg = np.full(width, -1)
        for o, sel in enumerate(opts):
            lo, g = sum(loss[k] for k in sel), sum(gain[k] for k in sel)
            cand = np.full(width, -np.inf)
            if lo >= 0:
                cand[lo:] = dp[: width - lo] + g
            else:
                cand[: width + lo] = dp[-lo:] + g
            better = cand > new
            new[better], arg[better] = cand[better], o
        picks.append((opts, arg))
        dp = new
    weak = [False] * len(items)
    w = int(np.argmax(dp))
    for opts, arg in reversed(picks):
        sel = opts[arg[w]]
        for k in sel:
            weak[k] = True
        w -= sum(loss[k] for k in sel)
    return weak


def as_rows(items: Sequence[Item], weak: Sequence[bool]) -> dict[str, int]:
    """A routing chosen per item as table rows: per category the shortest prompt it moved (``min_chars``)."""
    rows: dict[str, int] = {}
    for it, w in zip(items, weak, strict=True):
        if w:
            rows[it.category] = min(rows.get(it.category, it.chars), it.chars)
    return rows


def by_rows(items: Sequence[Item], rows: dict[str, int]) -> list[bool]:
    return [it.category in rows and it.chars >= rows[it.category] for it in items]


def known_gaps(bench: Sequence[Item], held: Sequence[Item], target: float = TARGET) -> list[bool]:
    """Every category's half-B quality gap known exactly, each item's saving predicted from its prompt's length
    (a line per category fitted on half A, as the product's allocation does), the cut in hindsight."""
    lines = {}
    for cat, idx in by_category(bench).items():
        x = np.array([bench[k].chars for k in idx], dtype=np.float64)
        lines[cat] = _line(x, np.array([bench[k].cost["strong"] - bench[k].cost["weak"] for k in idx]))
    gap = {
        cat: float(np.mean([held[k].score["strong"] - held[k].score["weak"] for k in idx]))
        for cat, idx in by_category(held).items()
    }
    ratio = [
        gap[it.category] / max(1e-12, lines[it.category][0] + lines[it.category][1] * it.chars) for it in held
    ]
    order = sorted(range(len(held)), key=lambda k: ratio[k])
    allowed = (1 - target) * sum(i.score["strong"] for i in held)
    weak, best = [False] * len(held), [False] * len(held)
    used = 0.0
    for k in order:
        weak[k] = True
        used += held[k].score["strong"] - held[k].score["weak"]
        if used <= allowed + 1e-9:
            best = list(weak)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", help="where the imported corpus is written (default: a temporary directory)")
    ap.add_argument(
        "--table", help="a routing table (e.g. routing_eval's run/routing.yaml) to replay on half B"
    )
    ap.add_argument("--check", help="a gateway run's results.jsonl to compare the replay with")
    ap.add_argument("--json", default=str(ROOT / "benches" / "quality" / "routing_bounds_results.json"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="routing-bounds-"))
    items = replay(work / "corpus")
    bench = [i for i in items if i.split == "bench"]
    held = [i for i in items if i.split == "held"]
    out: dict[str, Any] = {"bench_items": len(bench), "held_items": len(held), "target_kept": TARGET}
    if args.check:
        out["check"] = check(items, Path(args.check))
    if args.table:
        rows = {
            c: int(r.get("min_chars") or 0)
            for c, r in (yaml.safe_load(Path(args.table).read_text())["categories"] or {}).items()
            if r.get("model") == "weak"
        }
        out["table_on_held"] = measure(held, by_rows(held, rows), intervals=True)
    obs = [Obs(i.category, i.chars, i.score, i.cost) for i in sorted(bench, key=lambda i: (i.category, i.id))]
    alloc = allocate(obs, "strong", TARGET)
    fitted = [apply(alloc.moves, Obs(i.category, i.chars, i.score, i.cost), "strong") == "weak" for i in held]
    out["product_allocation_on_held"] = measure(held, fitted, intervals=True) | {
        "aimed": round(alloc.aimed, 4)
    }
    # the same allocation blind to the prompt's length (one saving per category): per-subject routing
    flat = allocate([Obs(o.category, 0, o.score, o.cost) for o in obs], "strong", TARGET)
    whole_cats = [apply(flat.moves, Obs(i.category, 0, i.score, i.cost), "strong") == "weak" for i in held]
    out["per_subject_allocation_on_held"] = measure(held, whole_cats, intervals=True) | {
        "aimed": round(flat.aimed, 4)
    }
    out["all_weak_on_held"] = measure(held, [True] * len(held))
    out["per_item_oracle_on_held"] = measure(held, [i.score["weak"] >= i.score["strong"] for i in held])
    bounds: dict[str, Any] = {}
    for name, opts in (("per_category", whole), ("per_category_min_chars", from_length)):
        bounds[f"{name}_hindsight_on_held"] = measure(held, knapsack(held, opts))
        on_bench = knapsack(bench, opts)
        bounds[f"{name}_hindsight_on_bench"] = measure(bench, on_bench)
        bounds[f"{name}_chosen_on_bench_applied_to_held"] = measure(
            held, by_rows(held, as_rows(bench, on_bench))
        )
    bounds["true_category_gaps_min_chars_on_held"] = measure(held, known_gaps(bench, held))
    out["bounds"] = bounds
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
