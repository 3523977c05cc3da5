"""Hot reload under load: a fixed-rate open-loop load through the gateway (2 workers) while its config is reloaded
every second for 30 s, alternately by SIGHUP and POST /admin/reload, one of the reloads an invalid file.

    python -m benches.chaos.reload [--seconds 30] [--rate 40]

Every reload moves the model group callers ask for ("moving") to another upstream model and adds a new group;
the report counts failed requests (any non-200 or connection error), shows that the invalid file was refused with
its field path, and that the last generation is what every worker serves at the end. A third of the requests are
streams. The load runs in its own process, so it never shares an event loop with the gateway it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from benches.load.run import free_port

PY = sys.executable
KEY = "gw-reload-bench-key-00000000000000000000"
ADMIN = "gw-reload-bench-admin-000000000000000000"


def config(sim: str, db: Path, generation: int) -> dict[str, Any]:
    dep = {"api_base": sim + "/v1", "api_key": "k"}
    return {
        "server": {"host": "127.0.0.1", "workers": 2},
        "store": {"sqlite_path": str(db)},
        "admin": {"key": ADMIN},
        "keys": [{"key": KEY, "tenant": "bench"}],
        "models": {
            "moving": {"deployments": [{"id": "moving", "model": f"gen-{generation}", **dep}]},
            f"added-{generation}": {
                "deployments": [{"id": f"added-{generation}", "model": "gpt-4o-mini", **dep}]
            },
        },
    }


def wait_ok(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def post_reload(gw: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        gw + "/admin/reload", data=b"", method="POST", headers={"authorization": f"Bearer {ADMIN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def load(gw: str, seconds: float, rate: float, out: Path) -> None:
    """Open loop: request i is sent at t0 + i / rate whatever happened to the others."""
    import aiohttp

    results: list[tuple[float, str, str, float]] = []  # (sent at, outcome, model served, latency)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    async def one(session: aiohttp.ClientSession, i: int, t: float) -> None:
        stream = i % 3 == 0
        body = {"model": "moving", "messages": [{"role": "user", "content": f"r{i}"}], "stream": stream}
        start = time.monotonic()
        try:
            async with session.post(gw + "/v1/chat/completions", json=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    results.append((t, f"http {r.status}", "", time.monotonic() - start))
                    return
                if stream:
                    ok = b"data: [DONE]" in data
                    model = json.loads(data.split(b"\n", 1)[0][6:]).get("model", "") if ok else ""
                    results.append((t, "ok" if ok else "stream cut", model, time.monotonic() - start))
                else:
                    results.append((t, "ok", json.loads(data)["model"], time.monotonic() - start))
        except Exception as e:
            results.append((t, type(e).__name__, "", time.monotonic() - start))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.monotonic()
        tasks = []
        i = 0
        while time.monotonic() - t0 < seconds:
            due = t0 + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            tasks.append(asyncio.create_task(one(session, i, time.monotonic() - t0)))
            i += 1
        await asyncio.gather(*tasks)
    out.write_text(json.dumps(results))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=40, help="requests per second (open loop)")
    ap.add_argument("--client", nargs=3, metavar=("URL", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        asyncio.run(load(args.client[0], float(args.client[1]), args.rate, Path(args.client[2])))
        return 0

    work = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    sim_port, gw_port = free_port(), free_port()
    sim = subprocess.Popen(
        [PY, "-m", "gateway", "simulate", "--port", str(sim_port)], stdout=subprocess.DEVNULL
    )
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    wait_ok(sim_url + "/healthz")
    db, path = work / "gw.db", work / "config.yaml"
    path.write_text(yaml.safe_dump(config(sim_url, db, 0)))
    log = (work / "gateway.log").open("w")
    gw = subprocess.Popen(
        [PY, "-m", "gateway", "serve", "--config", str(path), "--port", str(gw_port)], stdout=log, stderr=log
    )
    try:
        wait_ok(gw_url + "/readyz")
        out = work / "results.json"
        client = subprocess.Popen(
            [
                PY,
                "-m",
                "benches.chaos.reload",
                "--rate",
                str(args.rate),
                "--client",
                gw_url,
                str(args.seconds + 2),
                str(out),
            ]
        )
        time.sleep(1)
        generation, refused, applied = 0, [], 0
        n = int(args.seconds)
        for step in range(1, n + 1):
            time.sleep(1)
            if step == n // 2:  # the invalid one: a deployment without its model
                bad = config(sim_url, db, generation + 1)
                del bad["models"]["moving"]["deployments"][0]["model"]
                path.write_text(yaml.safe_dump(bad))
                status, body = post_reload(gw_url)
                refused.append((status, body["error"]["code"], body["error"]["message"]))
                gw.send_signal(signal.SIGHUP)  # refused the same way, in the log
                continue
            generation += 1
            path.write_text(yaml.safe_dump(config(sim_url, db, generation)))
            if step % 2:
                status, _ = post_reload(gw_url)
                applied += status == 202
            else:
                gw.send_signal(signal.SIGHUP)
                applied += 1
        client.wait(120)
        results = json.loads(out.read_text())
        # the last generation reaches every worker (respawns are sequential: reloads that arrive during one are
        # applied together by the next)
        deadline, last_seen = time.monotonic() + 60, set()
        while time.monotonic() < deadline:
            last_seen = set()
            for _ in range(10):
                req = urllib.request.Request(
                    gw_url + "/v1/chat/completions",
                    data=json.dumps(
                        {"model": "moving", "messages": [{"role": "user", "content": "x"}]}
                    ).encode(),
                    headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=10) as r:
                    last_seen.add(json.loads(r.read())["model"])
            if last_seen == {f"gen-{generation}"}:
                break
            time.sleep(0.5)
    finally:
        gw.send_signal(signal.SIGTERM)
        code = gw.wait(60)
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        log.close()

    outcomes = Counter(r[1] for r in results)
    served = Counter(r[2] for r in results if r[2])
    lat = sorted(r[3] for r in results if r[1] == "ok")
    failed = sum(v for k, v in outcomes.items() if k != "ok")
    print(f"load: {len(results)} requests at {args.rate:.0f}/s for {args.seconds:.0f} s (a third streamed)")
    print(f"outcomes: {dict(outcomes)}  failed: {failed}")
    print(f"latency p50 {lat[len(lat) // 2] * 1000:.0f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms")
    print(f"reloads: {n} ({applied} valid ones sent, {len(refused)} invalid)")
    for status, code_, message in refused:
        print(f"  invalid config -> {status} {code_}: {message[:160]}")
    print(
        f"generations served during the run: {len(served)} ({', '.join(sorted(served, key=lambda m: int(m[4:])))})"
    )
    print(f"after the last reload every worker serves: {sorted(last_seen)} (expected gen-{generation})")
    print(f"gateway exit code after SIGTERM: {code}; log in {work / 'gateway.log'}")
    return 0 if failed == 0 and last_seen == {f"gen-{generation}"} and code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
