"""Benchmark-validated routing end to end, against real gateways and the simulator answering RouteLLM's items right
or wrong as the real models did; clients are the official openai SDK, plain HTTP and the CLI.

`gateway bench` (through the gateway: cost and latency recorded like any traffic; resumable; table, HTML report,
routing table, store rows), the ``quality`` strategy (categories from header, metadata or the classifier; pins and
residency first), and the closed loop (feedback, demotion with an alert, bounded exploration)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import CORPORA, KEY_A, KEY_B, PY, ROOT, Gateway
from tests.procs import free_port, stop, wait_http

ROUTELLM = CORPORA / "routellm"
STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"
CATS = ("mmlu_astronomy", "mmlu_high_school_mathematics", "gsm8k")
PER_CAT = 12

pytestmark = pytest.mark.skipif(not ROUTELLM.is_dir(), reason="the routellm corpus is not present")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The imported corpus, with a small suites directory (a few categories, the first items of each)."""
    out = tmp_path_factory.mktemp("routellm")
    r = subprocess.run(
        [PY, "-m", "gateway", "bench", "import-routellm", str(ROUTELLM), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "categories: 66" in r.stdout  # 57 MMLU subjects, GSM8K, 8 MT-Bench categories
    small = out / "small"
    small.mkdir()
    for cat in CATS:
        shutil.copy(out / "suites" / f"{cat}.yaml", small)
        lines = (out / "suites" / f"{cat}.jsonl").read_text().splitlines()
        (small / f"{cat}.jsonl").write_text("\n".join(lines[:PER_CAT]) + "\n")
    judged = out / "judged"  # an MT-Bench category: graded by the judge metric
    judged.mkdir()
    for ext in ("yaml", "jsonl"):
        shutil.copy(out / "suites" / f"mtbench_writing.{ext}", judged)
    return out


@pytest.fixture(scope="module")
def sim_url(corpus: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "simulate", "--port", str(port), "--profile", str(corpus / "simulator.yaml")],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    yield url
    stop(proc)


def bench_config(sim: str, db: Path) -> dict[str, Any]:
    v1 = sim + "/v1"
    return {
        "server": {"host": "127.0.0.1", "workers": 1},
        "store": {"sqlite_path": str(db), "record_flush_ms": 50},
        "keys": [{"key": KEY_A, "name": "a", "tenant": "tenant-a"}],
        "models": {
            "strong": {
                "deployments": [
                    {
                        "id": "strong-1",
                        "model": STRONG,
                        "api_base": v1,
                        "api_key": "k",
                        "price": {"input": 10, "output": 30},
                    }
                ]
            },
            "weak": {
                "deployments": [
                    {
                        "id": "weak-1",
                        "model": WEAK,
                        "api_base": v1,
                        "api_key": "k",
                        "price": {"input": 0.6, "output": 0.6},
                    }
                ]
            },
            "judge": {
                "deployments": [{"id": "judge-1", "model": "gpt-4-judge", "api_base": v1, "api_key": "k"}]
            },
        },
    }


@pytest.fixture(scope="module")
def gw(
    sim_url: str, start_gateway: Callable[..., Gateway], tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    return start_gateway(bench_config(sim_url, tmp_path_factory.mktemp("db") / "gateway.db"))


def recorded(corpus: Path) -> dict[tuple[str, str], bool]:
    """(category, item id) → whether the weak model was right, per the corpus (strong under key 'strong')."""
    from gateway.simulate.answers import prompt_key

    answers = {}
    for line in (corpus / "answers.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        answers[row["key"]] = row.get("correct")
    out = {}
    for cat in CATS:
        for line in (corpus / "small" / f"{cat}.jsonl").read_bytes().splitlines():
            item = orjson.loads(line)
            c = answers[prompt_key(item["input"])]
            out[("strong", cat, item["id"])] = c[STRONG]
            out[("weak", cat, item["id"])] = c[WEAK]
    return out  # type: ignore[return-value]


def test_simulator_answers_as_recorded(gw: Gateway, corpus: Path) -> None:
    """An item the strong model got right and the weak one wrong is answered that way through the gateway."""
    rows = [orjson.loads(x) for x in (corpus / "small" / "mmlu_astronomy.jsonl").read_bytes().splitlines()]
    want = recorded(corpus)
    client = gw.openai()
    for item in rows:
        s, w = want[("strong", "mmlu_astronomy", item["id"])], want[("weak", "mmlu_astronomy", item["id"])]
        if s and not w:
            break
    else:
        pytest.fail("no item where only the strong model is right")
    msgs = [{"role": "user", "content": item["input"]}]
    strong = client.chat.completions.create(model="strong", messages=msgs)
    weak = client.chat.completions.create(model="weak", messages=msgs)
    assert strong.choices[0].message.content == f"Answer: {item['expected']}"
    assert weak.choices[0].message.content != f"Answer: {item['expected']}"
    assert weak.choices[0].message.content.startswith("Answer: ")


def test_bench_run_resume_report_routing_table(gw: Gateway, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    store = tmp_path / "bench.db"
    cmd = [
        PY, "-m", "gateway", "bench", "run", str(corpus / "small"), "--models", "strong,weak", "--url", gw.url,
        "--key", KEY_A, "--out", str(out), "--concurrency", "4", "--relative", "0.9", "--store", str(store),
    ]  # fmt: skip
    # interrupted after the first category's worth: a limit of 4 items, then the whole run resumes
    first = subprocess.run([*cmd, "--limit", "4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert len((out / "results.jsonl").read_bytes().splitlines()) == 4 * len(CATS) * 2
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(x) for x in (out / "results.jsonl").read_bytes().splitlines()]
    assert len(lines) == PER_CAT * len(CATS) * 2  # the resumed run made only the missing calls
    want = recorded(corpus)
    for row in lines:
        assert row["score"] == float(want[(row["model"], row["category"], row["item"])]), row
        assert row["cost_usd"] > 0 and row["latency_ms"] > 0 and row["status"] == 200
    # the table is printed; report, routing table and store are written
    assert "quality [95% CI]" in r.stdout and "mmlu_astronomy" in r.stdout and "p95 ms" in r.stdout
    html = (out / "report.html").read_text()
    assert (
        "<svg" in html and "Proposed routing table" in html and "http" not in html.split("<body>")[1].lower()
    )
    table = yaml.safe_load((out / "routing.yaml").read_text())
    assert table["default"] == "strong" and set(table["categories"]) == set(CATS)
    for row in table["categories"].values():
        assert row["model"] in ("strong", "weak") and 0 <= row["lo"] <= row["quality"] <= 1
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT count(*) FROM bench_results").fetchone()[0] == len(CATS) * 2
    from gateway.observability.reports import evaluations  # the weekly report's "models under evaluation"

    section = evaluations(conn, 0, time.time() + 1)
    conn.close()
    assert len(section[3]) == len(CATS) * 2 and {row[2] for row in section[3]} == {"strong", "weak"}
    # the bench's calls are ordinary traffic: recorded, tagged and categorised
    deadline = time.monotonic() + 10
    while True:
        recs = [x for x in gw.records() if x.get("tags") and "bench" in x["tags"]]
        if len(recs) >= len(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(recs) >= len(lines) and {x["category"] for x in recs} == set(CATS)
    # rerunning does nothing new
    again = subprocess.run([*cmd, "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert len((out / "results.jsonl").read_bytes().splitlines()) == len(lines)


def test_judge_metric_scores_as_the_recorded_judgements(gw: Gateway, corpus: Path, tmp_path: Path) -> None:
    """MT-Bench answers judged by a judge model group with a rubric: the simulated judge gives GPT-4's recorded
    1-10 rating of each recorded answer, so the bench's scores are those ratings / 10."""
    from gateway.quality.routellm import load_items

    want = {
        (m, it["prompt"]): v
        for it in load_items(ROUTELLM)
        if it["category"] == "mtbench_writing"
        for m, v in it["correct"].items()
    }
    out = tmp_path / "run"
    r = subprocess.run(
        [PY, "-m", "gateway", "bench", "run", str(corpus / "judged"), "--models", "strong,weak", "--url", gw.url,
         "--key", KEY_A, "--out", str(out), "--quiet", "--relative", "0.9"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    items_by_id = {
        x["id"]: x["input"]
        for x in map(orjson.loads, (corpus / "judged" / "mtbench_writing.jsonl").read_bytes().splitlines())
    }
    rows = [orjson.loads(x) for x in (out / "results.jsonl").read_bytes().splitlines()]
    assert len(rows) == 2 * len(items_by_id) >= 14
    model = {"strong": STRONG, "weak": WEAK}
    for row in rows:
        assert row["score"] == pytest.approx(want[(model[row["model"]], items_by_id[row["item"]])]), row


def test_bench_refuses_bad_suite(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("category: x\nmetric: {type: nope}\nitems: []\n")
    r = subprocess.run(
        [
            PY,
            "-m",
            "gateway",
            "bench",
            "run",
            str(tmp_path),
            "--models",
            "a",
            "--key",
            "k",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "metric type must be one of" in r.stderr and "Traceback" not in r.stderr


ADMIN = "gw-admin-key-quality-tests-000000000000"


def items(corpus: Path, cat: str, split: str | None = None) -> list[dict[str, Any]]:
    rows = [orjson.loads(x) for x in (corpus / "suites" / f"{cat}.jsonl").read_bytes().splitlines()]
    return [r for r in rows if split is None or r["split"] == split]


def auto_config(sim: str, db: Path, table: Path, **quality: Any) -> dict[str, Any]:
    v1 = sim + "/v1"
    return {
        "server": {"host": "127.0.0.1", "workers": 1},
        "store": {"sqlite_path": str(db), "record_flush_ms": 50},
        "admin": {"key": ADMIN},
        "keys": [
            {"key": KEY_A, "name": "a", "tenant": "tenant-a"},
            {"key": KEY_B, "name": "b", "tenant": "tenant-b"},
            {
                "key": "gw-test-eu-only-key-00000000000000000",
                "name": "eu",
                "tenant": "t",
                "residency": ["eu"],
            },
            {
                "key": "gw-test-pinned-key-000000000000000000",
                "name": "pin",
                "tenant": "t",
                "pins": {"auto": STRONG},
            },
        ],
        "models": {
            "auto": {
                "strategy": "quality",
                "deployments": [
                    {
                        "id": "auto-strong",
                        "model": STRONG,
                        "api_base": v1,
                        "api_key": "k",
                        "region": "eu",
                        "price": {"input": 10, "output": 30},
                    },
                    {
                        "id": "auto-weak",
                        "model": WEAK,
                        "api_base": v1,
                        "api_key": "k",
                        "region": "us",
                        "price": {"input": 0.6, "output": 0.6},
                    },
                ],
                "quality": {"table": str(table), **quality},
            },
            "strong": {"deployments": [{"id": "strong-1", "model": STRONG, "api_base": v1, "api_key": "k"}]},
            "weak": {"deployments": [{"id": "weak-1", "model": WEAK, "api_base": v1, "api_key": "k"}]},
        },
    }


def write_table(path: Path, rows: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"default": "strong", "categories": rows}))
    return path


def post(
    url: str, body: dict[str, Any], key: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    req = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, orjson.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read()), e.headers


@pytest.fixture
def make_gw(
    sim_url: str,
    start_gateway: Callable[..., Gateway],
    tmp_path: Path,
) -> Callable[..., Gateway]:
    def make(rows: dict[str, Any], **quality: Any) -> Gateway:
        table = write_table(tmp_path / "routing.yaml", rows)
        return start_gateway(auto_config(sim_url, tmp_path / "gateway.db", table, **quality))

    return make


def test_routes_by_category_given_by_header_or_metadata(
    make_gw: Callable[..., Gateway], corpus: Path
) -> None:
    gw = make_gw({"mmlu_astronomy": {"model": "weak", "threshold": 0.6}, "gsm8k": "strong"})
    client = gw.openai()
    msgs = [{"role": "user", "content": items(corpus, "mmlu_astronomy")[0]["input"]}]
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs, extra_headers={"x-gateway-category": "mmlu_astronomy"}
    )
    assert r.headers["x-gateway-model"] == "auto-weak"
    assert r.headers["x-gateway-category"] == "mmlu_astronomy"
    assert "category=mmlu_astronomy threshold=0.600 → auto-weak" in r.headers["x-gateway-route"]
    assert gw.record(r.headers["x-gateway-request-id"])["category"] == "mmlu_astronomy"
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs, metadata={"category": "gsm8k"}
    )
    assert r.headers["x-gateway-model"] == "auto-strong" and r.headers["x-gateway-category"] == "gsm8k"
    # no category (and no classifier), or one the table does not know: the default, strong model
    r = client.chat.completions.with_raw_response.create(model="auto", messages=msgs)
    assert r.headers["x-gateway-model"] == "auto-strong" and "no category" in r.headers["x-gateway-route"]
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs, extra_headers={"x-gateway-category": "poetry"}
    )
    assert r.headers["x-gateway-model"] == "auto-strong" and "not in table" in r.headers["x-gateway-route"]
    # a category given on a plain group labels the record too
    r = client.chat.completions.with_raw_response.create(
        model="strong", messages=msgs, extra_headers={"x-gateway-category": "mmlu_astronomy"}
    )
    assert gw.record(r.headers["x-gateway-request-id"])["category"] == "mmlu_astronomy"
    # a category is caller-chosen text: one with personal data is kept in the record only as a keyed hash
    r = client.chat.completions.with_raw_response.create(
        model="strong", messages=msgs, extra_headers={"x-gateway-category": "jane.doe@example.com"}
    )
    assert gw.record(r.headers["x-gateway-request-id"])["category"].startswith("h:")


def test_a_rows_min_chars_keeps_short_prompts_on_the_default(
    make_gw: Callable[..., Gateway], corpus: Path
) -> None:
    """A cost-aware row: the category's prompts from ``min_chars`` characters on go to the cheaper model, shorter
    ones to the default; the route header says which and why."""
    prompts = sorted((it["input"] for it in items(corpus, "mmlu_astronomy")), key=len)
    short, long_ = prompts[0], prompts[-1]
    gw = make_gw({"mmlu_astronomy": {"model": "weak", "threshold": 0.6, "min_chars": len(long_)}})
    client = gw.openai()
    cat = {"x-gateway-category": "mmlu_astronomy"}
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": short}], extra_headers=cat
    )
    assert r.headers["x-gateway-model"] == "auto-strong"
    assert f"prompt {len(short)} < {len(long_)} chars" in r.headers["x-gateway-route"]
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": long_}], extra_headers=cat
    )
    assert r.headers["x-gateway-model"] == "auto-weak"


def test_pins_and_residency_win_over_the_table(make_gw: Callable[..., Gateway], corpus: Path) -> None:
    gw = make_gw({"mmlu_astronomy": "weak"})
    msgs = [{"role": "user", "content": items(corpus, "mmlu_astronomy")[0]["input"]}]
    for key in ("gw-test-eu-only-key-00000000000000000", "gw-test-pinned-key-000000000000000000"):
        r = gw.openai(key).chat.completions.with_raw_response.create(
            model="auto", messages=msgs, extra_headers={"x-gateway-category": "mmlu_astronomy"}
        )
        assert r.headers["x-gateway-model"] == "auto-strong", key


def test_classifier_infers_the_category(
    make_gw: Callable[..., Gateway],
    corpus: Path,
    tmp_path: Path,
) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    for cat in ("mmlu_astronomy", "mmlu_high_school_mathematics", "gsm8k"):
        (suites / f"{cat}.yaml").write_text((corpus / "suites" / f"{cat}.yaml").read_text())
        (suites / f"{cat}.jsonl").write_text((corpus / "suites" / f"{cat}.jsonl").read_text())
    out = subprocess.run(
        [PY, "-m", "gateway", "bench", "train-classifier", str(suites), "--split", "bench", "--out", str(tmp_path / "c.npz")],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "held-out accuracy" in out.stdout
    gw = make_gw({"gsm8k": "weak"}, classifier=str(tmp_path / "c.npz"), min_confidence=0.6)
    held = items(corpus, "gsm8k", "held")[:5]
    served = []
    for it in held:
        r = gw.openai().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": it["input"]}]
        )
        served.append(r.headers["x-gateway-model"])
        if r.headers.get("x-gateway-category") == "gsm8k":
            rec = gw.record(r.headers["x-gateway-request-id"])
            assert rec["category"] == "gsm8k" and rec["flags"]["category_inferred"] >= 0.6
    assert served.count("auto-weak") >= 4  # inferred as gsm8k, routed by the table
    # below the confidence bar: category-less, the default (strong) deployment
    unsure = make_gw({"gsm8k": "weak"}, classifier=str(tmp_path / "c.npz"), min_confidence=0.999)
    r = unsure.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What should I cook tonight?"}]
    )
    assert r.headers["x-gateway-model"] == "auto-strong" and "x-gateway-category" not in r.headers
    assert "category_unsure" in unsure.record(r.headers["x-gateway-request-id"])["flags"]


def test_feedback_demotes_a_failing_model_with_an_alert(
    make_gw: Callable[..., Gateway],
    corpus: Path,
    sim_url: str,
) -> None:
    gw = make_gw({"mmlu_astronomy": {"model": "weak", "threshold": 0.6, "quality": 0.85, "n": 40}})
    feedback = gw.url + "/v1/feedback"
    # the weak model starts failing astronomy (its recorded answers are overridden at run time)
    req = urllib.request.Request(
        f"{sim_url}/_sim/models/{WEAK}",
        data=orjson.dumps({"quality": {"mmlu_astronomy": 0.0}}),
        method="POST",
    )
    urllib.request.urlopen(req, timeout=5).close()
    try:
        demoted_after = None
        for n, it in enumerate(items(corpus, "mmlu_astronomy")[:30], 1):
            status, doc, h = post(
                gw.url + "/v1/chat/completions",
                {"model": "auto", "messages": [{"role": "user", "content": it["input"]}]},
                KEY_A,
                {"x-gateway-category": "mmlu_astronomy"},
            )
            assert status == 200
            if h["x-gateway-model"] == "auto-strong":
                demoted_after = n - 1
                assert "demoted" in h["x-gateway-route"]
                break
            right = doc["choices"][0]["message"]["content"] == f"Answer: {it['expected']}"
            assert not right
            # another key may not rate it; a bad body is refused in the caller's dialect
            if n == 1:
                assert post(feedback, {"request_id": h["x-gateway-request-id"], "score": 0}, KEY_B)[0] == 404
                bad = post(feedback, {"request_id": h["x-gateway-request-id"], "score": 3}, KEY_A)
                assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid_request"
            st, body, _ = post(feedback, {"request_id": h["x-gateway-request-id"], "thumbs": "down"}, KEY_A)
            assert st == 200 and body["applied"] and body["deployment"] == "auto-weak"
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{sim_url}/_sim/models/{WEAK}", method="DELETE"), timeout=5
        )
    print(f"demoted after {demoted_after} thumbs-down")
    assert demoted_after is not None and demoted_after <= 10
    # the alert and the audit trail
    deadline = time.monotonic() + 10
    recs: list[dict[str, Any]] = []
    while not recs and time.monotonic() < deadline:
        time.sleep(0.1)
        recs = [
            r
            for r in gw.records()
            if r["endpoint"] == "feedback" and (r.get("flags") or {}).get("quality_change")
        ]
    assert recs and recs[0]["flags"]["quality_change"]["event"] == "demoted"
    assert recs[0]["flags"]["quality_change"]["from"] == "auto-weak"
    alerts = []
    for _ in range(50):
        q = urllib.request.Request(gw.url + "/admin/alerts", headers={"authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(q, timeout=5) as r:
            doc = orjson.loads(r.read())
        listed = doc["data"]
        alerts = [a for a in listed if a["signal"] == "quality_demotion"]
        if alerts:
            break
        time.sleep(0.1)
    assert alerts and "auto-weak demoted for category mmlu_astronomy" in alerts[0]["message"]
    q = urllib.request.Request(gw.url + "/admin/quality/auto", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(q, timeout=5) as r:
        snap = orjson.loads(r.read())["auto"]["mmlu_astronomy"]
    assert snap["deployment"] == "auto-strong" and snap["estimates"]["auto-weak"]["lower"] < 0.6


def test_exploration_stays_within_its_budget(make_gw: Callable[..., Gateway], corpus: Path) -> None:
    gw = make_gw({"mmlu_astronomy": {"model": "strong", "threshold": 0.7}}, explore=0.05)
    msgs = [{"role": "user", "content": items(corpus, "mmlu_astronomy")[0]["input"]}]
    served = []
    client = gw.openai()
    for _ in range(120):
        r = client.chat.completions.with_raw_response.create(
            model="auto", messages=msgs, extra_headers={"x-gateway-category": "mmlu_astronomy"}
        )
        served.append(r.headers["x-gateway-model"])
        assert served.count("auto-weak") <= 0.05 * len(served)  # never above the budget, at any point
    assert served.count("auto-weak") == 6  # and it is used: 5% of 120


def test_a_new_routing_table_is_applied_by_reload(
    make_gw: Callable[..., Gateway], corpus: Path, tmp_path: Path
) -> None:
    """A bench's new proposal goes live without a restart: rewrite the table file, ``POST /admin/reload``."""
    gw = make_gw({"mmlu_astronomy": "strong"})
    msgs = [{"role": "user", "content": items(corpus, "mmlu_astronomy")[0]["input"]}]

    def served() -> str:
        r = gw.openai().chat.completions.with_raw_response.create(
            model="auto", messages=msgs, extra_headers={"x-gateway-category": "mmlu_astronomy"}
        )
        return str(r.headers["x-gateway-model"])

    assert served() == "auto-strong"
    write_table(tmp_path / "routing.yaml", {"mmlu_astronomy": {"model": "weak", "threshold": 0.7}})
    req = urllib.request.Request(
        gw.url + "/admin/reload", data=b"", method="POST", headers={"authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
    # the retiring worker serves until it has had 1 s without requests, and it starts retiring only once its
    # replacement is up: ask less often than that until three answers in a row come from the new table
    deadline, in_a_row = time.monotonic() + 60, 0
    while time.monotonic() < deadline and in_a_row < 3:
        time.sleep(1.5)
        in_a_row = in_a_row + 1 if served() == "auto-weak" else 0
    assert in_a_row == 3 and served() == "auto-weak"
    # a table naming a model the group does not have is refused by reload; the running table keeps serving
    write_table(tmp_path / "routing.yaml", {"mmlu_astronomy": "nonexistent"})
    req = urllib.request.Request(
        gw.url + "/admin/reload", data=b"", method="POST", headers={"authorization": f"Bearer {ADMIN}"}
    )
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(req, timeout=10)
    assert bad.value.code == 400 and b"nonexistent" in bad.value.read()
    assert served() == "auto-weak"


@pytest.mark.heavy
def test_bench_report_renders_in_chromium(gw: Gateway, corpus: Path, tmp_path: Path) -> None:
    """The HTML report as a user opens it: headless Chromium draws its plots from the file alone (no network)."""
    from selenium.webdriver.common.by import By

    from tests.integration.test_dashboard import chromium

    out = tmp_path / "run"
    r = subprocess.run(
        [PY, "-m", "gateway", "bench", "run", str(corpus / "small"), "--models", "strong,weak", "--url", gw.url,
         "--key", KEY_A, "--out", str(out), "--quiet", "--target-kept", "0.9", "--default", "strong"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    browser = chromium()
    try:
        browser.get((out / "report.html").as_uri())
        dots = browser.find_elements(By.CSS_SELECTOR, "svg circle")
        assert len(dots) >= len(CATS) * 2  # a dot per category x model, and the cost/quality points
        rows = browser.find_elements(
            By.XPATH, "//h2[text()='Proposed routing table']/following-sibling::table[1]//tr"
        )
        assert len(rows) == len(CATS) + 1
        assert browser.get_screenshot_as_png()[:4] == b"\x89PNG"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()


def test_posteriors_are_shared_through_redis(
    sim_url: str, start_gateway: Callable[..., Gateway], corpus: Path, tmp_path: Path, redis_url: str
) -> None:
    """Two replicas sharing Redis: thumbs-down sent to one demote the category on the other too; the same prompt
    asked again by the same caller counts against the earlier answer (an automatic signal)."""
    table = write_table(
        tmp_path / "routing.yaml",
        {"mmlu_marketing": {"model": "weak", "threshold": 0.6, "quality": 0.9, "n": 20}},
    )
    replicas = []
    for i in range(2):
        cfg = auto_config(sim_url, tmp_path / f"gw{i}.db", table)
        cfg["state"] = {"redis_url": redis_url}
        replicas.append(start_gateway(cfg))
    one, two = replicas
    prompts = [it["input"] for it in items(corpus, "mmlu_marketing")[:12]]

    def ask(gw: Gateway, prompt: str) -> tuple[str, str, str]:
        r = gw.openai().chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-gateway-category": "mmlu_marketing"},
        )
        return r.headers["x-gateway-model"], r.headers["x-gateway-request-id"], r.headers["x-gateway-route"]

    served, rid, _ = ask(one, prompts[0])
    again, rid2, _ = ask(one, prompts[0])  # the same caller, the same prompt, at once: a retry
    assert served == again == "auto-weak"
    assert one.record(rid2)["flags"]["quality_retry_of"] == "auto-weak"
    for p in prompts[1:]:
        served, rid, _ = ask(one, p)
        if served != "auto-weak":
            break
        assert post(one.url + "/v1/feedback", {"request_id": rid, "thumbs": "down"}, KEY_A)[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        served, _, route = ask(two, prompts[-1])
        if served == "auto-strong":
            break
        time.sleep(0.3)
    assert served == "auto-strong" and "demoted" in route  # the other replica adopted the shared estimate


def test_odd_categories_are_answered_and_recorded(make_gw: Callable[..., Gateway], corpus: Path) -> None:
    """A category in any script, very long, or in metadata as a non-string: answered, never a 500."""
    gw = make_gw({"mmlu_astronomy": "weak"})
    msgs = [{"role": "user", "content": "hello"}]
    for headers, metadata in (
        ({"x-gateway-category": "catégorie-ünïcode"}, None),
        ({"x-gateway-category": "x" * 5000}, None),
        ({}, {"category": 42}),
        ({}, {"category": "mmlu_astronomy"}),
    ):
        status, doc, h = post(
            gw.url + "/v1/chat/completions",
            {"model": "auto", "messages": msgs, **({"metadata": metadata} if metadata else {})},
            KEY_A,
            headers,
        )
        assert status == 200, doc
        rec = gw.record(h["x-gateway-request-id"])
        assert rec["category"] is None or len(rec["category"]) <= 64


# ------------------------------------------------------------------ automatic signals, end to end (Redis-shared)

REFUSAL = "I'm sorry, but I can't help with that."
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        },
    },
}


@pytest.fixture
def redis_gw(
    sim_url: str, start_gateway: Callable[..., Gateway], tmp_path: Path, redis_url: str
) -> Callable[..., Gateway]:
    """A gateway whose ``auto`` group routes by ``rows``, its posteriors and budgets in Redis."""

    def make(rows: dict[str, Any], **extra: Any) -> Gateway:
        cfg = auto_config(sim_url, tmp_path / "gateway.db", write_table(tmp_path / "routing.yaml", rows))
        cfg["state"] = {"redis_url": redis_url}
        cfg.update(extra)
        return start_gateway(cfg)

    return make


def estimate(gw: Gateway, category: str, deployment: str) -> dict[str, float]:
    q = urllib.request.Request(gw.url + "/admin/quality/auto", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(q, timeout=5) as r:
        return orjson.loads(r.read())["auto"][category]["estimates"][deployment]  # type: ignore[no-any-return]


def estimate_after(gw: Gateway, category: str, deployment: str, n: float) -> dict[str, float]:
    """The estimate once it has counted ``n`` signals (a signal is applied just after its answer)."""
    deadline = time.monotonic() + 10
    while True:
        est = estimate(gw, category, deployment)
        if est["n"] >= n or time.monotonic() > deadline:
            return est
        time.sleep(0.05)


def flags_of(gw: Gateway, request_id: str) -> dict[str, Any]:
    return gw.record(request_id).get("flags") or {}


def weak_says(text: str) -> str:
    """A simulator directive: the weak model answers exactly ``text`` (the strong one answers as usual)."""
    return f"\n[[sim@{WEAK}:output={text}]]"


def test_a_refusal_lowers_the_models_estimate_until_it_is_demoted(
    redis_gw: Callable[..., Gateway], corpus: Path
) -> None:
    """The weak model refuses (a plain-text refusal, as assistants word it): each refusal counts as a failed
    answer of that model in that category, and the category moves to the strong model with an alert."""
    cat = "mmlu_virology"
    gw = redis_gw({cat: {"model": "weak", "threshold": 0.6, "quality": 0.9, "n": 20}})
    client = gw.openai()
    before = estimate(gw, cat, "auto-weak")
    assert before["n"] == 20 and before["mean"] > 0.85
    prompts = [it["input"] for it in items(corpus, cat)[:12]]
    # an ordinary answer carries no signal
    r = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": prompts[0]}],
        extra_headers={"x-gateway-category": cat},
    )
    assert r.headers["x-gateway-model"] == "auto-weak"
    assert "quality_refusal" not in flags_of(gw, r.headers["x-gateway-request-id"])
    demoted_after = None
    for n, prompt in enumerate(prompts[1:], 1):
        r = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt + weak_says(REFUSAL)}],
            extra_headers={"x-gateway-category": cat},
        )
        if r.headers["x-gateway-model"] == "auto-strong":
            assert "demoted" in r.headers["x-gateway-route"]
            demoted_after = n - 1
            break
        assert r.parse().choices[0].message.content == REFUSAL
        assert flags_of(gw, r.headers["x-gateway-request-id"])["quality_refusal"] is True
        est = estimate_after(gw, cat, "auto-weak", 20 + n)
        assert est["n"] == 20 + n and est["mean"] < before["mean"]
        before = est
    assert (
        demoted_after is not None and 5 <= demoted_after <= 8
    )  # min_signals 5, the bench's prior of 20 items
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not alerts and time.monotonic() < deadline:
        q = urllib.request.Request(gw.url + "/admin/alerts", headers={"authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(q, timeout=5) as resp:
            alerts = [a for a in orjson.loads(resp.read())["data"] if a["signal"] == "quality_demotion"]
        time.sleep(0.1)
    assert alerts and f"auto-weak demoted for category {cat}" in alerts[0]["message"]


def test_a_schema_failure_lowers_the_models_estimate(redis_gw: Callable[..., Gateway], corpus: Path) -> None:
    """The weak model's answer does not match the requested JSON schema (nor does its retry): the caller gets
    the strong model's valid answer, and the failure counts against the weak model in that category."""
    cat = "mmlu_nutrition"
    gw = redis_gw({cat: {"model": "weak", "threshold": 0.6, "quality": 0.9, "n": 20}})
    client = gw.openai()
    before = estimate(gw, cat, "auto-weak")
    prompts = [it["input"] for it in items(corpus, cat)[:12]]
    demoted_after = None
    for n, prompt in enumerate(prompts, 1):
        r = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt + weak_says("The answer is B.")}],
            response_format=SCHEMA,  # type: ignore[arg-type]
            extra_headers={"x-gateway-category": cat},
        )
        assert r.headers["x-gateway-model"] == "auto-strong"  # the fallback's answer, valid
        assert "answer" in orjson.loads(r.parse().choices[0].message.content or "")
        flags = flags_of(gw, r.headers["x-gateway-request-id"])
        assert flags["schema_valid"] is True
        if "schema_repairs" not in flags:  # the strong model was asked first: demoted, nothing failed
            assert "demoted" in r.headers["x-gateway-route"]
            demoted_after = n - 1
            break
        assert flags["schema_repairs"][0].startswith("auto-weak: ")
        est = estimate_after(gw, cat, "auto-weak", 20 + n)
        assert est["n"] == 20 + n and est["mean"] < before["mean"]  # one signal per request, not per attempt
        before = est
    assert demoted_after is not None and 5 <= demoted_after <= 8


def test_streams_give_refusal_retry_and_schema_signals(
    redis_gw: Callable[..., Gateway], corpus: Path
) -> None:
    """A stream's text is read when it ends (a refusal or an answer that fails the requested schema counts
    against the model), in both dialects; a caller streaming the same prompt again counts against the earlier
    answer."""
    cat = "mmlu_philosophy"
    gw = redis_gw({cat: {"model": "weak", "threshold": 0.6, "quality": 0.9, "n": 20}})
    prompts = [it["input"] for it in items(corpus, cat)[:3]]
    before = estimate(gw, cat, "auto-weak")
    # OpenAI SDK, streamed refusal
    with gw.openai().chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": prompts[0] + weak_says(REFUSAL)}],
        stream=True,
        extra_headers={"x-gateway-category": cat},
    ) as r:
        assert r.headers["x-gateway-model"] == "auto-weak"
        text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
        rid = r.headers["x-gateway-request-id"]
    assert text == REFUSAL
    assert flags_of(gw, rid)["quality_refusal"] is True
    est = estimate_after(gw, cat, "auto-weak", 21)
    assert est["n"] == 21 and est["mean"] < before["mean"]
    # Anthropic SDK, streamed refusal
    with gw.anthropic().messages.stream(
        model="auto",
        max_tokens=64,
        messages=[{"role": "user", "content": prompts[1] + weak_says(REFUSAL)}],
        extra_headers={"x-gateway-category": cat},
    ) as s:
        assert "".join(s.text_stream) == REFUSAL
    est2 = estimate_after(gw, cat, "auto-weak", 22)
    assert est2["n"] == 22 and est2["mean"] < est["mean"]
    # a stream that is not a refusal carries no signal; streaming it again is the caller's retry
    ids = []
    for _ in range(2):
        with gw.openai().chat.completions.with_streaming_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompts[2]}],
            stream=True,
            extra_headers={"x-gateway-category": cat},
        ) as r:
            assert "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices).startswith(
                "Answer"
            )
            ids.append(r.headers["x-gateway-request-id"])
    first, again = (flags_of(gw, i) for i in ids)
    assert "quality_refusal" not in first and "quality_retry_of" not in first
    assert again["quality_retry_of"] == "auto-weak"
    est3 = estimate_after(gw, cat, "auto-weak", 23)
    assert est3["n"] == 23 and est3["mean"] < est2["mean"]
    # a stream is checked against the requested JSON schema when it ends (too late to ask again: recorded, and
    # a failure counts against the model)
    for prompt, valid in (("Name one philosopher.", True), (prompts[1] + weak_says("not JSON"), False)):
        with gw.openai().chat.completions.with_streaming_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt}],
            response_format=SCHEMA,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-gateway-category": cat},
        ) as r:
            text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
            assert r.headers["x-gateway-model"] == "auto-weak"
            flags = flags_of(gw, r.headers["x-gateway-request-id"])
        assert flags["schema_valid"] is valid and (
            "answer" in orjson.loads(text) if valid else text == "not JSON"
        )
    est4 = estimate_after(gw, cat, "auto-weak", 24)
    assert est4["n"] == 24 and est4["mean"] < est3["mean"]


