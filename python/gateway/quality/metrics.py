"""Metrics: how an output is scored against an item's expected answer, each a number in [0, 1].

=============  ========================================================================================
type           scores 1 when
=============  ========================================================================================
exact          the output, stripped, equals ``expected``
normalised     equal after lower-casing, dropping punctuation, articles and extra whitespace
regex          ``pattern`` (or ``expected``) matches somewhere in the output
numeric        the output's final number is within ``tolerance`` (absolute) or ``rel_tolerance`` of expected
choice         the output's multiple-choice letter (``Answer: B``, ``(B)``, a lone ``B``) equals expected
json           the output is JSON valid against ``schema`` and equals ``expected`` on ``fields`` (all if absent)
contains       the output contains ``expected`` (or, for a list, ``any_of`` it / ``all_of`` with ``mode``)
embedding      cosine similarity to ``expected`` (the gateway's local embedding model) ≥ ``min_similarity``;
               without ``min_similarity`` the score is the similarity itself
judge          a judge model group rates the output 1-10 against ``rubric``; score = rating / 10
=============  ========================================================================================
"""

from __future__ import annotations

import re
import string
from typing import Any

import orjson

TYPES = ("exact", "normalised", "regex", "numeric", "choice", "json", "contains", "embedding", "judge")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FINAL = re.compile(
    r"(?:####|final answer\s*(?:is)?\s*:?|answer\s*(?:is)?\s*:)\s*\$?\s*(-?[\d,]*\.?\d+)", re.I
)
_CHOICE_SAID = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*\(?([A-J])\b")
_CHOICE_PAREN = re.compile(r"\(([A-J])\)", re.I)
_CHOICE_ALONE = re.compile(r"^\s*([A-J])(?:[.):]|\s*$)", re.M)
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]|rating\s*:?\s*(\d+(?:\.\d+)?)", re.I)


class MetricError(ValueError):
    pass


def check_metric(spec: dict[str, Any], where: str) -> None:
    """Refuse a metric spec that could never score (an unknown type, a judge without a group)."""
    kind = spec.get("type")
    if kind not in TYPES:
        raise MetricError(f"{where}: metric type must be one of {', '.join(TYPES)} (got {kind!r})")
    if kind == "judge" and not spec.get("group"):
        raise MetricError(f"{where}: a judge metric names the model group that judges (group: ...)")
    if kind == "regex":
        try:
            re.compile(str(spec.get("pattern", "")))
        except re.error as e:
            raise MetricError(f"{where}: bad regex: {e}") from None


def normalise(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", str(text).lower().translate(_PUNCT)).split())


def final_number(text: str) -> float | None:
    """The number an answer ends on: after ``####`` / ``final answer:`` when present, else the last one."""
    m = _FINAL.findall(text)
    raw = m[-1] if m else (_NUMBER.findall(text) or [None])[-1]
    if raw is None:
        return None
    try:
        return float(raw.replace(",", ""))
    except ValueError:
        return None


def choice_letter(text: str) -> str | None:
    """The letter an answer picks: ``answer (is): X`` first, then ``(x)``, then a letter alone on a line."""
    for pattern in (_CHOICE_SAID, _CHOICE_PAREN, _CHOICE_ALONE):
        m = pattern.search(text)
        if m:
            return m.group(1).upper()
    return None


def _json_doc(text: str) -> Any:
    t = text.strip()
    if t.startswith("```"):
        t = t.strip("`")
        t = t[t.find("\n") + 1 :] if "\n" in t else t
    try:
        return orjson.loads(t)
    except orjson.JSONDecodeError:
        i, j = t.find("{"), t.rfind("}")
        if 0 <= i < j:
            try:
                return orjson.loads(t[i : j + 1])
            except orjson.JSONDecodeError:
                return None
    return None


def _json_score(spec: dict[str, Any], text: str, expected: Any) -> float:
    doc = _json_doc(text)
    if doc is None:
        return 0.0
    schema = spec.get("schema")
    if schema is not None:
        from gateway._core import compile_schema

        if not compile_schema(orjson.dumps(schema)).is_valid(orjson.dumps(doc)):
            return 0.0
    if expected is None:
        return 1.0
    if not isinstance(expected, dict) or not isinstance(doc, dict):
        return float(doc == expected)
    fields = spec.get("fields") or list(expected)
    hits = sum(1 for f in fields if doc.get(f) == expected.get(f))
    return hits / len(fields) if fields else 1.0


def _embedding_score(spec: dict[str, Any], text: str, expected: Any) -> float:
    from gateway.cache.embed import shared

    emb = shared()
    a, b = emb.embed_many([text, str(expected)])
    sim = float(a @ b)
    floor = spec.get("min_similarity")
    return float(sim >= float(floor)) if floor is not None else max(0.0, min(1.0, sim))


def score(spec: dict[str, Any], text: str, expected: Any) -> float:
    """The score of ``text`` for an item (every type but ``judge``: see :func:`judge_messages`)."""
    kind = spec["type"]
    if kind == "exact":
        return float(text.strip() == str(expected).strip())
    if kind == "normalised":
        return float(normalise(text) == normalise(str(expected)))
    if kind == "regex":
        return float(re.search(str(spec.get("pattern") or expected), text, re.I | re.S) is not None)
    if kind == "numeric":
        got = final_number(text)
        if got is None or expected is None:
            return 0.0
        want = float(str(expected).replace(",", ""))
        tol = max(float(spec.get("tolerance", 1e-6)), abs(want) * float(spec.get("rel_tolerance", 0.0)))
        return float(abs(got - want) <= tol)
    if kind == "choice":
        return float(choice_letter(text) == str(expected).strip().upper())
    if kind == "json":
        return _json_score(spec, text, expected)
    if kind == "contains":
        options = expected if isinstance(expected, list) else [expected]
        low = text.lower()
        hits = [str(o).lower() in low for o in options]
        return float(all(hits) if spec.get("mode") == "all_of" else any(hits))
    if kind == "embedding":
        return _embedding_score(spec, text, expected)
    raise MetricError(f"metric {kind!r} is scored by a judge call, not locally")


JUDGE_PROMPT = """Please act as an impartial judge and rate the response to the user's question below.
Rubric: {rubric}
{reference}[Question]
{question}

[Response]
{answer}

Rate the response from 1 to 10, strictly in this format: "Rating: [[N]]"."""


def judge_messages(spec: dict[str, Any], question: str, answer: str, expected: Any) -> list[dict[str, str]]:
    ref = f"[Reference answer]\n{expected}\n\n" if expected else ""
    rubric = spec.get("rubric") or "helpfulness, correctness, depth and clarity"
    prompt = JUDGE_PROMPT.format(rubric=rubric, reference=ref, question=question, answer=answer)
    return [{"role": "user", "content": prompt}]


def judge_score(text: str) -> float | None:
    """A judge's reply → score in [0, 1], or None when it gave no rating."""
    m = _RATING.search(text)
    if not m:
        return None
    return max(0.0, min(1.0, float(m.group(1) or m.group(2)) / 10))
