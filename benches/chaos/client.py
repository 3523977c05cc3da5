"""The load client of the chaos and hedging benchmarks: a separate process that sends chat completions to the
gateway and records, per request, what the caller saw.

    python -m benches.chaos.client --url URL --keys name=key,... --model GROUP --out FILE.jsonl
        (--rate R --duration S [--start-at EPOCH])   open loop: request i is due at start + i / R
      | (--requests N --concurrency C)               closed loop: C callers, N requests in all
        [--stream-share 0.3] [--tail-share P --tail-directive TEXT] [--seed 1]

Why a process of our own rather than ``oha``: the chaos report needs each request's ``x-gateway-attempts``,
``x-gateway-model`` and outcome, which ``oha`` does not keep. Open-loop latency is measured from the time a request
was *due*, not from when it was sent, so a stalled client cannot hide latency (no coordinated omission).

Each record: ``i``, ``t`` (due time, s from start), ``caller``, ``stream``, ``status`` (0: no HTTP answer),
``ok``, ``code`` (the error's code), ``lat_ms`` (to the last byte), ``ttfb_ms``, ``attempts``, ``model`` (the
deployment that served), ``route``, ``tail`` (the request carried the tail directive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="gateway base URL")
    ap.add_argument("--keys", required=True, help="caller=key,... (requests rotate over the callers)")
    ap.add_argument("--model", default="chat")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, help="open loop: requests per second")
    ap.add_argument("--duration", type=float, help="open loop: seconds")
    ap.add_argument(
        "--start-at", type=float, help="open loop: wall-clock start (epoch s), to share a schedule"
    )
    ap.add_argument("--requests", type=int, help="closed loop: requests in all")
    ap.add_argument("--concurrency", type=int, default=8, help="closed loop: parallel callers")
    ap.add_argument("--stream-share", type=float, default=0.0, help="share of requests that stream")
    ap.add_argument(
        "--tail-share", type=float, default=0.0, help="share of requests carrying --tail-directive"
    )
    ap.add_argument("--tail-directive", default="", help="simulator directive text for tail requests")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args()


class Load:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.url = a.url.rstrip("/") + "/v1/chat/completions"
        self.callers = [tuple(kv.split("=", 1)) for kv in a.keys.split(",")]
        # Decided up front from the seed, so two runs with the same seed send the same mix (stream / tail).
        n = a.requests if a.requests is not None else int(a.rate * a.duration)
        rng = random.Random(a.seed)
        self.plan = [(rng.random() < a.stream_share, rng.random() < a.tail_share) for _ in range(n)]
        self.records: list[dict[str, Any]] = []

    def body(self, i: int, stream: bool, tail: bool) -> bytes:
        text = f"Chaos request {i}: answer briefly."  # unique per request: no cache can answer it
        if tail:
            text += " " + self.a.tail_directive
        body: dict[str, Any] = {
            "model": self.a.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": self.a.max_tokens,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    async def one(self, session: aiohttp.ClientSession, i: int, due: float, t: float) -> None:
        """Send request ``i``; ``due`` is the perf_counter time it was due (latency is measured from it)."""
        stream, tail = self.plan[i]
        caller, key = self.callers[i % len(self.callers)]
        rec: dict[str, Any] = {"i": i, "t": round(t, 4), "caller": caller, "stream": stream, "tail": tail}
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        ttfb = None
        try:
            async with session.post(self.url, data=self.body(i, stream, tail), headers=headers) as r:
                rec["status"] = r.status
                rec["attempts"] = int(r.headers.get("x-gateway-attempts", 0))
                rec["model"] = r.headers.get("x-gateway-model")
                rec["route"] = r.headers.get("x-gateway-route")
                first = await r.content.readany()
                ttfb = time.perf_counter()
                data = first + await r.content.read()
            ok = r.status == 200 and (not stream or data.rstrip().endswith(b"data: [DONE]"))
            if r.status != 200:
                try:
                    err = orjson.loads(data).get("error", {})
                    rec["code"] = err.get("code") or err.get("type")
                except (orjson.JSONDecodeError, AttributeError):
                    rec["code"] = "unparsable"
            elif not ok:
                rec["code"] = "stream_incomplete"
        except (aiohttp.ClientError, TimeoutError) as e:
            ok = False
            rec.setdefault("status", 0)
            rec["code"] = type(e).__name__
        end = time.perf_counter()
        rec["ok"] = ok
        rec["lat_ms"] = round((end - due) * 1000, 2)
        rec["ttfb_ms"] = round(((ttfb or end) - due) * 1000, 2)
        self.records.append(rec)

    async def open_loop(self, session: aiohttp.ClientSession) -> None:
        a = self.a
        start_wall = a.start_at if a.start_at is not None else time.time()
        start = time.perf_counter() + (start_wall - time.time())
        tasks = []
        for i in range(len(self.plan)):
            t = i / a.rate
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(session, i, start + t, t)))
        await asyncio.gather(*tasks)

    async def closed_loop(self, session: aiohttp.ClientSession) -> None:
        start = time.perf_counter()
        next_i = iter(range(len(self.plan)))

        async def caller() -> None:
            for i in next_i:
                now = time.perf_counter()
                await self.one(session, i, now, now - start)

        await asyncio.gather(*(caller() for _ in range(self.a.concurrency)))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
            await (self.open_loop(s) if self.a.requests is None else self.closed_loop(s))
        self.records.sort(key=lambda r: r["i"])
        Path(self.a.out).write_text("".join(json.dumps(r) + "\n" for r in self.records))


def main() -> None:
    a = parse_args()
    if a.requests is None and (a.rate is None or a.duration is None):
        raise SystemExit("give --rate and --duration (open loop) or --requests (closed loop)")
    asyncio.run(Load(a).run())


if __name__ == "__main__":
    main()
