"""The ``quality`` strategy's cost on the request path: the same requests, in one run, to a weighted group and to
a ``quality`` group with its category given (``x-gateway-category``) or inferred by the classifier.

    python -m benches.load.quality --table ROUTING.yaml --classifier CLASSIFIER.npz [--quick] [--rounds 3]

(``benches/quality/routing_eval.py --workdir DIR`` leaves both in ``DIR/run/routing.yaml`` and
``DIR/classifier.npz``: 58 categories.) One gateway (1 worker) holds both groups, each with the same two
deployments on one zero-latency simulator; a second gateway with ``server.categories: false`` and only the
weighted group is the floor without the category stage. Rounds alternate the cases so drift on this shared
machine hits all alike. Reported: p50/p99 at concurrency 1 and max req/s at concurrency 16; added = case -
weighted, per round and as the median over rounds. The prompt is an MMLU question (~0.5 KB); the ``_long`` cases
send a 2 KB prompt (past the classifier's 512 + 256 characters: its most expensive case) to the weighted group and
with the category inferred, and compare those two.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tests.procs import stop_all

from benches.load.run import KEY, PY, ROOT, ensure_oha, free_port, oha, wait

PROMPT = (
    'What is true for a type-Ia ("type one-a") supernova?\nA. This type occurs in binary systems.\n'
    "B. This type occurs in young galaxies.\nC. This type produces gamma-ray bursts.\n"
    "D. This type produces high amounts of X-rays.\nAnswer:"
)
# a long prompt: a pasted passage with the question at its end (the classifier reads both ends)
LONG_PROMPT = (
    "Read the passage and answer the question.\n"
    + "Stars form in dense molecular clouds; their mass sets how they live and die. " * 24
    + "\n"
    + PROMPT
)


def config(sim_url: str, port: int, db: Path, table: str | None, classifier: str | None) -> dict[str, Any]:
    v1 = sim_url + "/v1"
    deps = [
        {"id": "strong", "model": "gpt-4-1106-preview", "api_base": v1, "api_key": "k", "price": {"input": 10, "output": 30}},
        {"id": "weak", "model": "mixtral-8x7b-instruct-v0.1", "api_base": v1, "api_key": "k", "price": {"input": 0.6, "output": 0.6}},
    ]  # fmt: skip
    models: dict[str, Any] = {"weighted": {"deployments": deps}}
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "workers": 1}
    if table is None:
        server["categories"] = False
    else:
        # the bench's model groups, which the routing table names
        models["strong"] = {"deployments": [{**deps[0], "id": "strong-g"}]}
        models["weak"] = {"deployments": [{**deps[1], "id": "weak-g"}]}
        models["auto"] = {
            "strategy": "quality",
            "deployments": [{**d, "id": f"auto-{d['id']}"} for d in deps],
            "quality": {"table": table, "classifier": classifier, "min_confidence": 0.5},
        }
    return {
        "server": server,
        "store": {"sqlite_path": str(db)},
        "keys": [{"key": KEY, "name": "bench", "tenant": "bench"}],
        "models": models,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-results/quality-load.json")
    args = ap.parse_args()
    n1 = 300 if args.quick else 1500
    exe = ensure_oha()
    work = Path(tempfile.mkdtemp(prefix="gw-bench-quality-"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        procs.append(
            subprocess.Popen(
                [PY, "-m", "gateway", "simulate", "--port", str(sim_port)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
        )
        wait(sim_url + "/healthz", procs[-1])
        urls = {}
        for name, table in (("floor", None), ("gw", str(Path(args.table).resolve()))):
            port = free_port()
            path = work / f"{name}.yaml"
            clf = str(Path(args.classifier).resolve()) if table else None
            path.write_text(yaml.safe_dump(config(sim_url, port, work / f"{name}.db", table, clf)))
            procs.append(
                subprocess.Popen(
                    [PY, "-m", "gateway", "serve", "--config", str(path)], cwd=work, stdout=subprocess.DEVNULL
                )
            )
            wait(f"http://127.0.0.1:{port}/readyz", procs[-1])
            urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        h = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        cases = {
            "no_category_stage": (urls["floor"], {"model": "weighted"}, h),
            "weighted": (urls["gw"], {"model": "weighted"}, h),
            "quality_given": (urls["gw"], {"model": "auto"}, {**h, "x-gateway-category": "mmlu_astronomy"}),
            "quality_inferred": (urls["gw"], {"model": "auto"}, h),
            "weighted_long": (urls["gw"], {"model": "weighted"}, h),
            "quality_inferred_long": (urls["gw"], {"model": "auto"}, h),
        }
        bodies = {
            k: json.dumps(
                {**b, "messages": [{"role": "user", "content": LONG_PROMPT if k.endswith("_long") else PROMPT}],
                 "max_tokens": 16}
            ).encode()
            for k, (_, b, _) in cases.items()
        }  # fmt: skip
        for k, (u, _, hh) in cases.items():
            oha(exe, u, bodies[k], hh, conc=4, n=300)
        rounds = []
        for _ in range(args.rounds):
            row: dict[str, Any] = {}
            for k, (u, _, hh) in cases.items():
                row[k] = {
                    "c1": oha(exe, u, bodies[k], hh, conc=1, n=n1),
                    "c16": oha(exe, u, bodies[k], hh, conc=16, n=n1 * 4),
                }
            rounds.append(row)
        summary: dict[str, Any] = {}
        for k in cases:
            base = "weighted_long" if k.endswith("_long") else "weighted"
            for case, p in (("c1", "p50_ms"), ("c1", "p99_ms"), ("c16", "rps")):
                added = [r[k][case][p] - r[base][case][p] for r in rounds]
                summary[f"{k}.{case}.{p}"] = {
                    "value": statistics.median(r[k][case][p] for r in rounds),
                    "vs_weighted_median": statistics.median(added),  # (the _long cases: vs weighted_long)
                    "vs_weighted_per_round": [round(x, 4) for x in added],
                }
        result = {
            "rounds": rounds,
            "summary": summary,
            "n_c1": n1,
            "n_c16": n1 * 4,
            "prompt_bytes": len(PROMPT),
            "long_prompt_bytes": len(LONG_PROMPT),
        }
        out = ROOT / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(
            f"quality strategy vs weighted, {args.rounds} rounds, {n1} requests per c=1 run, {n1 * 4} per c=16 run"
        )
        for k, v in summary.items():
            print(
                f"  {k:<36} {v['value']:10.3f}  vs weighted (median) {v['vs_weighted_median']:+.4f}  per round {v['vs_weighted_per_round']}"
            )
        return 0
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
