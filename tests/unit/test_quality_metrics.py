"""Bench metrics and intervals."""

from __future__ import annotations

import pytest

from gateway.quality.metrics import MetricError, check_metric, choice_letter, final_number, judge_score, score
from gateway.quality.stats import bootstrap, mean_interval, percentile, wilson


@pytest.mark.parametrize(
    ("spec", "text", "expected", "want"),
    [
        ({"type": "exact"}, " Paris ", "Paris", 1.0),
        ({"type": "exact"}, "paris", "Paris", 0.0),
        ({"type": "normalised"}, "The  Paris!", "paris", 1.0),
        ({"type": "regex", "pattern": r"\b4[0-9]\b"}, "it is 42.", None, 1.0),
        ({"type": "regex"}, "nothing", r"\d+", 0.0),
        ({"type": "numeric"}, "so 9 * $2 = $18.\nFinal answer: 18", "18", 1.0),
        ({"type": "numeric"}, "#### 1,234", "1234", 1.0),
        ({"type": "numeric"}, "the answer is 17", "18", 0.0),
        ({"type": "numeric", "rel_tolerance": 0.1}, "answer: 19", "18", 1.0),
        ({"type": "choice"}, "Answer: C", "C", 1.0),
        ({"type": "choice"}, "(b) because", "B", 1.0),
        ({"type": "choice"}, "Answer: A", "C", 0.0),
        ({"type": "contains"}, "We ship on Monday.", ["monday", "tuesday"], 1.0),
        ({"type": "contains", "mode": "all_of"}, "We ship on Monday.", ["monday", "tuesday"], 0.0),
    ],
)
def test_score(spec: dict, text: str, expected: object, want: float) -> None:
    assert score(spec, text, expected) == want


def test_json_metric_schema_and_fields() -> None:
    spec = {
        "type": "json",
        "schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "fields": ["name", "year"],
    }
    assert score(spec, '```json\n{"name": "Ada", "year": 1815}\n```', {"name": "Ada", "year": 1815}) == 1.0
    assert score(spec, 'Sure: {"name": "Ada", "year": 1816}', {"name": "Ada", "year": 1815}) == 0.5
    assert score(spec, '{"name": 3}', {"name": "Ada"}) == 0.0  # schema-invalid
    assert score(spec, "not json", {"name": "Ada"}) == 0.0


def test_check_metric_refuses_what_cannot_score() -> None:
    with pytest.raises(MetricError, match="one of"):
        check_metric({"type": "bleu"}, "s")
    with pytest.raises(MetricError, match="group"):
        check_metric({"type": "judge"}, "s")
    with pytest.raises(MetricError, match="regex"):
        check_metric({"type": "regex", "pattern": "("}, "s")


def test_parsers() -> None:
    assert final_number("x 3 y 4") == 4.0 and final_number("none") is None
    assert choice_letter("I think the answer is D.") == "D"
    assert judge_score("Rating: [[7]]") == 0.7 and judge_score("great") is None


def test_intervals() -> None:
    lo, hi = wilson(45, 50)
    assert lo < 0.9 < hi and lo >= 0 and hi <= 1
    assert wilson(0, 0) == (0.0, 1.0)
    m, lo, hi = mean_interval([1.0, 0.0, 1.0, 1.0])
    assert m == 0.75 and lo < m < hi
    m, lo, hi = mean_interval([0.7, 0.8, 0.9])
    assert abs(m - 0.8) < 1e-9 and lo < m < hi
    assert percentile([1, 2, 3, 4], 50) == 2.5
    lo, hi = bootstrap(list(range(100)), lambda xs: sum(xs) / len(xs), n=200)
    assert lo < 49.5 < hi
