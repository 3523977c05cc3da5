"""Micro-benchmarks of the Rust core against the Python peers, measured in the same run.

Run:  .venv/bin/pytest benches/test_bench_core.py --benchmark-enable --benchmark-group-by=group \
          --benchmark-columns=min,median,mean,ops,rounds
(disabled by default through `--benchmark-disable` in pyproject's addopts). Within each group the
table's "(x.xx)" multipliers are the ratios to the fastest row. Build the core with
`maturin develop --release` first: a debug build is 10-50x slower.

Groups:
- pii-1k / pii-16k: PiiScanner.scan vs presidio-analyzer's predefined pattern recognizers (Email,
  Phone, CreditCard, Iban, UsSsn, Ip; `.analyze(text, entities, nlp_artifacts=None)`, no NLP
  model) on prompts built from presidio-research sentences. `ours-6` scans the same 6 types,
  `ours-all` all 15 (incl. secrets).
- tokens-*: Tokenizer.count vs the tiktoken package's encode_ordinary (tiktoken's Encoding is
  built from the rank file shipped inside the tiktoken-rs crate: tiktoken would download it).
- schema: JsonSchema.is_valid(json_text) vs jsonschema (Python) and jsonschema-rs, all starting
  from the same JSON text (peers: json.loads + is_valid).
- ratelimit: RateLimiter.acquire of 3 limits (decisions per second = ops).
"""

from __future__ import annotations

import base64
import glob
import itertools
import json
import os
import types
from pathlib import Path

import pytest

from gateway._core import JsonSchema, PiiScanner, RateLimiter, Tokenizer

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
PRESIDIO_DATA = CORPORA / "presidio-research" / "synth_dataset_v2.json"
ARENA = CORPORA / "arena-hard-auto" / "arena-hard-v0.1" / "question.jsonl"
SIX = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]


def prompt_of(size: int) -> str:
    """Sentences of the presidio-research corpus, in order, up to `size` characters."""
    if not PRESIDIO_DATA.exists():
        pytest.skip(f"corpus not found: {PRESIDIO_DATA}")
    out, n = [], 0
    for record in json.loads(PRESIDIO_DATA.read_text()):
        out.append(record["full_text"])
        n += len(record["full_text"]) + 1
        if n >= size:
            break
    return "\n".join(out)[:size]


@pytest.fixture(scope="module")
def presidio():
    pa = pytest.importorskip("presidio_analyzer.predefined_recognizers")
    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    # tldextract would try to download the public suffix list; use its bundled snapshot.
    email_recognizer.tldextract = types.SimpleNamespace(extract=tldextract.TLDExtract(suffix_list_urls=()))
    recognizers = [
        pa.EmailRecognizer(),
        pa.PhoneRecognizer(),
        pa.CreditCardRecognizer(),
        pa.IbanRecognizer(),
        pa.UsSsnRecognizer(),
        pa.IpRecognizer(),
    ]

    def analyze(text):
        return [
            res
            for r in recognizers
            for res in r.analyze(text, r.supported_entities, nlp_artifacts=None) or []
        ]

    return analyze


@pytest.mark.parametrize("size", [1024, 16384], ids=["1k", "16k"])
@pytest.mark.parametrize("impl", ["ours-6", "ours-all", "presidio"])
def test_pii_scan(benchmark, presidio, impl, size):
    benchmark.group = f"pii-{size // 1024}k"
    text = prompt_of(size)
    if impl == "presidio":
        found = benchmark(presidio, text)
    else:
        scanner = PiiScanner(SIX if impl == "ours-6" else None)
        found = benchmark(scanner.scan, text)
    assert found


# --- tokens --------------------------------------------------------------------------------

O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@pytest.fixture(scope="module")
def tiktoken_o200k():
    tiktoken = pytest.importorskip("tiktoken")
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    files = sorted(glob.glob(str(cargo_home / "registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken")))
    if not files:
        pytest.skip("o200k_base.tiktoken not found in the cargo registry (build the Rust core first)")
    ranks = {}
    for line in Path(files[-1]).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=O200K_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    )


