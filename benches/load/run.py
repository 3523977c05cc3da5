"""The gateway's added latency, measured against the same requests sent straight to the upstream, in one run.

    python -m benches.load.run [--quick] [--workers 2] [--config-extra FILE] [--out bench-results/load.json]

It starts the simulator (zero latency, so the numbers are the gateway's own cost), the gateway (Granian, 2
workers by default) and, as the floor, a bare Granian + aiohttp relay (``relay.py``: parse and re-serialise
only), and drives all three with a real load generator in its own process (``oha``; installed with
``cargo install oha`` by this script when missing):

- closed loop at concurrency 1, 16, 64: p50/p90/p99 and throughput, direct vs through the gateway;
- open loop at a fixed rate (default 1,000 req/s, with latency correction against coordinated omission);
- streams (SSE with usage): time to first byte and to last byte at concurrency 1, 16, 64;
- the gateway's RSS per worker after the run.

``--compliance`` instead compares the gateway with and without the compliance stage (an injection + output filter +
canary profile on every request, a ~1 KB prompt) in the same run: c=1 non-stream and stream, and max req/s at c=64,
alternating off/on for ``--rounds`` rounds so drift on this shared machine hits both alike, with the CPU each gateway
uses per request; ``--compliance-baseline CHECKOUT`` adds the same profile served by another checkout's code.

Added latency = gateway percentile - direct percentile; ratio = gateway / direct. Everything shares this
machine's cores (load generator, simulator, gateway), as the numbers in the README say.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from tests.procs import free_port, stop_all, wait_http

from benches.results import save_result

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
KEY = "gw-bench-key-0000000000000000000000000000"
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}


def wait(url: str, proc: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    try:
        wait_http(url, proc, timeout_s)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def serve_gateway(
    cfg: dict[str, Any],
    path: Path,
    procs: list[subprocess.Popen[Any]],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
    quiet: bool = False,
) -> subprocess.Popen[Any]:
    """Write ``cfg`` to ``path``, start a gateway on it (in that folder; stopped with ``procs``) and wait until it
    is ready."""
    path.write_text(yaml.safe_dump(cfg))
    p = subprocess.Popen(
        [PY, "-m", "gateway", "serve", "--config", str(path)],
        cwd=path.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
        env=env,
    )
    procs.append(p)
    wait(f"http://127.0.0.1:{cfg['server']['port']}/readyz", p, timeout_s)
    return p


def write_result(
    result: dict[str, Any], args: argparse.Namespace, report: Callable[[dict[str, Any]], None]
) -> int:
    """Stamp the run's shape on ``result``, write it to ``--out`` and print its report."""
    result["workers"], result["cpus"] = args.workers, os.cpu_count()
    return save_result(result, args.out, report)


