"""Two Granian workers, 50 concurrent clients: every request succeeds and has exactly one record."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import base_config


def test_fifty_concurrent_clients_two_workers_one_record_each(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    gw = start_gateway(cfg, workers=2)
    clients = [gw.openai() for _ in range(50)]

    def run(i: int) -> list[str]:
        ids = []
        for j in range(10):
            kw = {"stream": True, "stream_options": {"include_usage": True}} if j % 2 else {}
            raw = clients[i].chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"client {i} request {j}"}], **kw
            )
            if j % 2:
                assert list(raw.parse())[-1].usage is not None
            else:
                assert raw.parse().choices[0].message.content
            ids.append(raw.headers["x-gateway-request-id"])
        return ids

    with ThreadPoolExecutor(50) as pool:
        ids = [rid for batch in pool.map(run, range(50)) for rid in batch]
    assert len(ids) == 500 and len(set(ids)) == 500
    records = gw.records(wait_for=500)
    per_id = Counter(r["request_id"] for r in records)
    assert set(per_id) == set(ids)
    assert all(n == 1 for n in per_id.values())
    assert all(r["status"] == 200 for r in records)
    assert sum(r["stream"] for r in records) == 250
