"""A misbehaving OpenAI-compatible upstream, for the hardening tests: what a broken or hostile provider can send.

The model name picks the behaviour (a deployment's ``model``), so one server plays every part:

- ``giant``: a 200 whose JSON body is ``GIANT_MB`` MiB (one huge content string).
- ``gzip-bomb``: a ~0.5 MiB gzip body that inflates to ``BOMB_MB`` MiB.
- ``endless``: a stream of valid chunks that never ends (streams and non-streams alike).
- ``never-framed``: an SSE ``data:`` line that never ends (no blank line, ever).
- ``retry-after-<n>``: a 429 with one of the absurd ``Retry-After`` values in ``RETRY_AFTER``.
- ``drip``: a valid answer, one byte every ``DRIP_S`` seconds.
- ``hang``: accepts the request and never answers.
- ``many-embeddings``: an embeddings answer with ``EMBED_N`` vectors of 1536 floats.

Run: ``python -m tests.adversarial.misbehaving --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import zlib

import orjson
from aiohttp import web

GIANT_MB = 256
BOMB_MB = 256
DRIP_S = 0.2
EMBED_N = 2000
RETRY_AFTER = {
    "decade": "315360000",
    "huge": "1e308",
    "inf": "inf",
    "nan": "nan",
    "negative": "-5",
    "digits": "9" * 400,
    "garbage": "soon",
}
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n'
)
ANSWER = orjson.dumps(
    {
        "id": "r",
        "object": "chat.completion",
        "created": 1,
        "model": "drip",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)


def gzip_bomb(mb: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    block = b"\x00" * (1024 * 1024)
    return b"".join(z.compress(block) for _ in range(mb)) + z.flush()


BOMB = gzip_bomb(BOMB_MB)


async def _open(request: web.Request, content_type: str, **headers: str) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"content-type": content_type, **headers})
    await resp.prepare(request)
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    model = body.get("model", "")
    stream = bool(body.get("stream"))
    return await _behave(request, model, stream)


async def _behave(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    if model.startswith("retry-after-"):
        value = RETRY_AFTER[model.removeprefix("retry-after-")]
        err = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}}
        return web.Response(
            status=429,
            body=orjson.dumps(err),
            headers={"retry-after": value, "content-type": "application/json"},
        )
    if model == "hang":
        await asyncio.sleep(3600)
    if model == "giant":
        resp = await _open(request, "application/json")
        await resp.write(
            b'{"id":"g","object":"chat.completion","created":1,"model":"giant","choices":[{"index":0,'
        )
        await resp.write(b'"message":{"role":"assistant","content":"')
        block = b"a" * (1024 * 1024)
        for _ in range(GIANT_MB):
            await resp.write(block)
        await resp.write(b'"},"finish_reason":"stop"}]}')
        return resp
    if model == "gzip-bomb":
        resp = await _open(request, "application/json", **{"content-encoding": "gzip"})
        await resp.write(BOMB)
        return resp
    if model == "endless":
        resp = await _open(request, "text/event-stream" if stream else "application/json")
        piece = CHUNK * 64
        while True:
            await resp.write(piece)
    if model == "never-framed":
        resp = await _open(request, "text/event-stream")
        await resp.write(b"data: ")
        block = b"x" * 65536
        while True:
            await resp.write(block)
    if model == "drip":
        resp = await _open(request, "text/event-stream" if stream else "application/json")
        data = CHUNK * 1000 if stream else ANSWER
        for i in range(len(data)):
            await resp.write(data[i : i + 1])
            await asyncio.sleep(DRIP_S)
        return resp
    return web.json_response({"error": {"message": f"unknown behaviour {model!r}"}}, status=400)


async def embeddings(request: web.Request) -> web.StreamResponse:
    resp = await _open(request, "application/json")
    await resp.write(b'{"object":"list","model":"many-embeddings","data":[')
    vector = b"[" + b",".join([b"0.012345678"] * 1536) + b"]"
    for i in range(EMBED_N):
        sep = b"," if i else b""
        await resp.write(sep + b'{"object":"embedding","index":%d,"embedding":' % i + vector + b"}")
    await resp.write(b'],"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (EMBED_N, EMBED_N))
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
