"""Cost attribution over the records: GET /admin/costs (JSON and CSV) and `gateway admin costs`."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from pathlib import Path

import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, KEY_B, PY, ROOT, base_config

ADMIN = "gw-admin-key-for-costs-0000000000000000"


@pytest.fixture(scope="module")
def cgw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "c.db")
    cfg["admin"] = {"key": ADMIN}
    for dep in cfg["models"]["gpt-4o"]["deployments"]:
        dep["price"] = {"input": 2.5, "output": 10.0}
    gw = start_gateway(cfg, workers=2)
    a, b = gw.openai(KEY_A), gw.openai(KEY_B)
    sent = 0
    for i in range(6):
        a.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"plan {i}"}],
            extra_headers={"x-gateway-tags": "search,beta", "x-gateway-agent": "planner/run-1"},
        )
        sent += 1
    for i in range(4):
        b.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q {i}"}])
        sent += 1
    gw.records(wait_for=sent)
    return gw


def costs(gw, query: str):
    return call(gw.url, ADMIN, "GET", "/admin/costs" + query, None)


def test_costs_by_tenant_and_model_match_the_records(cgw):
    records = [r for r in cgw.records() if r["endpoint"] == "chat"]
    status, body = costs(cgw, "?group_by=tenant,model&granularity=total")
    assert status == 200
    got = {(d["tenant"], d["model"]): d for d in body["data"]}
    assert set(got) == {("tenant-a", "gpt-4o"), ("tenant-b", "gpt-4o-mini")}
    for (tenant, model), row in got.items():
        mine = [r for r in records if r["tenant"] == tenant and r["model_requested"] == model]
        assert row["requests"] == len(mine)
        assert row["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in mine), abs=1e-9)
        assert row["input_tokens"] == sum(r["input_tokens"] for r in mine)
    assert body["total_usd"] == pytest.approx(sum(r["cost_usd"] for r in records), abs=1e-9)
    assert got[("tenant-a", "gpt-4o")]["cost_usd"] > 0


def test_costs_by_tag_team_agent_per_hour(cgw):
    status, body = costs(cgw, "?group_by=tag,team,agent&granularity=hour")
    assert status == 200
    hour = int(time.time()) // 3600 * 3600
    rows = {(d["tag"], d["team"], d["agent"]): d for d in body["data"]}
    assert rows[("search", "team-1", "planner")]["requests"] == 6
    assert rows[("beta", "team-1", "planner")]["requests"] == 6
    assert rows[(None, None, None)]["requests"] == 4  # tenant-b's untagged traffic
    assert {d["period"] for d in body["data"]} <= {
        time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(h)) for h in (hour, hour - 3600)
    }


def test_costs_range_filter_and_tenant(cgw):
    now = time.time()
    status, body = costs(cgw, f"?group_by=tenant&from={now - 7200}&to={now - 3600}")
    assert status == 200 and body["data"] == [] and body["total_usd"] == 0
    status, body = costs(cgw, "?group_by=model&tenant=tenant-b&granularity=day")
    assert [d["model"] for d in body["data"]] == ["gpt-4o-mini"] and body["total_requests"] == 4


def test_costs_csv_and_errors(cgw):
    status, text = costs(cgw, "?group_by=tenant&granularity=total&format=csv")
    assert status == 200 and isinstance(text, str)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["tenant"] for r in rows} == {"tenant-a", "tenant-b"}
    assert list(rows[0]) == [
        "period",
        "tenant",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    status, err = costs(cgw, "?group_by=colour")
    assert (
        status == 400 and err["error"]["code"] == "invalid_request" and "group_by" in err["error"]["message"]
    )
    status, err = costs(cgw, "?from=yesterday")
    assert status == 400 and err["error"]["param"] == "from"
    status, err = call(cgw.url, KEY_A, "GET", "/admin/costs", None)
    assert status == 401  # a gateway key is not the admin key


def test_gateway_admin_costs_cli(cgw):
    out = subprocess.run(
        [
            PY,
            "-m",
            "gateway",
            "admin",
            "--url",
            cgw.url,
            "--key",
            ADMIN,
            "costs",
            "--group-by",
            "tenant",
            "--granularity",
            "total",
            "--csv",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines()[0].startswith("period,tenant,requests")
    assert len(out.splitlines()) == 3


def test_gateway_report_daily_and_weekly(cgw, tmp_path):
    for kind in ("daily", "weekly"):
        out = subprocess.run(
            [PY, "-m", "gateway", "report", kind, "--config", str(cgw.config_path), "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        md = next(p for p in out if p.endswith(".md"))
        text = Path(md).read_text()
        assert text.startswith(f"# Gateway {kind} report") and "10 requests" in text
        csvs = {p.rsplit("-", 1)[1]: p for p in out if p.endswith(".csv")}
        if kind == "daily":
            assert set(csvs) == {"cost_trends.csv", "cache.csv", "routing.csv", "tokens.csv"}
            routing = list(csv.DictReader(io.StringIO(Path(csvs["routing.csv"]).read_text())))
            assert {(r["group"], r["deployment"], r["share"]) for r in routing} == {
                ("gpt-4o", "4o-a", "100.0%"),
                ("gpt-4o-mini", "mini-a", "100.0%"),
            }
            trends = list(csv.DictReader(io.StringIO(Path(csvs["cost_trends.csv"]).read_text())))
            assert {(r["scope"], r["id"], r["change"]) for r in trends} >= {
                ("tenant", "tenant-a", "new"),
                ("agent", "tenant-a/planner", "new"),
            }
        else:
            attribution = list(csv.DictReader(io.StringIO(Path(csvs["attribution.csv"]).read_text())))
            assert {(r["scope"], r["id"], r["requests"]) for r in attribution} >= {
                ("team", "team-1", "6"),
                ("feature", "search", "6"),
                ("feature", "(untagged)", "4"),
            }
            assert "Compliance audit summary" in text and "Models under evaluation" in text
