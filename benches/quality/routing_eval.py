"""Benchmark-validated routing on RouteLLM's per-item data: cost saved and quality kept on a held-out half.

Run: flock /tmp/bench.lock .venv/bin/python benches/quality/routing_eval.py [--concurrency 16] [--json OUT]

Protocol. ``gateway bench import-routellm`` turns the corpus (MMLU: 57 subjects, GSM8K; per item whether
gpt-4-1106-preview, "strong", and Mixtral-8x7B, "weak", answered correctly) into suites and the simulator's
answers: a simulated model answers each item right or wrong exactly as the real one did. Each category's items
are split in halves by a hash of the prompt. Prices: strong $10 / $30 per M input/output tokens, weak $0.6 / $0.6.

1. ``gateway bench run --split bench`` measures both models on half A through a real gateway and the simulator
   and proposes the routing table for an overall goal (``--target-kept``, default 0.95 of strong's quality:
   categories move to the weak model by least quality lost per dollar saved) — half B is never looked at.
2. ``gateway bench train-classifier --split bench`` trains the category classifier on half A's prompts.
3. A gateway with a ``quality`` group over both deployments (that table, that classifier) serves every half-B item
   twice: with its category given (``x-gateway-category``) and with none (the classifier infers it; below its
   confidence bar the request is category-less and goes to strong). The same items sent to "strong" are the
   baseline. Each category's items come from a caller of their own (a prompt found in two categories is not a
   caller's retry, which the closed loop would count against the first answer). Every answer is scored by the suite's metric; cost is the gateway's own (``x-gateway-cost-usd``).

Reported per category and overall: cost saved vs always-strong, quality kept (routed accuracy / strong accuracy),
with 95% paired-bootstrap intervals over items (1,000 resamples), and the classifier's held-out accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))

from tests.procs import free_port, stop, wait_http  # noqa: E402

from gateway.quality.metrics import judge_messages, judge_score, score  # noqa: E402
from gateway.quality.runner import Client  # noqa: E402
from gateway.quality.stats import bootstrap  # noqa: E402
from gateway.quality.suites import load_suites  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "routellm"
PY = sys.executable
KEY = "gw-routing-eval-key-0000000000000000000"
KEY_INFERRED = "gw-routing-eval-key-inferred-0000000000"  # another caller: its asks are not retries of KEY's


def caller(category: str, given: bool) -> str:
    """The key half-B items of ``category`` are sent with: one caller per category and pass. Some prompts are in
    two categories (42 of half B are in both clinical_knowledge and college_medicine); one caller sending such a
    prompt twice would be read by the closed loop as a retry, a signal against its first answer."""
    tag = hashlib.blake2b(category.encode(), digest_size=10).hexdigest()
    return f"gw-routing-eval-{'g' if given else 'i'}-{tag}"


STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


def config(
    sim: str,
    db: Path,
    table: Path | None,
    classifier: Path | None,
    min_conf: float,
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
    v1 = sim + "/v1"
    strong = {
        "id": "strong-1",
        "model": STRONG,
        "api_base": v1,
        "api_key": "k",
        "price": {"input": 10, "output": 30},
    }
    weak = {
        "id": "weak-1",
        "model": WEAK,
        "api_base": v1,
        "api_key": "k",
        "price": {"input": 0.6, "output": 0.6},
    }
    judge = {"id": "judge-1", "model": "gpt-4-judge", "api_base": v1, "api_key": "k"}  # MT-Bench's judge
    models: dict[str, Any] = {
        "strong": {"deployments": [strong]},
        "weak": {"deployments": [weak]},
        "judge": {"deployments": [judge]},
    }
    if table is not None:
        models["auto"] = {
            "strategy": "quality",
            "deployments": [{**strong, "id": "auto-strong"}, {**weak, "id": "auto-weak"}],
            "quality": {
                "table": str(table),
                "classifier": str(classifier) if classifier else None,
                "min_confidence": min_conf,
            },
        }
    return {
        "server": {"host": "127.0.0.1", "workers": 2},
        "store": {"sqlite_path": str(db), "record_flush_ms": 200},
        "keys": [
            {"key": KEY, "name": "eval", "tenant": "eval"},
            {"key": KEY_INFERRED, "name": "eval-inferred", "tenant": "eval"},
            *(
                {"key": caller(c, g), "name": f"eval-{'given' if g else 'inferred'}-{c}", "tenant": "eval"}
                for c in categories
                for g in (True, False)
            ),
        ],
        "models": models,
    }


def start_gateway(cfg: dict[str, Any], d: Path) -> tuple[subprocess.Popen[bytes], str]:
    p = d / f"gw-{time.time_ns()}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "gateway", "serve", "--config", str(p), "--port", str(port)], cwd=d)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", proc)
    return proc, url


async def serve_items(
    url: str, model: str, items: list[Any], suites: dict[str, Any], given: bool, conc: int
) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(conc)
    out: list[dict[str, Any]] = []
    async with Client(url, KEY if given else KEY_INFERRED) as client:
        assert client.session is not None

        async def one(it: Any) -> None:
            headers = {**client.headers, "authorization": f"Bearer {caller(it.category, given)}"}
            if given:
                headers["x-gateway-category"] = it.category
            body = {
                "model": model,
                "messages": it.messages,
                "max_tokens": suites[it.category].max_tokens or 512,
            }
            async with sem, client.session.post(client.url, json=body, headers=headers) as r:
                doc = await r.json()
                h = {k.lower(): v for k, v in r.headers.items()}
            text = doc["choices"][0]["message"]["content"] if r.status == 200 else ""
            metric = it.metric or suites[it.category].metric
            if r.status != 200:
                sc = 0.0
            elif metric["type"] == "judge":  # MT-Bench: the judge group rates the answer (as the bench does)
                jst, jdoc, _, _ = await client.chat(
                    metric["group"],
                    judge_messages(metric, it.prompt(), text, it.expected),
                    "judge",
                    64,
                    "eval",
                )
                rating = judge_score(jdoc["choices"][0]["message"]["content"]) if jst == 200 else None
                sc = 0.0 if rating is None else rating
            else:
                sc = score(metric, text, it.expected)
            out.append(
                {
                    "category": it.category,
                    "item": it.id,
                    "status": r.status,
                    "score": sc,
                    "cost": float(h.get("x-gateway-cost-usd", 0) or 0),
                    "served": h.get("x-gateway-model"),
                    "inferred": h.get("x-gateway-category"),
                }
            )

        await asyncio.gather(*(one(it) for it in items))
    return out


def compare(routed: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost saved and quality kept of ``routed`` vs ``base`` (same items), with paired-bootstrap intervals."""
    b = {(r["category"], r["item"]): r for r in base}
    pairs = [(r, b[(r["category"], r["item"])]) for r in routed if (r["category"], r["item"]) in b]

    def saved(ps: Any) -> float:
        cb = sum(p[1]["cost"] for p in ps)
        return 1 - sum(p[0]["cost"] for p in ps) / cb if cb else 0.0

    def kept(ps: Any) -> float:
        qb = sum(p[1]["score"] for p in ps)
        return sum(p[0]["score"] for p in ps) / qb if qb else 1.0

    return {
        "n": len(pairs),
        "cost_saved": round(saved(pairs), 4),
        "cost_saved_ci": [round(x, 4) for x in bootstrap(pairs, saved)],
        "quality_kept": round(kept(pairs), 4),
        "quality_kept_ci": [round(x, 4) for x in bootstrap(pairs, kept)],
        "accuracy_routed": round(sum(p[0]["score"] for p in pairs) / max(1, len(pairs)), 4),
        "accuracy_strong": round(sum(p[1]["score"] for p in pairs) / max(1, len(pairs)), 4),
        "weak_share": round(sum("weak" in (p[0]["served"] or "") for p in pairs) / max(1, len(pairs)), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--target-kept", type=float, default=0.95)
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument("--json", default=str(ROOT / "benches" / "quality" / "routing_eval_results.json"))
    ap.add_argument("--workdir", help="keep the run here (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true", help="keep the workdir's trained classifier")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="routing-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    if not (corpus / "answers.jsonl").exists():
        subprocess.run(
            [PY, "-m", "gateway", "bench", "import-routellm", str(CORPUS), "--out", str(corpus)], check=True
        )
    sim_port = free_port()
    sim = subprocess.Popen(
        [
            PY,
            "-m",
            "gateway",
            "simulate",
            "--port",
            str(sim_port),
            "--workers",
            "2",
            "--profile",
            str(corpus / "simulator.yaml"),
        ]
    )
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_http(sim_url + "/healthz", sim)
    procs = [sim]
    try:
        gw, url = start_gateway(config(sim_url, work / "gw.db", None, None, 0.5), work)
        procs.append(gw)
        t0 = time.time()
        subprocess.run(
            [PY, "-m", "gateway", "bench", "run", str(corpus / "suites"), "--models", "strong,weak", "--split", "bench",
             "--url", url, "--key", KEY, "--out", str(work / "run"), "--concurrency", str(args.concurrency),
             "--target-kept", str(args.target_kept), "--default", "strong", "--quiet", "--store", str(work / "gw.db")],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        bench_s = time.time() - t0
        clf = subprocess.run(
            ["true"] if (work / "classifier.npz").exists() and args.reuse else
            [PY, "-m", "gateway", "bench", "train-classifier", str(corpus / "suites"), "--split", "bench",
             "--out", str(work / "classifier.npz")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        if clf.stdout:
            (work / "classifier.txt").write_text(clf.stdout)
        clf_report = (work / "classifier.txt").read_text() if (work / "classifier.txt").exists() else ""
        print(clf_report)
        stop(gw)
        procs.remove(gw)
        suites = {s.category: s for s in load_suites(corpus / "suites")}
        gw, url = start_gateway(
            config(
                sim_url,
                work / "gw.db",
                work / "run" / "routing.yaml",
                work / "classifier.npz",
                args.min_confidence,
                tuple(suites),
            ),
            work,
        )
        procs.append(gw)
        held = [it for s in suites.values() for it in s.items if it.split == "held"]
        base = asyncio.run(serve_items(url, "strong", held, suites, True, args.concurrency))
        given = asyncio.run(serve_items(url, "auto", held, suites, True, args.concurrency))
        inferred = asyncio.run(serve_items(url, "auto", held, suites, False, args.concurrency))
    finally:
        for p in procs:
            stop(p)
    by_cat: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for name, rows in (("base", base), ("given", given), ("inferred", inferred)):
        for r in rows:
            by_cat[r["category"]][name].append(r)
    clf_hits = sum(r["inferred"] == r["category"] for r in inferred)
    table = yaml.safe_load((work / "run" / "routing.yaml").read_text())
    result = {
        "held_items": len(held),
        "bench_items": sum(len([i for i in s.items if i.split == "bench"]) for s in suites.values()),
        "bench_seconds": round(bench_s, 1),
        "target_kept_on_bench": args.target_kept,
        "categories_to_weak": sum(r["model"] == "weak" for r in table["categories"].values()),
        "categories": len(table["categories"]),
        "classifier": {
            "stdout": clf_report.strip().splitlines(),
            "held_inferred_any": sum(r["inferred"] is not None for r in inferred),
            "held_inferred_correct": clf_hits,
            "min_confidence": args.min_confidence,
        },
        "overall_given": compare(given, base),
        "overall_inferred": compare(inferred, base),
        "per_category_given": {c: compare(v["given"], v["base"]) for c, v in sorted(by_cat.items())},
    }
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_category_given"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
