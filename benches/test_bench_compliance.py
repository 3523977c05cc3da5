"""Micro-benchmarks of the compliance scanners (goal: <= 50 us per KB), measured in one run.

Run:  make bench-micro   (or .venv/bin/pytest benches/test_bench_compliance.py --benchmark-enable)

Groups:
- injection-1k / injection-16k: InjectionScanner.scan (normalisation, base64/hex decoding, signatures over the
  text and its ROT13, the direct classifier) on arena-hard user prompts concatenated to 1 KiB / 16 KiB; the
  `indirect` rows score every ~400-byte window with the indirect model (tool results).
- content-1k: ContentScanner.scan (secrets, PII, canary, dangerous phrases, 6 text classes) on 1 KiB, and the
  streaming scan of the same KiB fed in 16-byte chunks.
- compliance-stage: the stage's hooks as a request meets them (a real Gateway built from the load benchmark's
  compliance config: profile resolved, the ~1 KB prompt scanned, canary planted, a 16-token answer filtered
  whole or as a stream of 16 chunks, each rendered for the caller), against the same request without the
  stage; each hook also with the CPU caches evicted before every call (``cold``), as on the request path of a
  busy machine, where the scanners' tables are no longer cached when the next request reaches them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from benches.load.run import BODY, COMPLIANCE_PROMPT, COMPLIANCE_STAGES, KEY
from gateway import _core
from gateway.app import Gateway
from gateway.compliance import models
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.dialects.openai import OpenAIDialect, chunk_dict
from gateway.http import make_client
from gateway.types import ChatChunk, ChatResponse, Choice, Delta, Message, Usage

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


# ---------------------------------------------------------------- the stage's hooks, per request

ANSWER = (
    "Deserunt amet esse adipiscing ut enim ea est, elit sunt officia irure amet laboris duis qui"  # simulator
)
_EVICT = bytearray(64 << 20)  # larger than this machine's L2 and a good part of its L3


def _evict() -> None:
    _EVICT[::64] = bytes(len(_EVICT) // 64)  # one write per cache line


@pytest.fixture(scope="module")
def stage_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Any]]:
    db = tmp_path_factory.mktemp("stage") / "g.db"
    cfg = {
        "server": {"host": "127.0.0.1", "port": 1, "workers": 1},
        "store": {"sqlite_path": str(db)},
        "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
        "models": {
            "bench": {
                "deployments": [
                    {"id": "sim", "model": "bench", "api_base": "http://127.0.0.1:1/v1", "api_key": "sim"}
                ]
            }
        },
        "stages": COMPLIANCE_STAGES,
    }
    loop = asyncio.new_event_loop()
    gw = loop.run_until_complete(_build(cfg))
    yield gw, loop
    loop.run_until_complete(gw.close())
    loop.close()


async def _build(cfg: dict[str, Any]) -> Gateway:
    return Gateway(parse_config(yaml.safe_dump(cfg)), make_client("aiohttp"))


def _request(gw: Gateway, loop: asyncio.AbstractEventLoop) -> Callable[[bool], None]:
    """One request's pass through the pipeline's hooks (no network): parse, pre, post or the stream's chunks."""
    body = json.dumps({**BODY, "messages": [{"role": "user", "content": COMPLIANCE_PROMPT}]}).encode()
    principal = gw.auth.authenticate(KEY)
    # tokens as providers stream them (a word with its leading space), each chunk with its wire bytes, rendered
    # for the caller as the relay does: raw when no stage changed it, re-encoded when one did
    tokens = [w if i == 0 else " " + w for i, w in enumerate(ANSWER.split(" "))]
    chunks = [(t, orjson.dumps(chunk_dict(ChatChunk("c", "bench", [Delta(0, content=t)])))) for t in tokens]
    pipeline = gw.pipeline

    async def request(stream: bool) -> None:
        ctx = RequestContext("chat", "openai")
        ctx.principal = principal
        req = OpenAIDialect.parse_chat(body)
        ctx.req, ctx.model, ctx.group = req, req.model, "bench"
        await pipeline.pre(ctx, req)
        if stream:
            render = OpenAIDialect.stream(req).chunk
            for w, raw in chunks:
                kept = pipeline.on_chunk(ctx, ChatChunk("c", "bench", [Delta(0, content=w)], raw=raw))
                if kept is not None:
                    render(kept)
            for c in pipeline.on_stream_end(ctx):
                render(c)
        else:
            msg = Message("assistant", ANSWER)
            await pipeline.post(ctx, ChatResponse("c", "bench", [Choice(0, msg, "stop")], Usage(300, 16)))

    def run(stream: bool) -> None:
        loop.run_until_complete(request(stream))

    return run


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize("stage", [False, True], ids=["off", "on"])
@pytest.mark.parametrize("cache", ["hot", "cold"])
def test_compliance_stage_hooks(benchmark, stage_gw, stream, stage, cache):
    gw, loop = stage_gw
    benchmark.group = f"compliance-stage-{cache}"
    saved = gw.pipeline
    if not stage:  # the same request through an empty pipeline
        from gateway.pipeline import Pipeline

        gw.pipeline = Pipeline([])
    try:
        run = _request(gw, loop)
        if cache == "hot":
            benchmark(run, stream)
        else:
            benchmark.pedantic(run, args=(stream,), setup=_evict, rounds=300)
    finally:
        gw.pipeline = saved
