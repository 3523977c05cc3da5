"""The floor: a bare Granian + aiohttp relay that only parses and re-serialises JSON (no auth, no policy, no
records). The load benchmark measures it in the same run as the gateway, so the gateway's numbers can be read
against what Python + Granian + aiohttp cost before any gateway logic runs.

    RELAY_UPSTREAM=http://127.0.0.1:PORT granian --interface rsgi --workers 2 benches.load.relay:app
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson

UPSTREAM = os.environ.get("RELAY_UPSTREAM", "http://127.0.0.1:4010")
HEADERS = [("content-type", "application/json")]


class Relay:
    def __rsgi_init__(self, loop: Any) -> None:
        async def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        self.http = loop.run_until_complete(session())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        body = orjson.loads(await proto())
        async with self.http.post(
            UPSTREAM + scope.path,
            data=orjson.dumps(body),
            headers={"content-type": "application/json", "authorization": "Bearer relay"},
        ) as r:
            if body.get("stream"):
                transport = proto.response_stream(r.status, [("content-type", "text/event-stream")])
                async for piece in r.content.iter_any():
                    await transport.send_bytes(piece)
                return
            data = orjson.loads(await r.read())
        proto.response_bytes(r.status, HEADERS, orjson.dumps(data))


app = Relay()
