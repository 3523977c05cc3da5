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

import numpy as np
import pytest
import yaml

from gateway.config import parse_config
from gateway.quality.classifier import Classifier
from gateway.quality.table import QualityPolicy

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


@pytest.mark.benchmark(group="quality-table")
def test_choose_from_table(benchmark, tmp_path: Path) -> None:
    table = tmp_path / "t.yaml"
    table.write_text(
        yaml.safe_dump({"categories": {f"cat{i}": "small" if i % 2 else "big" for i in range(58)}})
    )
    cfg = parse_config(
        yaml.safe_dump(
            {
                "models": {
                    "auto": {
                        "strategy": "quality",
                        "quality": {"table": str(table)},
                        "deployments": [{"id": "big", "model": "big"}, {"id": "small", "model": "small"}],
                    }
                }
            }
        )
    )
    policy = QualityPolicy(cfg.models["auto"], cfg.models, {"big": 10.0, "small": 1.0})
    cats = [f"cat{random.Random(1).randrange(58)}" for _ in range(100)]
    benchmark(lambda: [policy.choose(c, 50.0) for c in cats])
