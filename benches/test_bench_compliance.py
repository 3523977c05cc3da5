"""Micro-benchmarks of the compliance scanners (goal: <= 50 us per KB), measured in one run.

Run:  make bench-micro   (or .venv/bin/pytest benches/test_bench_compliance.py --benchmark-enable)

Groups:
- injection-1k / injection-16k: InjectionScanner.scan (normalisation, base64/hex decoding, signatures over the
  text and its ROT13, the direct classifier) on arena-hard user prompts concatenated to 1 KiB / 16 KiB; the
  `indirect` rows score every ~400-byte window with the indirect model (tool results).
- content-1k: ContentScanner.scan (secrets, PII, canary, dangerous phrases, 6 text classes) on 1 KiB, and the
  streaming scan of the same KiB fed in 16-byte chunks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import _core
from gateway.compliance import models

ARENA = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "corpora"
    / "arena-hard-auto"
    / "arena-hard-v2.0"
    / "question.jsonl"
)


def text_of(size: int) -> str:
    if not ARENA.exists():
        pytest.skip(f"corpus not found: {ARENA}")
    out, n = [], 0
    for line in ARENA.read_text().split("\n"):
        if not line.strip():
            continue
        p = json.loads(line)["prompt"]
        out.append(p)
        n += len(p) + 1
        if n >= size:
            break
    return "\n".join(out).encode()[:size].decode(errors="ignore")


@pytest.mark.parametrize("size", [1024, 16384], ids=["1k", "16k"])
@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_injection_scan(benchmark, size, indirect):
    benchmark.group = f"injection-{size // 1024}k"
    scanner = models.injection_scanner()
    text = text_of(size)
    benchmark(scanner.scan, text, indirect)


def test_content_scan_1k(benchmark):
    benchmark.group = "content-1k"
    scanner = models.content_scanner()
    benchmark(scanner.scan, text_of(1024))


def test_content_stream_1k_in_16_byte_chunks(benchmark):
    benchmark.group = "content-1k"
    scanner = models.content_scanner()
    text = text_of(1024)
    chunks = [text[i : i + 16] for i in range(0, len(text), 16)]

    def run() -> None:
        st = _core.ContentStream(scanner)
        for c in chunks:
            st.feed(c)
        st.feed("", True)

    benchmark(run)
