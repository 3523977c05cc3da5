"""The upstream HTTP client, behind a small interface with two implementations.

Providers only ``post`` and then read a body or iterate its chunks; every transport failure becomes an
:class:`UpstreamError` here, so adapters never see a client library's exceptions. A body is read chunk by chunk
(compressed bodies are inflated as a stream) up to the caller's limit, so an oversized body or a gzip bomb costs at
most that limit, never the worker. Two clients, chosen by
``server.http_client``:

- ``reqwest`` (default): Rust's reqwest on a tokio runtime, through the ``pyreqwest`` package. Measured in the
  same run against aiohttp, as a bare relay on this project's 2-core benchmark box: ~7,800 vs ~6,300 req/s
  with 2 Granian workers, and the same latency at concurrency 1 (0.79 vs 0.82 ms p50).
- ``aiohttp``: the pure-asyncio client, kept for environments where the Rust client is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Protocol

from gateway.errors import UpstreamError


class UpstreamResponse(Protocol):
    status: int

    def header(self, name: str) -> str | None: ...

    async def read(self, limit: int) -> bytes:
        """The whole body; an :class:`UpstreamError` once it grows past ``limit`` bytes."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as the network delivers it."""
        ...

    async def aclose(self) -> None: ...


class HttpClient(Protocol):
    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        stream: bool = False,
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...


def _timeout(what: str) -> UpstreamError:
    return UpstreamError(504, f"timed out {what}", timeout=True)


def _broken(what: str, e: BaseException) -> UpstreamError:
    return UpstreamError(502, f"{what} ({type(e).__name__})")


def too_large(limit: int) -> UpstreamError:
    return UpstreamError(
        502, f"sent more than the deployment's max_response_bytes ({limit} bytes)", bad_response=True
    )


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Join ``chunks`` into one body, failing as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for piece in chunks:
        size += len(piece)
        if size > limit:
            raise too_large(limit)
        parts.append(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# ---------------------------------------------------------------- reqwest (pyreqwest)


class ReqwestResponse:
    __slots__ = ("_ctx", "_resp", "status")

    def __init__(self, resp: Any, ctx: Any = None) -> None:
        self._resp = resp
        self._ctx = ctx  # the request's context manager, closed by aclose() (read() closes it too)
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.get_header(name)

    async def read(self, limit: int) -> bytes:
        try:
            return await read_limited(self._pieces("reading the response", "connection lost"), limit)
        finally:
            await self.aclose()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._pieces("reading the stream", "stream broke")

    async def _pieces(self, reading: str, broke: str) -> AsyncIterator[bytes]:
        reader = self._resp.body_reader
        while True:
            try:
                piece = await reader.read_chunk()
            except TimeoutError:
                raise _timeout(reading) from None
            except Exception as e:
                raise _broken(broke, e) from None
            if piece is None:
                return
            yield bytes(piece)

    async def aclose(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            with contextlib.suppress(Exception):  # closing a broken stream must not mask why it broke
                await ctx.__aexit__(None, None, None)


class ReqwestClient:
    def __init__(self) -> None:
        from pyreqwest.client import ClientBuilder

        self.client = ClientBuilder().pool_idle_timeout(timedelta(seconds=60)).build()
        self._timeouts: dict[float, timedelta] = {}

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        stream: bool = False,
    ) -> ReqwestResponse:
        td = self._timeouts.get(timeout_s)
        if td is None:
            td = self._timeouts[timeout_s] = timedelta(seconds=timeout_s)
        builder = self.client.post(url).headers(headers).body_bytes(body).timeout(td)
        try:
            # Every body is streamed, so the reader decides how much of it to take (see ``read``). 0: hand over
            # the response at its headers and each chunk as it arrives (pyreqwest otherwise buffers up to 64 KiB
            # of a streamed body first, which would hold back a stream's first token).
            if stream:
                builder = builder.streamed_read_buffer_limit(0)
            ctx = builder.build_streamed()
            return ReqwestResponse(await ctx.__aenter__(), ctx)
        except TimeoutError:
            raise _timeout("waiting for the response") from None
        except Exception as e:
            raise _broken("connection failed", e) from None

    async def close(self) -> None:
        await self.client.close()


# ---------------------------------------------------------------- aiohttp


class AiohttpResponse:
    __slots__ = ("_resp", "status")

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    async def read(self, limit: int) -> bytes:
        try:
            return await read_limited(self.chunks(), limit)
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._resp.content.iter_any():
                yield piece
        except TimeoutError:
            raise _timeout("reading the stream") from None
        except (asyncio.IncompleteReadError, OSError, Exception) as e:
            if isinstance(e, UpstreamError):
                raise
            raise _broken("stream broke", e) from None

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpClient:
    def __init__(self) -> None:
        import aiohttp
        from yarl import URL

        self._aiohttp = aiohttp
        self._url = URL
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        self._timeouts: dict[tuple[float, float], Any] = {}

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        stream: bool = False,
    ) -> AiohttpResponse:
        key = (timeout_s, connect_timeout_s)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = self._aiohttp.ClientTimeout(
                total=timeout_s, connect=connect_timeout_s
            )
        try:
            # encoded=True: send the URL exactly as the adapter built it (SigV4 signs the encoded path)
            resp = await self.session.post(
                self._url(url, encoded=True), data=body, headers=headers, timeout=timeout
            )
            return AiohttpResponse(resp)
        except TimeoutError:
            raise _timeout("waiting for the response") from None
        except self._aiohttp.ClientError as e:
            raise _broken("connection failed", e) from None

    async def close(self) -> None:
        await self.session.close()


def make_client(kind: str) -> HttpClient:
    """Build on the worker's running event loop (both clients bind to it)."""
    return ReqwestClient() if kind == "reqwest" else AiohttpClient()
