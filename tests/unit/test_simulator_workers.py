"""Simulator with ``--workers 2``: runtime patches and resets reach every worker; stats are aggregated."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from .test_simulator import USER, http, start_simulator, stop_simulator


@pytest.fixture(scope="module")
def sim2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_simulator(tmp_path_factory.mktemp("sim2"), "seed: 3\n", workers=2)
    yield url
    stop_simulator(proc)


def test_patches_and_stats_across_workers(sim2: str) -> None:
    http("POST", sim2 + "/_sim/reset")
    # fresh clients -> fresh connections, spread over both workers
    for _ in range(10):
        openai.OpenAI(base_url=sim2 + "/v1", api_key="k", max_retries=0).chat.completions.create(
            model="w", messages=USER
        )
    stats = json.loads(http("GET", sim2 + "/_sim/stats")[2])
    assert stats["total"] == 10 and stats["by_model"]["w"]["by_status"] == {"200": 10}
    assert stats["workers"] >= 1
    assert http("POST", sim2 + "/_sim/models/w", {"rate_503": 1.0})[0] == 200
    for _ in range(10):
        with pytest.raises(openai.InternalServerError):
            openai.OpenAI(base_url=sim2 + "/v1", api_key="k", max_retries=0).chat.completions.create(
                model="w", messages=USER
            )
    last = json.loads(http("GET", sim2 + "/_sim/last?model=w")[2])
    assert last["body"]["model"] == "w"
    http("POST", sim2 + "/_sim/reset")
    for _ in range(6):
        openai.OpenAI(base_url=sim2 + "/v1", api_key="k", max_retries=0).chat.completions.create(
            model="w", messages=USER
        )
    stats = json.loads(http("GET", sim2 + "/_sim/stats")[2])
    assert stats["total"] == 6 and stats["by_status"] == {"200": 6}
