"""``gateway bench run | report | import-routellm``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import yaml

from gateway.quality.suites import Suite, SuiteError, load_suites

if TYPE_CHECKING:
    from gateway.quality.allocate import Allocation
    from gateway.quality.runner import Result


def _finish(out: Path, suites_path: str, args: argparse.Namespace) -> int:
    from rich.console import Console

    from gateway.quality.report import (
        html_report,
        propose,
        propose_allocation,
        rich_table,
        routing_yaml,
        summarise,
    )
    from gateway.quality.runner import load_results

    suites = load_suites(suites_path)
    results = load_results(out / "results.jsonl")
    if not results:
        print(f"bench: no results in {out}", file=sys.stderr)
        return 1
    cells = summarise(results)
    thresholds = {s.category: s.threshold for s in suites if s.threshold is not None}
    default = args.default or max(
        {c.model for c in cells}, key=lambda m: sum(c.quality * c.n for c in cells if c.model == m)
    )
    notes: dict[str, object] = {}
    if args.target_kept is not None:
        alloc = _allocate(suites, results, args.target_kept, default)
        routes = propose_allocation(cells, alloc, args.target_kept, default)
        notes = {
            "target_kept": args.target_kept,
            "aimed_in_sample": round(alloc.aimed, 4),
            "cross_validated": {"folds": alloc.folds, "kept": round(alloc.cv_kept, 4), "saved": round(alloc.cv_saved, 4)},
        }  # fmt: skip
    else:
        routes = propose(cells, thresholds, args.threshold, args.relative, fallback=default)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(rich_table(cells))
    (out / "summary.json").write_bytes(
        orjson.dumps([c for c in cells], option=orjson.OPT_INDENT_2, default=_enc)
    )
    (out / "routing.yaml").write_text(
        yaml.safe_dump(routing_yaml(routes, default, cells, notes), sort_keys=False)
    )
    (out / "report.html").write_text(html_report(cells, routes, f"gateway bench: {out.name}"))
    if args.store:
        from gateway.quality.store import save_cells

        save_cells(args.store, out.name, cells)
    moved = sum(r.model != default for r in routes)
    console.print(
        f"routing table: {len(routes)} categories, {moved} to a cheaper model than {default} → {out / 'routing.yaml'}"
    )
    console.print(f"report: {out / 'report.html'}")
    return 0


def _allocate(suites: list[Suite], results: list[Result], target: float, reference: str) -> Allocation:
    """The cost-aware allocation over the bench items every model answered (scored, with their cost)."""
    from gateway.quality.allocate import Obs, allocate
    from gateway.quality.table import prompt_chars

    chars = {
        (s.category, it.id): prompt_chars(m.get("content") for m in it.messages)
        for s in suites
        for it in s.items
    }
    score: dict[tuple[str, str], dict[str, float]] = {}
    cost: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        if r.score is not None:
            score.setdefault((r.category, r.item), {})[r.model] = r.score
            cost.setdefault((r.category, r.item), {})[r.model] = r.cost_usd
    models = {r.model for r in results}
    # in item order, not the order the answers came back in: the cross-validation's folds, and so the proposal,
    # are the same for the same results
    obs = [
        Obs(k[0], chars.get(k, 0), sc, cost[k]) for k, sc in sorted(score.items()) if len(sc) == len(models)
    ]
    return allocate(obs, reference, target)


def _enc(o: object) -> object:
    import msgspec

    return msgspec.to_builtins(o)


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gateway.quality.runner import run_bench, todo_count

    try:
        suites = load_suites(args.suites)
    except (SuiteError, ValueError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    total = todo_count(suites, models, out, args.split, args.limit)
    errors = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeRemainingColumn(),
        disable=args.quiet,
    ) as progress:
        task = progress.add_task("bench", total=total, errors=0)

        def on_result(r: Result) -> None:
            nonlocal errors
            errors += r.score is None
            progress.update(task, advance=1, errors=errors, description=f"{r.model} {r.category}"[:40])

        try:
            asyncio.run(
                run_bench(
                    suites,
                    models,
                    args.url,
                    args.key,
                    out,
                    args.concurrency,
                    args.split,
                    args.limit,
                    on_result,
                )
            )
        except KeyboardInterrupt:
            print("bench: interrupted; run the same command again to resume", file=sys.stderr)
            return 130
    return _finish(out, args.suites, args)


def report(args: argparse.Namespace) -> int:
    return _finish(Path(args.out), args.suites, args)


def import_routellm(args: argparse.Namespace) -> int:
    from gateway.quality.routellm import write_corpus

    counts = write_corpus(Path(args.corpus), Path(args.out))
    for k, v in counts.items():
        print(f"{k}: {v}")
    return 0


def train_classifier(args: argparse.Namespace) -> int:
    from gateway.quality.classifier import Classifier, train
    from gateway.quality.stats import wilson

    suites = load_suites(args.suites)
    items = [it for s in suites for it in s.items]
    fit = [it for it in items if args.split is None or it.split in (None, args.split)]
    clf = train([it.prompt() for it in fit], [it.category for it in fit], epochs=args.epochs)
    clf.save(args.out)
    print(f"classifier: {len(clf.labels)} categories, trained on {len(fit)} items → {args.out}")
    held = [it for it in items if args.split is not None and it.split not in (None, args.split)]
    if held:
        loaded = Classifier.load(args.out)
        preds = [loaded.predict(it.prompt()) for it in held]
        hits = sum(p[0] == it.category for p, it in zip(preds, held, strict=True))
        lo, hi = wilson(hits, len(held))
        print(f"held-out accuracy: {hits / len(held):.3f} [{lo:.3f}, {hi:.3f}] on {len(held)} items")
        for bar in (0.3, 0.5, 0.7, 0.9):
            sure = [(p, it) for p, it in zip(preds, held, strict=True) if p[1] >= bar]
            if sure:
                k = sum(p[0] == it.category for p, it in sure)
                print(
                    f"  confidence >= {bar}: {len(sure) / len(held):.1%} of items, accuracy {k / len(sure):.3f}"
                )
    return 0


def main(argv: list[str]) -> int:
    b = argparse.ArgumentParser(
        prog="gateway bench", description="Benchmark model groups through the gateway."
    )
    bs = b.add_subparsers(dest="bench_cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("suites", help="a suite file or a directory of them (*.yaml)")
        p.add_argument(
            "--out", required=True, help="run directory (results.jsonl, report.html, routing.yaml)"
        )
        p.add_argument("--threshold", type=float, help="quality bar for categories whose suite sets none")
        p.add_argument(
            "--relative", type=float, help="else: this share of the best model's quality in the category"
        )
        p.add_argument("--default", help="the category-less default model (default: the best overall)")
        p.add_argument(
            "--target-kept",
            type=float,
            help="instead of per-category bars: keep this share of the default model's quality overall, cheapest",
        )
        p.add_argument("--store", help="SQLite store to keep the results in (e.g. the gateway's store path)")

    r = bs.add_parser("run", help="run (or resume) a bench and write its report and routing table")
    common(r)
    r.add_argument("--models", required=True, help="comma-separated model groups to compare")
    r.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    r.add_argument("--key", required=True, help="a gateway key (the bench's traffic is recorded under it)")
    r.add_argument("--concurrency", type=int, default=8)
    r.add_argument("--split", help="only items of this split (e.g. bench), plus items without one")
    r.add_argument("--limit", type=int, help="at most this many items per category")
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.set_defaults(bench_fn=run)
    p = bs.add_parser("report", help="re-render the table, report and routing table of a run directory")
    common(p)
    p.set_defaults(bench_fn=report)
    i = bs.add_parser("import-routellm", help="suites + simulator answers from the RouteLLM per-item data")
    i.add_argument("corpus", help="path of the routellm corpus (its routellm/evals directory is read)")
    i.add_argument("--out", required=True)
    i.set_defaults(bench_fn=import_routellm)
    t = bs.add_parser("train-classifier", help="train the request-category classifier on the suites' inputs")
    t.add_argument("suites")
    t.add_argument("--out", required=True, help="classifier file (.npz) for quality.classifier")
    t.add_argument("--split", help="train on this split only (the rest is reported as held out)")
    t.add_argument("--epochs", type=int, default=24)
    t.set_defaults(bench_fn=train_classifier)
    args = b.parse_args(argv)
    try:
        return int(args.bench_fn(args))
    except (SuiteError, ValueError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