def wait_post(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                url, data=json.dumps(BODY).encode(), headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def ensure_oha() -> str:
    exe = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")
    if not Path(exe).exists():
        print("installing oha (cargo install oha --locked) ...", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked", "--quiet"], check=True)
    return exe


def oha(
    exe: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    conc: int,
    n: int | None = None,
    duration_s: float | None = None,
    qps: int | None = None,
    durations: list[float] | None = None,
) -> dict[str, Any]:
    """One oha run's summary; with ``durations``, every successful request's latency (ms) is appended to it
    (oha's ``--db-url``), for intervals computed from the requests themselves."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
        body_path = f.name
    cmd = [exe, "--no-tui", "--output-format", "json", "-m", "POST", "-c", str(conc), "-D", body_path]
    db_path = None
    if durations is not None:
        db_path = body_path + ".db"
        cmd += ["--db-url", db_path]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if n is not None:
        cmd += ["-n", str(n)]
    if duration_s is not None:
        cmd += ["-z", f"{duration_s}s"]
    if qps is not None:
        cmd += ["-q", str(qps), "--latency-correction"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    os.unlink(body_path)
    if db_path is not None and durations is not None:
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            durations.extend(r[0] * 1000 for r in db.execute("SELECT duration FROM oha WHERE status = 200"))
        os.unlink(db_path)
    out = out[out.index("{") :]  # oha prints a line about the database before the JSON
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    # requests still in flight when a timed run (-z) ends are reported as "aborted due to deadline": not failures
    errors = {k: int(v) for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k}
    total = sum(int(v) for v in codes.values()) + sum(errors.values())
    fb = data.get("firstBytePercentiles") or pct
    return {
        "n": total,
        "ok": ok,
        "errors": errors,
        "rps": data["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1000,
        "p90_ms": pct["p90"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "ttfb_p50_ms": fb["p50"] * 1000,
        "ttfb_p99_ms": fb["p99"] * 1000,
    }


def compare(name: str, direct: dict[str, Any], gw: dict[str, Any]) -> dict[str, Any]:
    row = {"case": name, "direct": direct, "gateway": gw}
    for p in ("p50_ms", "p90_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms"):
        row[f"added_{p}"] = gw[p] - direct[p]
        row[f"ratio_{p}"] = gw[p] / direct[p] if direct[p] else None
    return row


def rss_per_worker_mb(main_pid: int) -> list[float]:
    out = subprocess.run(
        ["ps", "-o", "pid=,rss=", "--ppid", str(main_pid)], capture_output=True, text=True
    ).stdout
    return [round(int(line.split()[1]) / 1024, 1) for line in out.strip().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument(
        "--stages",
        default="auth",
        choices=["auth", "full", "contracts"],
        help="auth: auth, enrichment and records only; full: + PII masking, RPM/TPM limits, schema check",
    )
    ap.add_argument(
        "--redis", action="store_true", help="share limits and budgets through a redis-server it starts"
    )
    ap.add_argument(
        "--routing",
        action="store_true",
        help="route over a weighted group of 2 deployments with a fallback group (vs one deployment)",
    )
    ap.add_argument(
        "--responses",
        action="store_true",
        help="only compare POST /v1/responses with POST /v1/chat/completions through the same gateway and deployment",
    )
    ap.add_argument(
        "--cache",
        action="store_true",
        help="only the answers cache: exact and semantic hits and misses and the gateway without a cache, vs "
        "direct, same run (c=1 in interleaved rounds); RSS per worker without a cache, with the exact cache and with "
        "the semantic cache's embedder loaded",
    )
    ap.add_argument(
        "--observability",
        action="store_true",
        help="only observability: metrics off vs on vs tracing at 100%% (3 gateways), direct as the floor, same run",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--responses, --observability, --cache, --compliance: interleaved rounds",
    )
    ap.add_argument(
        "--compliance",
        action="store_true",
        help="only the compliance stage: the same ~1 KB prompt through the gateway with it off and on, same run",
    )
    ap.add_argument(
        "--compliance-baseline",
        metavar="CHECKOUT",
        help="with --compliance: also run the compliance gateway from another checkout's python/ (its own "
        "gateway/_core build in place), e.g. the code before a change, in the same run",
    )
    ap.add_argument("--out", default="bench-results/load.json")
    args = ap.parse_args()
    scale = 0.2 if args.quick else 1.0
    exe = ensure_oha()

    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": gw_port, "workers": args.workers},
        "store": {"sqlite_path": str(work / "bench.db")},
        "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
        "models": {
            "bench": {
                "deployments": [
                    {
                        "id": "sim",
                        "model": "bench",
                        "api_base": sim_url + "/v1",
                        "api_key": "sim",
                        "price": {"input": 0.15, "output": 0.6},
                    }
                ]
            }
        },
    }
    if args.responses:  # the same upstream model, reached through its own /v1/responses
        native = {**cfg["models"]["bench"]["deployments"][0], "id": "sim-native", "responses_api": "native"}
        cfg["models"]["bench-native"] = {"deployments": [native]}
    if args.routing:
        sim_dep = {"api_base": sim_url + "/v1", "api_key": "sim", "price": {"input": 0.15, "output": 0.6}}
        cfg["models"] = {
            "bench": {
                "strategy": "weighted",
                "fallbacks": ["bench-fallback"],
                "deployments": [
                    {"id": "sim-a", "model": "bench", "weight": 3, "region": "us", **sim_dep},
                    {"id": "sim-b", "model": "bench", "weight": 1, "region": "eu", **sim_dep},
                ],
            },
            "bench-fallback": {"deployments": [{"id": "sim-c", "model": "bench", **sim_dep}]},
        }
    limits = {"enabled": True, "per_key": {"rpm": 10_000_000, "tpm": 10_000_000_000}}
    if args.stages == "full":
        cfg["stages"] = {"pii": {"enabled": True}, "limits": limits, "validate": {"enabled": True}}
    elif args.stages == "contracts":  # RPM/TPM limits + budgets reserved and settled on every request
        cfg["stages"] = {"limits": limits, "budget": {"enabled": True, "tenants": {"bench": {"usd": 1e9}}}}
    procs = []
    if args.redis:
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        cfg["state"] = {"redis_url": f"redis://127.0.0.1:{redis_port}/0"}
        time.sleep(0.5)
    try:
        sim = subprocess.Popen(
            [PY, "-m", "gateway", "simulate", "--port", str(sim_port), "--workers", "1"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(sim)
        wait(sim_url + "/healthz", sim)
        gw = serve_gateway(cfg, work / "bench.yaml", procs)
        relay_port = free_port()
        relay = subprocess.Popen(
            [
                PY,
                "-m",
                "granian",
                "--interface",
                "rsgi",
                "--workers",
                str(args.workers),
                "--loop",
                "uvloop",
                "--port",
                str(relay_port),
                "--no-log",
                "benches.load.relay:app",
            ],
            cwd=ROOT,
            env={**os.environ, "RELAY_UPSTREAM": sim_url},
            stdout=subprocess.DEVNULL,
        )
        procs.append(relay)
        r_url = f"http://127.0.0.1:{relay_port}/v1/chat/completions"
        wait_post(r_url)

        body = json.dumps(BODY).encode()
        stream_body = json.dumps({**BODY, "stream": True, "stream_options": {"include_usage": True}}).encode()
        direct_h = {"content-type": "application/json", "authorization": "Bearer sim"}
        gw_h = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        d_url, g_url = sim_url + "/v1/chat/completions", gw_url + "/v1/chat/completions"
        # warm both paths (connection pools, first-call imports)
        for url, h in ((d_url, direct_h), (g_url, gw_h), (r_url, direct_h)):
            oha(exe, url, body, h, conc=4, n=400)

        def measure(name: str, payload: bytes, **kw: Any) -> None:
            d = oha(exe, d_url, payload, direct_h, **kw)
            g = oha(exe, g_url, payload, gw_h, **kw)
            row = compare(name, d, g)
            row["relay"] = oha(exe, r_url, payload, direct_h, **kw)
            rows.append(row)

        if args.cache:
            cached = {}
            # the semantic gateway serves at δ = 5% (the shipped calibration certifies no threshold at 2%) and
            # verifies no hit on purpose (explore_rate 0), so every paraphrase takes the hit path
            semantic = {"enabled": True, "max_error_rate": 0.05, "explore_rate": 0.0}
            for name, cache_cfg in (
                ("exact", {"enabled": True}),
                ("semantic", {"enabled": True, "semantic": semantic}),
            ):
                port = free_port()
                c = {**cfg, "server": {**cfg["server"], "port": port}, "stages": {"cache": cache_cfg}}
                c["store"] = {"sqlite_path": str(work / f"{name}.db")}
                p = serve_gateway(c, work / f"{name}.yaml", procs, timeout_s=120)
                cached[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", p)
            result = compare_cache(exe, d_url, direct_h, g_url, gw_h, cached, scale, args.rounds)
            result["rss_mb_per_worker"] = {
                "no cache": rss_per_worker_mb(gw.pid),
                **{name: rss_per_worker_mb(p.pid) for name, (_, p) in cached.items()},
            }
            return write_result(result, args, print_cache_report)

        if args.observability:
            from benches.load import observability

            def start(c: dict[str, Any], where: Path) -> tuple[str, subprocess.Popen[Any]]:
                p = serve_gateway(c, where / "bench.yaml", procs, quiet=True)
                return f"http://127.0.0.1:{c['server']['port']}", p

            urls, variant_procs, close = observability.start_variants(cfg, work, start, free_port)
            try:

                def load(
                    url: str, h: dict[str, str], conc: int, n: int, keep: list[float] | None
                ) -> dict[str, Any]:
                    return oha(exe, url, body, h, conc=conc, n=n, durations=keep)

                n1, n64 = max(200, int(3000 * scale)), max(1000, int(20000 * scale))
                pids = {name: p.pid for name, p in zip(urls, variant_procs, strict=True)}
                result = observability.compare(
                    load, (d_url, direct_h), urls, gw_h, args.rounds, n1, n64, pids
                )
            finally:
                close()
            return write_result(result, args, observability.print_report)

        if args.compliance:
            port = free_port()
            c = {**cfg, "server": {**cfg["server"], "port": port}, "stages": COMPLIANCE_STAGES}
            c["store"] = {"sqlite_path": str(work / "compliance.db")}
            p = serve_gateway(c, work / "compliance.yaml", procs)
            variants = {"off": (g_url, gw.pid), "on": (f"http://127.0.0.1:{port}/v1/chat/completions", p.pid)}
            if args.compliance_baseline:  # the same config, another checkout's code (its python/ directory)
                base = Path(args.compliance_baseline).resolve() / "python"
                bport = free_port()
                b = {**c, "server": {**c["server"], "port": bport}}
                b["store"] = {"sqlite_path": str(work / "compliance-baseline.db")}
                env = {**os.environ, "PYTHONPATH": str(base)}
                bp = serve_gateway(b, work / "compliance-baseline.yaml", procs, env=env)
                variants["on (baseline)"] = (f"http://127.0.0.1:{bport}/v1/chat/completions", bp.pid)
            result = compare_compliance(exe, variants, gw_h, scale, args.rounds)
            return write_result(result, args, print_compliance_report)

        if args.responses:
            result = compare_responses(exe, gw_url, gw_h, scale, args.rounds)
            return write_result(result, args, print_responses_report)

        rows: list[dict[str, Any]] = []
        for conc, n in ((1, 3000), (16, 20000), (64, 30000)):
            measure(f"non-stream closed-loop c={conc}", body, conc=conc, n=max(200, int(n * scale)))
        measure(
            f"non-stream open-loop {args.rate} req/s",
            body,
            conc=256,
            duration_s=max(3.0, 10 * scale),
            qps=args.rate,
        )
        for conc, n in ((1, 2000), (16, 10000), (64, 30000)):
            measure(f"stream closed-loop c={conc}", stream_body, conc=conc, n=max(200, int(n * scale)))
        rss = rss_per_worker_mb(gw.pid)
        result = {
            "stages": args.stages,
            "routing": args.routing,
            "redis": args.redis,
            "rows": rows,
            "rss_mb_per_worker": rss,
        }
        return write_result(result, args, print_report)
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


COMPLIANCE_PROMPT = (
    "Summarise the following meeting notes in three bullet points. The team agreed to move the release to "
    "Thursday, to add two more integration tests for the billing service, and to ask design for a review of "
    "the onboarding screens before the end of the sprint. "
) * 4  # ~1 KB of prose, the size the compliance goals are stated for
COMPLIANCE_STAGES = {
    "compliance": {
        "enabled": True,
        "default": "std",
        "profiles": {
            "std": {
                "injection": {"action": "reject"},
                "content": {"categories": {"secrets": "redact", "canary": "block"}, "default": "flag"},
                "canary": True,
            }
        },
    }
}


def compare_compliance(
    exe: str, variants: dict[str, tuple[str, int]], h: dict[str, str], scale: float, rounds: int
) -> dict[str, Any]:
    """The same ~1 KB prompt through the gateway without (``off``) and with the compliance stage (``on``:
    injection scan of the prompt, canary planted, output filter on the answer or on every stream chunk; with
    ``--compliance-baseline``, ``on (baseline)`` runs another checkout's code the same way), the variants
    alternating per case and round; added = variant - off at the same percentile, and its median over rounds.
    ``variants``: name -> (url, pid of its gateway). Latency at c=1 on this shared box moves by more than the
    stage costs, so the CPU each gateway's processes use per request is reported too (over all rounds)."""
    from benches.load.observability import cpu_s, wait_idle

    body = json.dumps({**BODY, "messages": [{"role": "user", "content": COMPLIANCE_PROMPT}]}).encode()
    stream = json.dumps(
        {**json.loads(body), "stream": True, "stream_options": {"include_usage": True}}
    ).encode()
    for url, _ in variants.values():  # warm every gateway (first-call imports, model loading)
        oha(exe, url, body, h, conc=4, n=300)
        oha(exe, url, stream, h, conc=2, n=50)
    cases = [("non-stream c=1", body, 1, 3000), ("stream c=1", stream, 1, 2000)]
    cases += [("non-stream c=64 (max req/s)", body, 64, 20000)]
    names = list(variants)
    rows = []
    for name, payload, conc, n in cases:
        per_round: list[dict[str, Any]] = []
        cpu = dict.fromkeys(names, 0.0)
        served = dict.fromkeys(names, 0)
        for _ in range(rounds):
            k = max(200, int(n * scale))
            runs = {}
            for v in names:
                url, pid = variants[v]
                wait_idle([pid], timeout_s=5)  # the previous run's records are written before this one starts
                c0 = cpu_s(pid)["gateway"]
                runs[v] = oha(exe, url, payload, h, conc=conc, n=k)
                cpu[v] += cpu_s(pid)["gateway"] - c0
                served[v] += runs[v]["n"]
            per_round.append(runs)
        row: dict[str, Any] = {"case": name, "rounds": per_round}
        for v in names:
            row[f"{v}_cpu_us_per_request"] = cpu[v] / max(1, served[v]) * 1e6
            for m in ("p50_ms", "p99_ms", "rps", "ttfb_p50_ms"):
                row[f"{v}_{m}"] = statistics.median(r[v][m] for r in per_round)
                if v != "off":
                    vals = [r[v][m] - r["off"][m] for r in per_round]
                    row[f"{v}_added_{m}"] = statistics.median(vals)
                    row[f"{v}_added_{m}_per_round"] = vals
            row[f"{v}_ok"] = sum(r[v]["ok"] for r in per_round)
            row[f"{v}_n"] = sum(r[v]["n"] for r in per_round)
        row["n_per_run"] = per_round[0]["on"]["n"]
        rows.append(row)
    return {
        "kind": "compliance-off-vs-on",
        "prompt_bytes": len(COMPLIANCE_PROMPT),
        "rounds": rounds,
        "variants": names,
        "rows": rows,
    }


def print_compliance_report(r: dict[str, Any]) -> None:
    print(
        f"\nCompliance stage off vs on ({r['workers']} workers, {r['cpus']} CPUs shared by load generator, simulator "
        f"and the gateways; {r['prompt_bytes']}-byte prompt; {r['rounds']} rounds, medians)"
    )
    print(
        f"{'case':28} {'variant':14} {'n/run':>6} {'p50/p99':>15} {'added p50/p99':>15} {'rps':>6} "
        f"{'CPU us/req':>10} {'added CPU':>9}"
    )
    for row in r["rows"]:
        for v in r["variants"]:
            added = (
                f"{row[f'{v}_added_p50_ms']:>+7.3f}/{row[f'{v}_added_p99_ms']:<+7.3f}"
                if v != "off"
                else " " * 15
            )
            extra = row[f"{v}_cpu_us_per_request"] - row["off_cpu_us_per_request"]
            print(
                f"{row['case']:28} {v:14} {row['n_per_run']:>6} {row[f'{v}_p50_ms']:>7.3f}/{row[f'{v}_p99_ms']:<7.3f} "
                f"{added} {row[f'{v}_rps']:>6.0f} {row[f'{v}_cpu_us_per_request']:>10.0f} "
                f"{extra if v != 'off' else 0:>+9.0f}"
                + (
                    f"  per round p50 {[round(x, 3) for x in row[f'{v}_added_p50_ms_per_round']]}"
                    f"  ok {row[f'{v}_ok']}/{row[f'{v}_n']}"
                    if v != "off"
                    else ""
                )
            )
    print(
        "(ms; added = variant - off at the same percentile, same run; CPU = the gateway's processes per request, "
        "over all rounds)"
    )


RESPONSES_BODY = {"model": "bench", "input": "Say hello to the benchmark.", "max_output_tokens": 16}


def percentile_diff_ci(
    a: list[float], b: list[float], q: float, rounds: int = 2000, seed: int = 7
) -> tuple[float, float, float]:
    """(q-th percentile of ``b`` - that of ``a``, and its 95% bootstrap interval), from per-request latencies."""
    import numpy as np

    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    diff = float(np.percentile(xb, q) - np.percentile(xa, q))
    ia = rng.integers(0, len(xa), size=(rounds, len(xa)))
    ib = rng.integers(0, len(xb), size=(rounds, len(xb)))
    boot = np.percentile(xb[ib], q, axis=1) - np.percentile(xa[ia], q, axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def compare_responses(
    exe: str, gw_url: str, gw_h: dict[str, str], scale: float, rounds: int = 3
) -> dict[str, Any]:
    """The same prompt and deployment as Chat Completions and as Responses (``store: false``; ``store: true``,
    which also keeps the conversation; and ``responses_api: native``, the same upstream model reached through its
    own /v1/responses), in interleaved rounds (the order rotates each round, so drift on this shared machine hits
    every variant alike). At c=1 every request's latency is kept: percentiles over all rounds, and 95% bootstrap
    intervals of the added latency; max req/s is closed-loop c=64, per round."""
    chat_url, resp_url = gw_url + "/v1/chat/completions", gw_url + "/v1/responses"
    variants = {
        "chat": (chat_url, BODY),
        "responses": (resp_url, {**RESPONSES_BODY, "store": False}),
        "responses store": (resp_url, RESPONSES_BODY),
        "responses native": (resp_url, {**RESPONSES_BODY, "model": "bench-native", "store": False}),
    }
    streams = {
        "chat": (chat_url, {**BODY, "stream": True, "stream_options": {"include_usage": True}}),
        "responses": (resp_url, {**RESPONSES_BODY, "store": False, "stream": True}),
        "responses native": (
            resp_url,
            {**RESPONSES_BODY, "model": "bench-native", "store": False, "stream": True},
        ),
    }
    for which in (variants, streams):
        for url, b in which.values():  # warm every path
            oha(exe, url, json.dumps(b).encode(), gw_h, conc=4, n=400)
    cases = [
        ("non-stream c=1", variants, 1, 2000),
        ("stream c=1", streams, 1, 1000),
        ("non-stream c=64 (max req/s)", variants, 64, 15000),
    ]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c[0]: {v: [] for v in c[1]} for c in cases}
    latencies: dict[str, dict[str, list[float]]] = {c[0]: {v: [] for v in c[1]} for c in cases if c[2] == 1}
    for r in range(rounds):
        for name, which, conc, n in cases:
            labels = list(which)
            labels = labels[r % len(labels) :] + labels[: r % len(labels)]
            for label in labels:
                url, b = which[label]
                keep = latencies[name][label] if conc == 1 else None
                m = oha(
                    exe,
                    url,
                    json.dumps(b).encode(),
                    gw_h,
                    conc=conc,
                    n=max(200, int(n * scale)),
                    durations=keep,
                )
                runs[name][label].append(m)
    rows = []
    for name, which, conc, _n in cases:
        row: dict[str, Any] = {"case": name, "concurrency": conc}
        for label in which:
            per = runs[name][label]
            v: dict[str, Any] = {
                "n": sum(m["n"] for m in per),
                "ok": sum(m["ok"] for m in per),
                "rps_per_round": [round(m["rps"], 1) for m in per],
                "rps_median": statistics.median(m["rps"] for m in per),
            }
            if conc == 1:
                lat = latencies[name][label]
                v["p50_ms"], v["p99_ms"] = _pct(lat, 50), _pct(lat, 99)
                if label != "chat":
                    base = latencies[name]["chat"]
                    for q in (50, 99):
                        d, lo, hi = percentile_diff_ci(base, lat, q)
                        v[f"added_p{q}_ms"] = {"value": d, "ci95": [lo, hi]}
            else:
                v["p50_ms_per_round"] = [round(m["p50_ms"], 3) for m in per]
                v["p99_ms_per_round"] = [round(m["p99_ms"], 3) for m in per]
            if label != "chat":
                chat_rps = runs[name]["chat"]
                v["rps_ratio_per_round"] = [
                    round(m["rps"] / c["rps"], 3) for m, c in zip(per, chat_rps, strict=True)
                ]
            row[label] = v
        rows.append(row)
    return {"kind": "responses-vs-chat", "rounds": rounds, "rows": rows}


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


PARAPHRASE = {**BODY, "messages": [{"role": "user", "content": "Say hello to the benchmark ."}]}


def compare_cache(
    exe: str,
    d_url: str,
    direct_h: dict[str, str],
    g_url: str,
    gw_h: dict[str, str],
    cached: dict[str, Any],
    scale: float,
    rounds: int = 3,
) -> dict[str, Any]:
    """The same request direct, through the gateway without a cache, as an exact-cache miss (``refresh``: the key
    is computed, upstream asked, the answer stored), as an exact-cache hit (upstream never asked), and through
    the gateway with the semantic cache on: a miss (``refresh``: the final turn embedded, neighbours searched, the
    answer stored) and a semantic hit (a paraphrase of the stored question: an exact miss, then embedding,
    search, guards, verifier, served from the cache). At c=1 the variants take turns in ``rounds`` rounds (a noisy
    moment hits them all alike) and each percentile is the median over the rounds."""
    c_url = cached["exact"][0]
    s_url = cached["semantic"][0]
    refresh = {**gw_h, "x-gateway-cache": "refresh"}
    body = json.dumps(BODY).encode()
    stream_body = json.dumps({**BODY, "stream": True, "stream_options": {"include_usage": True}}).encode()
    para = json.dumps(PARAPHRASE).encode()
    para_stream = json.dumps(
        {**PARAPHRASE, "stream": True, "stream_options": {"include_usage": True}}
    ).encode()
    variants = {
        "direct": (d_url, direct_h, None),
        "gateway, no cache": (g_url, gw_h, None),
        "exact miss (refresh)": (c_url, refresh, None),
        "exact hit": (c_url, gw_h, None),
        "semantic miss (refresh)": (s_url, refresh, None),
        "semantic hit": (s_url, gw_h, (para, para_stream)),
    }
    for url, h, _ in variants.values():  # warm every path; the hit paths now have their entries
        oha(exe, url, body, h, conc=2, n=200)
        oha(exe, url, stream_body, h, conc=2, n=50)
    time.sleep(0.5)  # the semantic entry is added after the answer went out
    for url, h, alt in variants.values():
        if alt is not None:
            got = _post(url, alt[0], h)
            if got != "semantic-hit":
                raise SystemExit(
                    f"the paraphrase was not a semantic hit ({got}): the benchmark would be wrong"
                )
    rows = []
    for name, stream, conc, n in (
        ("non-stream c=1", False, 1, 3000),
        ("non-stream c=16", False, 16, 20000),
        ("stream c=1", True, 1, 2000),
    ):
        row: dict[str, Any] = {"case": name}
        k_rounds = rounds if conc == 1 else 1
        per: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
        for _ in range(k_rounds):
            for label, (url, h, alt) in variants.items():
                payload = (alt[1] if stream else alt[0]) if alt else (stream_body if stream else body)
                k = max(200, int(n * scale)) // k_rounds
                per[label].append(oha(exe, url, payload, h, conc=conc, n=max(40, k)))
        for label, runs in per.items():
            row[label] = {
                key: (sum(r[key] for r in runs) if key in ("n", "ok") else _median([r[key] for r in runs]))
                for key in ("n", "ok", "rps", "p50_ms", "p90_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms")
            }
            row[label]["errors"] = {}
            row[label]["rounds"] = k_rounds
        for label in variants:
            if label != "direct":
                for p in ("p50_ms", "p99_ms", "ttfb_p50_ms"):
                    row[f"added_{label}_{p}"] = row[label][p] - row["direct"][p]
        rows.append(row)
    return {"kind": "cache", "rows": rows}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def _post(url: str, body: bytes, headers: dict[str, str]) -> str:
    """One request; its x-gateway-cache header."""
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers.get("x-gateway-cache"))


def print_cache_report(r: dict[str, Any]) -> None:
    print(
        f"\nAnswers cache through the gateway ({r['workers']} workers, {r['cpus']} CPUs shared by load generator, "
        "simulator (zero latency) and gateways)"
    )
    print(
        f"{'case':18} {'variant':24} {'n':>6} {'p50':>7} {'p99':>7} {'rps':>7} {'added p50/p99 vs direct':>24}"
    )
    for row in r["rows"]:
        for label, m in row.items():
            if not isinstance(m, dict):
                continue
            added = ""
            if label != "direct":
                added = f"{row[f'added_{label}_p50_ms']:+.3f}/{row[f'added_{label}_p99_ms']:+.3f}"
            print(
                f"{row['case']:18} {label:24} {m['n']:>6} {m['p50_ms']:>7.3f} {m['p99_ms']:>7.3f} "
                f"{m['rps']:>7.0f} {added:>24}  ok {100 * m['ok'] / max(1, m['n']):.1f}%"
            )
    print(f"RSS per worker (MB): {r['rss_mb_per_worker']}")
    print(
        "(ms; added = variant - direct at the same percentile, same run; c=1: median of the rounds' percentiles)"
    )


def print_responses_report(r: dict[str, Any]) -> None:
    print(
        f"\nResponses vs Chat Completions through the same gateway and deployment ({r['workers']} workers, "
        f"{r['cpus']} CPUs shared by load generator, simulator and gateway; {r['rounds']} interleaved rounds)"
    )
    for row in r["rows"]:
        print(f"\n{row['case']}")
        for label, v in row.items():
            if not isinstance(v, dict):
                continue
            line = f"  {label:17} n {v['n']:>6} ok {100 * v['ok'] / max(1, v['n']):5.1f}%"
            if "p50_ms" in v:
                line += f"  p50 {v['p50_ms']:7.3f}  p99 {v['p99_ms']:7.3f}"
                for q in (50, 99):
                    a = v.get(f"added_p{q}_ms")
                    if a:
                        line += f"  added p{q} {a['value']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}]"
            else:
                line += f"  req/s per round {v['rps_per_round']}  p50 {v['p50_ms_per_round']}"
                if "rps_ratio_per_round" in v:
                    line += f"  vs chat {v['rps_ratio_per_round']}"
            print(line)
    print("(ms; added = variant - chat at the same percentile over all rounds, 95% bootstrap interval)")


def print_report(r: dict[str, Any]) -> None:
    print(
        f"\nGateway added latency ({r['workers']} workers, stages={r['stages']}, routing={r['routing']}, "
        f"redis={r.get('redis', False)}; "
        f"{r['cpus']} CPUs shared by load generator, simulator, relay and gateway)"
    )
    print(
        f"{'case':34} {'n':>6} {'direct p50/p99':>15} {'gateway p50/p99':>16} {'added p50/p99':>15} "
        f"{'relay p50/p99':>15} {'direct rps':>10} {'gw rps':>7} {'relay rps':>9} {'gw ok':>6}"
    )
    for row in r["rows"]:
        d, g, f = row["direct"], row["gateway"], row["relay"]
        print(
            f"{row['case']:34} {g['n']:>6} {d['p50_ms']:>7.2f}/{d['p99_ms']:<7.2f} {g['p50_ms']:>7.2f}/{g['p99_ms']:<8.2f} "
            f"{row['added_p50_ms']:>7.2f}/{row['added_p99_ms']:<7.2f} {f['p50_ms']:>7.2f}/{f['p99_ms']:<7.2f} "
            f"{d['rps']:>10.0f} {g['rps']:>7.0f} {f['rps']:>9.0f} {100 * g['ok'] / max(1, g['n']):>5.1f}%"
        )
    for row in r["rows"]:
        if row["case"].startswith("stream"):
            d, g = row["direct"], row["gateway"]
            print(
                f"{row['case']:34} first byte p50/p99 ms: direct {d['ttfb_p50_ms']:.2f}/{d['ttfb_p99_ms']:.2f}, "
                f"gateway {g['ttfb_p50_ms']:.2f}/{g['ttfb_p99_ms']:.2f}, added {row['added_ttfb_p50_ms']:.2f}/"
                f"{row['added_ttfb_p99_ms']:.2f}"
            )
    print(f"gateway RSS per worker (MB): {r['rss_mb_per_worker']}")
    print("(all times in ms; added = gateway - direct at the same percentile, same run)")


if __name__ == "__main__":
    sys.exit(main())
