"""Recorded answers: the simulator answers known evaluation items right or wrong as a real model did.

A profile's ``answers: FILE`` (JSONL) lists items, one a line::

    {"key": "<prompt key>", "category": "mmlu_astronomy", "right": "Answer: B", "wrong": "Answer: C",
     "correct": {"gpt-4-1106-preview": true, "mixtral-8x7b-instruct": false}, "text": {"gpt-4-...": "..."}}

A graded item (MT-Bench) has ``by_model`` instead: each model's recorded answer, verbatim (``"*"``: any model's,
e.g. a judge's rating of one of those answers, keyed by the judge prompt). ``key`` is :func:`prompt_key` of the
item's last user message. When a request's last user message is a known
item, the model answers with ``right`` if the data records it as correct, else ``wrong`` (``text`` may hold a
model's own recorded wording, used before the final answer line). A ``quality`` entry for the item's category in
the model's profile (e.g. patched at run time through ``/_sim/models/{model}``) overrides the record: the model is
then right with that probability, drawn deterministically per (seed, model, item).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson


def prompt_key(text: str) -> str:
    """A stable key of a prompt: whitespace-insensitive, 16 hex digits."""
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=8).hexdigest()


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from its parts."""
    h = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class Answers:
    """The recorded answers of a profile, by prompt key."""

    __slots__ = ("items",)

    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items

    @classmethod
    def load(cls, path: str | Path) -> Answers:
        items: dict[str, dict[str, Any]] = {}
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                    items[str(row["key"])] = row
                except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: not an answers row ({e})") from None
        return cls(items)

    def answer(self, model: str, last_user: str, quality: dict[str, float], seed: int) -> str | None:
        """The model's answer to a known item, or None when the prompt is not one."""
        row = self.items.get(prompt_key(last_user))
        if row is None:
            return None
        by_model = row.get("by_model")
        if by_model is not None:  # a graded item: each model's own recorded answer (or any model's: "*")
            text = by_model.get(model, by_model.get("*"))
            return None if text is None else str(text)
        category = row.get("category", "")
        correct = row.get("correct") or {}
        if category in quality:
            right = _unit(seed, model, row["key"]) < quality[category]
        elif model in correct:
            right = bool(correct[model])
        else:
            right = _unit(seed, model, row["key"]) < quality.get("default", 1.0)
        final = row["right"] if right else row["wrong"]
        prose = (row.get("text") or {}).get(model)
        return f"{prose}\n{final}" if prose else final