def period_fraction(period: str, now: float) -> float:
    """How much of the current UTC day or month has gone by."""
    from datetime import UTC, datetime

    d = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        return (now - start.timestamp()) / 86400
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
    return (now - start.timestamp()) / (end.timestamp() - start.timestamp())


def test_spend_pace_shifts_a_tenant_to_the_cheapest_model_that_meets_the_bar(
    redis_gw: Callable[..., Gateway], corpus: Path
) -> None:
    """A real budget and real spend: once tenant-a's spend so far, at this period's rate, would exceed its
    budget before the period ends, its requests of a category served by the strong model go to the weak one
    (its benched quality meets the category's bar); the route header says why; other tenants are unaffected."""
    cat = "mmlu_sociology"
    # the period with the most of it still ahead (the pace is measured over the period so far)
    now = time.time()
    period = min(("day", "month"), key=lambda p: period_fraction(p, now))
    gw = redis_gw(
        {cat: {"model": "strong", "threshold": 0.7, "quality": 0.93, "n": 40, "models": {"weak": {"quality": 0.86, "n": 40}}}},
        stages={"budget": {"enabled": True, "tenants": {"tenant-a": {"usd": 1000.0, "period": period}}}},
    )  # fmt: skip
    client = gw.openai()
    probe = items(corpus, cat)[0]["input"]

    def ask(key: str = KEY_A) -> Any:
        return gw.openai(key).chat.completions.with_raw_response.create(
            model="auto",
            max_tokens=8,
            messages=[{"role": "user", "content": probe}],
            extra_headers={"x-gateway-category": cat},
        )

    r = ask()
    assert r.headers["x-gateway-model"] == "auto-strong" and "spend-aware" not in r.headers["x-gateway-route"]
    assert "budget_pace" not in flags_of(gw, r.headers["x-gateway-request-id"])
    # real spend: long prompts to the strong model (about $0.1 each at $10 per M input tokens)
    for i in range(3):
        client.chat.completions.create(
            model="auto",
            max_tokens=8,
            messages=[{"role": "user", "content": f"{i} " + "word " * 10_000}],
            extra_headers={"x-gateway-category": cat},
        )
    status, doc, _ = admin_call(gw, "GET", "/admin/spend?scope=tenant&id=tenant-a")
    spent = doc["spent_usd"]
    assert status == 200 and spent > 0.2
    # a budget the spend so far does not exceed, but its pace does: spent < usd < spent / (period gone by)
    frac = period_fraction(period, time.time())
    usd = spent * (1 + 1 / frac) / 2
    assert usd - spent > 0.005, f"too little of the {period} left to pace a budget ({frac:.4f} gone)"
    assert admin_call(gw, "PUT", "/admin/budgets/tenant/tenant-a", {"usd": usd, "period": period})[0] == 200
    deadline = time.monotonic() + 15  # workers re-read run-time budgets every 2 s
    while True:
        r = ask()
        if r.headers["x-gateway-model"] == "auto-weak" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    route = r.headers["x-gateway-route"]
    assert r.headers["x-gateway-model"] == "auto-weak", route
    assert f"category={cat} spend-aware: auto-weak mean" in route and "tenant 'tenant-a'" in route, route
    pace = flags_of(gw, r.headers["x-gateway-request-id"])["budget_pace"]
    assert pace["usd"] == pytest.approx(usd) and pace["projected_usd"] > usd
    # tenant-b has no budget to pace: the table's strong model
    assert ask(KEY_B).headers["x-gateway-model"] == "auto-strong"


def admin_call(gw: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
    req = urllib.request.Request(
        gw.url + path,
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read()), e.headers
