"""Micro-benchmarks of the ``quality`` strategy's request-path work: inferring a category with the classifier
(the core's category features + NumPy gather over 58 categories) and choosing the deployment from the routing table.

Run:  .venv/bin/pytest benches/test_bench_quality.py --benchmark-enable --benchmark-group-by=group \\
          --benchmark-columns=min,median,mean,ops,rounds

The classifier is trained here on synthetic text for 58 categories with the shipped feature size (2**15 buckets),
so the benchmark needs no corpus; its cost depends on the prompt's length (only the first 512 and last 256
characters are read) and the number of categories, not on what it learned.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gateway.config import QualityRouting, parse_config
from gateway.quality.classifier import Classifier, RouteGroups
from gateway.quality.table import QualityPolicy, prompt_chars

PROMPT = (
    'What is true for a type-Ia ("type one-a") supernova?\nA. This type occurs in binary systems.\n'
    "B. This type occurs in young galaxies.\nC. This type produces gamma-ray bursts.\n"
    "D. This type produces high amounts of X-rays.\nAnswer:"
)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    rng = np.random.default_rng(0)
    labels = [f"cat{i}" for i in range(58)]
    w = rng.normal(0, 0.1, size=(1 << 15, 58)).astype(np.float32)
    return Classifier(labels, w, np.zeros(58, dtype=np.float32))


@pytest.mark.benchmark(group="quality-category")
def test_classify_mmlu_prompt(benchmark, classifier: Classifier) -> None:
    groups = np.array([i % 2 for i in range(58)], dtype=np.int64)
    cat, conf = benchmark(classifier.predict_grouped, PROMPT, groups, 3)
    assert cat.startswith("cat") and 0 <= conf <= 1


@pytest.mark.benchmark(group="quality-category")
def test_classify_long_prompt(benchmark, classifier: Classifier) -> None:
    text = PROMPT * 20  # ~5 KB: only the first 512 and the last 256 characters are read
    groups = np.zeros(58, dtype=np.int64)
    benchmark(classifier.predict_grouped, text, groups, 1)


def table_policy(tmp_path: Path, rows: dict[str, Any]) -> tuple[QualityPolicy, list[str]]:
    """A quality group over a big and a small deployment routed by ``rows``, and 100 categories to ask about."""
    table = tmp_path / "t.yaml"
    table.write_text(yaml.safe_dump({"categories": rows}))
    group = {
        "strategy": "quality",
        "quality": {"table": str(table)},
        "deployments": [{"id": "big", "model": "big"}, {"id": "small", "model": "small"}],
    }
    cfg = parse_config(yaml.safe_dump({"models": {"auto": group}}))
    rng = random.Random(1)
    cats = [f"cat{rng.randrange(58)}" for _ in range(100)]
    return QualityPolicy(cfg.models["auto"], cfg.models, {"big": 10.0, "small": 1.0}), cats


@pytest.mark.benchmark(group="quality-table")
def test_choose_from_table(benchmark, tmp_path: Path) -> None:
    policy, cats = table_policy(tmp_path, {f"cat{i}": "small" if i % 2 else "big" for i in range(58)})
    benchmark(lambda: [policy.choose(c, 50.0) for c in cats])


@pytest.mark.benchmark(group="quality-table")
def test_choose_from_cost_aware_table(benchmark, tmp_path: Path) -> None:
    """Rows with ``min_chars`` (a cost-aware proposal): the prompt's characters are counted and compared."""
    rows = {f"cat{i}": {"model": "small", "min_chars": 400} if i % 2 else "big" for i in range(58)}
    policy, cats = table_policy(tmp_path, rows)
    contents = [PROMPT]
    benchmark(lambda: [policy.choose(c, 50.0, chars=lambda: prompt_chars(contents)) for c in cats])


@pytest.mark.benchmark(group="quality-category")
def test_route_groups_at_a_prompts_length(benchmark, tmp_path: Path) -> None:
    """The classifier's route groups when rows have ``min_chars``: one comparison per category."""
    table = tmp_path / "t.yaml"
    rows = {f"cat{i}": {"model": "small", "min_chars": 100 * i} if i % 2 else "big" for i in range(58)}
    table.write_text(yaml.safe_dump({"default": "big", "categories": rows}))
    q = QualityRouting(table=str(table))
    rg = RouteGroups([f"cat{i}" for i in range(58)], q)
    groups = benchmark(rg.at, lambda: prompt_chars([PROMPT]))
    assert len(groups) == 58
