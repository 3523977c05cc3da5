"""``gateway bench``'s runner: every (model, item) of the suites sent through the gateway, scored, and kept.

Requests go through the gateway's own OpenAI endpoint with the caller's key, so what a bench costs and how long
it takes are the real numbers (each call is recorded like any traffic, with its category and the ``bench`` tag).
Results are appended to ``results.jsonl`` in the run directory as they arrive: a rerun skips what is already
there (an interrupted bench resumes). Concurrency is bounded; a 429 is waited out (its ``Retry-After``) and
retried, so the gateway's and the providers' rate limits are respected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson

from gateway.quality.metrics import judge_messages, judge_score, score
from gateway.quality.suites import Item, Suite


class Result(msgspec.Struct):
    """One scored call (a line of ``results.jsonl``)."""

    model: str
    category: str
    item: str
    score: float | None  # None: the call failed (counted in the error rate, not in quality)
    status: int
    latency_ms: float
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    served_by: str | None = None
    request_id: str | None = None
    error: str | None = None
    ts: float = 0.0


def done_keys(path: Path) -> set[tuple[str, str, str]]:
    """(model, category, item) already in a results file (successful calls only: failures are retried)."""
    keys: set[tuple[str, str, str]] = set()
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                r = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by an interruption
            if r.get("score") is not None:
                keys.add((r["model"], r["category"], r["item"]))
    return keys


def load_results(path: Path) -> list[Result]:
    """The last result per (model, category, item)."""
    last: dict[tuple[str, str, str], Result] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                r = msgspec.json.decode(line, type=Result)
            except msgspec.DecodeError:
                continue
            last[(r.model, r.category, r.item)] = r
    return list(last.values())


class Client:
    """The bench's HTTP client of the gateway."""

    def __init__(self, base_url: str, key: str, timeout_s: float = 120.0, max_retries: int = 5) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retries = max_retries
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def chat(
        self, model: str, messages: list[dict[str, Any]], category: str, max_tokens: int | None, tag: str
    ) -> tuple[int, dict[str, Any], dict[str, str], float]:
        """(status, body, headers, latency ms) of one call; 429s are waited out and retried."""
        assert self.session is not None
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
        if max_tokens:
            body["max_tokens"] = max_tokens
        headers = {**self.headers, "x-gateway-category": category, "x-gateway-tags": tag}
        data = orjson.dumps(body)
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            try:
                async with self.session.post(self.url, data=data, headers=headers) as r:
                    raw = await r.read()
                    status, hdrs = r.status, {k.lower(): v for k, v in r.headers.items()}
            except (aiohttp.ClientError, TimeoutError) as e:
                return (
                    0,
                    {"error": {"message": f"{type(e).__name__}: {e}"}},
                    {},
                    (time.perf_counter() - t0) * 1e3,
                )
            ms = (time.perf_counter() - t0) * 1e3
            try:
                doc = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                doc = {"error": {"message": "response is not JSON"}}
            if status == 429 and attempt < self.max_retries:
                try:
                    wait = float(hdrs.get("retry-after", "1"))
                except ValueError:
                    wait = 1.0
                await asyncio.sleep(min(wait, 30.0))
                continue
            return status, doc if isinstance(doc, dict) else {}, hdrs, ms
        raise AssertionError("unreachable")


def _text(doc: dict[str, Any]) -> str:
    try:
        return str(doc["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""


async def run_one(client: Client, model: str, suite: Suite, item: Item, tag: str) -> Result:
    status, doc, hdrs, ms = await client.chat(model, item.messages, item.category, suite.max_tokens, tag)
    cost = float(hdrs.get("x-gateway-cost-usd", 0) or 0)
    usage = doc.get("usage") or {}
    common: dict[str, Any] = {
        "model": model,
        "category": item.category,
        "item": item.id,
        "status": status,
        "latency_ms": round(ms, 3),
        "cost_usd": cost,
        "input_tokens": int(usage.get("prompt_tokens", 0) or 0),
        "output_tokens": int(usage.get("completion_tokens", 0) or 0),
        "served_by": hdrs.get("x-gateway-model"),
        "request_id": hdrs.get("x-gateway-request-id"),
        "ts": time.time(),
    }
    if status != 200:
        msg = (
            str((doc.get("error") or {}).get("message", ""))[:200]
            if isinstance(doc.get("error"), dict)
            else ""
        )
        return Result(score=None, error=f"{status}: {msg}", **common)
    metric = item.metric or suite.metric
    text = _text(doc)
    if metric["type"] == "judge":
        jst, jdoc, jh, _ = await client.chat(
            metric["group"],
            judge_messages(metric, item.prompt(), text, item.expected),
            "judge",
            64,
            tag,
        )
        s = judge_score(_text(jdoc)) if jst == 200 else None
        common["cost_usd"] += (
            float(jh.get("x-gateway-cost-usd", 0) or 0) if metric.get("charge_judge") else 0.0
        )
        if s is None:
            return Result(score=None, error=f"judge gave no rating ({jst})", **common)
        return Result(score=s, **common)
    try:
        sc = score(metric, text, item.expected)
    except (ValueError, TypeError) as e:
        return Result(score=0.0, error=f"metric: {e}", **common)
    return Result(score=sc, **common)


async def run_bench(
    suites: list[Suite],
    models: list[str],
    base_url: str,
    key: str,
    out: Path,
    concurrency: int = 8,
    split: str | None = None,
    limit: int | None = None,
    on_result: Callable[[Result], None] | None = None,
    tag: str = "bench",
) -> int:
    """Run what is not done yet; returns how many calls were made. Results go to ``out/results.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = done_keys(path)
    todo: list[tuple[str, Suite, Item]] = []
    for s in suites:
        items = [it for it in s.items if split is None or it.split in (None, split)]
        for it in items[:limit] if limit else items:
            for m in models:
                if (m, it.category, it.id) not in done:
                    todo.append((m, s, it))
    sem = asyncio.Semaphore(max(1, concurrency))
    with path.open("ab") as f:
        async with Client(base_url, key) as client:

            async def one(m: str, s: Suite, it: Item) -> None:
                async with sem:
                    r = await run_one(client, m, s, it, tag)
                f.write(msgspec.json.encode(r) + b"\n")
                f.flush()
                if on_result is not None:
                    on_result(r)

            await asyncio.gather(*(one(m, s, it) for m, s, it in todo))
    return len(todo)


def todo_count(
    suites: list[Suite], models: list[str], out: Path, split: str | None, limit: int | None
) -> int:
    done = done_keys(out / "results.jsonl")
    n = 0
    for s in suites:
        items = [it for it in s.items if split is None or it.split in (None, split)]
        for it in items[:limit] if limit else items:
            n += sum((m, it.category, it.id) not in done for m in models)
    return n