def arena_prompts() -> list[str]:
    if not ARENA.exists():
        pytest.skip(f"corpus not found: {ARENA}")
    return [json.loads(line)["prompt"] for line in filter(None, ARENA.read_text().split("\n"))]


@pytest.mark.parametrize("impl", ["ours", "tiktoken"])
@pytest.mark.parametrize("size", [1024, 16384], ids=["1k", "16k"])
def test_tokens_count(benchmark, tiktoken_o200k, impl, size):
    benchmark.group = f"tokens-{size // 1024}k"
    text = "\n\n".join(arena_prompts())[:size]
    tok = Tokenizer("o200k_base")
    fn = tok.count if impl == "ours" else (lambda t: len(tiktoken_o200k.encode_ordinary(t)))
    assert benchmark(fn, text) == len(tiktoken_o200k.encode_ordinary(text))


@pytest.mark.parametrize("impl", ["ours", "tiktoken"])
def test_tokens_batch_of_500_prompts(benchmark, tiktoken_o200k, impl):
    benchmark.group = "tokens-batch500"
    prompts = arena_prompts()
    tok = Tokenizer("o200k_base")
    if impl == "ours":
        counts = benchmark(tok.count_batch, prompts)
    else:
        counts = benchmark(lambda ps: [len(t) for t in tiktoken_o200k.encode_ordinary_batch(ps)], prompts)
    assert sum(counts) > 0


# --- JSON schema ---------------------------------------------------------------------------

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "customer", "items", "status"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^ord_[a-z0-9]{8}$"},
        "status": {"enum": ["pending", "paid", "shipped", "cancelled"]},
        "customer": {
            "type": "object",
            "required": ["name", "email"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "email": {"type": "string"},
                "vip": {"type": "boolean"},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "exclusiveMinimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                },
            },
        },
        "notes": {"type": ["string", "null"]},
    },
}
INSTANCE = json.dumps(
    {
        "id": "ord_12ab34cd",
        "status": "paid",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "vip": True},
        "items": [
            {"sku": f"SKU-{i}", "qty": i + 1, "price": 9.99 + i, "tags": ["a", "b", f"t{i}"]}
            for i in range(12)
        ],
        "notes": None,
    }
)


@pytest.mark.parametrize("impl", ["ours", "jsonschema-rs", "jsonschema"])
def test_schema_is_valid(benchmark, impl):
    benchmark.group = f"schema-{len(INSTANCE)}B"
    if impl == "ours":
        v = JsonSchema(json.dumps(SCHEMA))
        fn = v.is_valid
    elif impl == "jsonschema-rs":
        jsonschema_rs = pytest.importorskip("jsonschema_rs")
        v = jsonschema_rs.validator_for(SCHEMA)
        fn = lambda text: v.is_valid(json.loads(text))  # noqa: E731
    else:
        jsonschema = pytest.importorskip("jsonschema")
        v = jsonschema.Draft202012Validator(SCHEMA)
        fn = lambda text: v.is_valid(json.loads(text))  # noqa: E731
    assert benchmark(fn, INSTANCE)


# --- rate limiting -------------------------------------------------------------------------


def test_ratelimit_acquire_3_limits(benchmark):
    benchmark.group = "ratelimit"
    rl = RateLimiter()
    keys = itertools.cycle([f"tenant-{i}" for i in range(1000)])
    clock = itertools.count()

    def decide():
        t = next(keys)
        return rl.acquire(
            [(t, 1e6, 60.0, 1.0), (t + ":key", 1e5, 60.0, 1.0), ("model:gpt-4o", 1e9, 60.0, 1.0)],
            next(clock) * 1e-6,
        )

    assert benchmark(decide)[0]
