"""The Redis backend when Redis hangs or dies: per policy, never an exception that is not the documented 503,
never a hang, spend counted meanwhile written back, reconnection on its own. Uses its own redis-server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.state.redis import PROBE_EVERY_S, RedisState
from gateway.state.types import Charge, LimitCheck
from tests.conftest import free_port, start_redis


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_redis(self.port)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.signal(signal.SIGCONT)
    s.kill()


BUDGET = Charge("{tenant:t}:bud:life", 1_000)
BUCKET = LimitCheck("{tenant:t}:rl:rpm", 1000, 60.0, 1, "tenant 't' requests per minute")


async def bounded(coro: Any) -> Any:
    """A guard, not a timing assertion: a hung call fails the test instead of hanging it."""
    return await asyncio.wait_for(coro, 5)


def test_fail_open_answers_locally_while_redis_hangs_and_writes_spend_back(server):
    async def body() -> None:
        s = RedisState(server.url, "fail_open", timeout_s=0.2)
        assert (await s.reserve([BUDGET], 100)).ok
        server.signal(signal.SIGSTOP)  # hung, not dead: every call would time out
        r = await bounded(s.reserve([BUDGET], 50))
        assert r.ok and r.degraded and r.spent == [150]  # continued from the last spend Redis reported
        assert s.degraded
        d = await bounded(s.acquire([BUCKET]))
        assert d.allowed and d.degraded
        await bounded(s.settle([BUDGET], -20))  # never raises
        assert not (await bounded(s.reserve([BUDGET], 900))).ok  # 130 + 900 > 1000, even locally
        server.signal(signal.SIGCONT)
        await asyncio.sleep(PROBE_EVERY_S + 0.1)
        d = await bounded(s.acquire([BUCKET]))  # the probe finds Redis back
        assert not d.degraded and not s.degraded
        for _ in range(50):
            if not s.unsynced:
                break
            await asyncio.sleep(0.05)
        assert await s.spent(BUDGET) == 130  # 100 before + 50 - 20 during the outage
        await s.close()

    asyncio.run(body())


def test_fail_closed_refuses_decisions_but_never_loses_a_settle(server):
    async def body() -> None:
        s = RedisState(server.url, "fail_closed", timeout_s=0.2)
        assert (await s.reserve([BUDGET], 100)).ok
        server.kill()
        for call in (s.reserve([BUDGET], 1), s.acquire([BUCKET])):
            with pytest.raises(GatewayError) as e:
                await bounded(call)
            assert e.value.code == "state_unavailable" and e.value.status == 503
            assert e.value.headers["retry-after"]
        await bounded(s.settle([BUDGET], -60))  # the caller's answer is not at stake: kept for later
        assert s.unsynced == {(BUDGET.key, 0, 0): -60}
        server.start()  # a new, empty Redis on the same port
        await asyncio.sleep(PROBE_EVERY_S + 0.1)
        assert (await bounded(s.reserve([BUDGET], 1))).ok  # reconnected on its own
        for _ in range(50):
            if not s.unsynced:
                break
            await asyncio.sleep(0.05)
        assert await s.spent(BUDGET) == 1 - 60  # the correction reached the new Redis
        await s.close()

    asyncio.run(body())


def test_while_down_only_a_probe_pays_the_timeout(server):
    async def body() -> None:
        s = RedisState(server.url, "fail_open", timeout_s=0.2)
        await s.acquire([BUCKET])
        server.signal(signal.SIGSTOP)
        await bounded(s.acquire([BUCKET]))  # this one times out and marks Redis down
        calls = []
        orig = s._acquire

        async def counting(*a: Any, **kw: Any) -> Any:
            calls.append(1)
            return await orig(*a, **kw)

        s._acquire = counting
        for _ in range(20):
            d = await bounded(s.acquire([BUCKET]))
            assert d.allowed and d.degraded
        assert len(calls) <= 1  # the others went straight to the in-process fallback
        server.signal(signal.SIGCONT)
        await s.close()

    asyncio.run(body())
