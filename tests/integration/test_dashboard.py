"""The built-in dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
after a scripted traffic mix: two tenants, three models, a failover, a budget reject, PII hits, streams, a burst
over a key's rate limit (a tier-1 alert, shown among the active alerts). Every
panel shows data, the browser logs no error, and a screenshot is kept in test-artifacts/dashboard.png."""

from __future__ import annotations

import contextlib
import shutil
import time
import urllib.request

import openai
import pytest

from gateway.admin_cli import call
from tests.conftest import KEY_A, KEY_B, KEY_LIMITED, ROOT, base_config

ADMIN = "gw-admin-key-for-dashboard-00000000000000"
ARTIFACTS = ROOT / "test-artifacts"
PANELS = (
    "traffic",
    "alerts",
    "live",
    "latency-model",
    "latency-provider",
    "latency-category",
    "overhead",
    "ttft",
    "usage",
    "spend",
    "budgets",
    "routing",
    "failovers",
    "interventions",
    "reports",
)
pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def dgw(simulator, start_gateway, tmp_path_factory):
    v1 = simulator.url + "/v1"
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "dash.db")
    cfg["admin"] = {"key": ADMIN}
    cfg["models"]["ha"] = {
        "strategy": "priority",
        "deployments": [
            {"id": "ha-a", "model": "ha-a", "api_base": v1, "api_key": "k", "priority": 0},
            {"id": "ha-b", "model": "ha-b", "api_base": v1, "api_key": "k", "priority": 1},
        ],
    }
    cfg["models"]["gpt-4o"]["deployments"][0]["price"] = {"input": 2.5, "output": 10.0}
    cfg["stages"] = {
        "pii": {"enabled": True, "default": "mask"},
        "budget": {"enabled": True, "tenants": {"tenant-b": {"usd": 0.002, "period": "day"}}},
        "limits": {"enabled": True, "keys": {"limited": {"rpm": 3}}},
    }
    # the detector on a 1 s clock (60 s window: the alert below stays firing while the browser looks)
    cfg["observability"] = {"alerts": {"every_s": 1, "bucket_s": 1, "lag_s": 0.5, "overhead_p99_ms": 60_000}}
    gw = start_gateway(cfg, workers=2)
    a, b = gw.openai(KEY_A), gw.openai(KEY_B)
    sent = 0
    for i in range(12):  # tenant a: three models, tags, streams, an e-mail address now and then
        model = ("gpt-4o-mini", "gpt-4o", "ha")[i % 3]
        text = f"mail bob{i}@example.org about it" if i % 4 == 0 else f"question {i}"
        tags = "search" if i % 2 else "support"
        if i % 3 == 1:
            stream = a.chat.completions.create(
                model=model,
                stream=True,
                messages=[{"role": "user", "content": text}],
                extra_headers={"x-gateway-tags": tags},
            )
            for _ in stream:
                pass
        else:
            a.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                extra_headers={"x-gateway-tags": tags},
            )
        sent += 1
    # a failover: the first deployment of "ha" answers 503, the second serves
    a.chat.completions.create(model="ha", messages=[{"role": "user", "content": "x [[sim:fail=503@ha-a]]"}])
    sent += 1
    rejected = 0
    for i in range(10):  # tenant b runs into its daily budget
        try:
            b.chat.completions.create(
                model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": f"b {i}"}]
            )
        except openai.RateLimitError as e:
            assert e.code == "budget_exceeded"
            rejected += 1
        sent += 1
    assert rejected > 0
    limited, refused = gw.openai(KEY_LIMITED), 0
    for i in range(5):  # a key over its rate limit: a tier-1 alert
        try:
            limited.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"l {i}"}]
            )
        except openai.RateLimitError:
            refused += 1
        sent += 1
    assert refused > 0
    gw.records(wait_for=sent)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and not call(gw.url, ADMIN, "GET", "/admin/alerts?state=firing", None)[1]["data"]
    ):
        time.sleep(0.25)
    time.sleep(1.5)  # the workers publish their live numbers once a second
    return gw


def test_dashboard_assets_need_no_key_and_the_data_does(dgw):
    with urllib.request.urlopen(dgw.url + "/dashboard") as r:
        page = r.read().decode()
    assert r.headers["content-type"].startswith("text/html") and "/dashboard/app.js" in page
    assert "http://" not in page and "https://" not in page  # every asset from the gateway itself
    for path in ("/dashboard/app.js", "/dashboard/style.css", "/dashboard/favicon.svg"):
        with urllib.request.urlopen(dgw.url + path) as r:
            assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(dgw.url + "/dashboard/api/summary")
    assert e.value.code == 401


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    exe, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if exe is None or driver is None:
        pytest.fail(
            "chromium / chromium-driver are not installed; run scripts/setup.sh --test (make test does)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,2200",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_every_panel_shows_data_in_a_real_browser(dgw):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        browser.get(dgw.url + "/dashboard")
        browser.find_element(By.ID, "key").send_keys(ADMIN)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

        def ready(drv):
            states = {
                p: drv.find_element(By.CSS_SELECTOR, f'[data-panel="{p}"]').get_attribute("data-state")
                for p in PANELS
            }
            return states if all(v == "ready" for v in states.values()) else False

        with contextlib.suppress(Exception):
            WebDriverWait(browser, 30, 0.5).until(ready)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        states = {
            p: browser.find_element(By.CSS_SELECTOR, f'[data-panel="{p}"]').get_attribute("data-state")
            for p in PANELS
        }
        assert states == dict.fromkeys(PANELS, "ready")

        def text(panel: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, f'[data-panel="{panel}"] .body').text

        assert {"gpt-4o-mini", "gpt-4o", "ha"} <= set(text("latency-model").split())
        assert "openai" in text("latency-provider")
        assert "search" in text("latency-category") and "support" in text("latency-category")
        assert "gateway" in text("overhead")
        assert "tenant-a" in text("spend") and "tenant-b" in text("spend")
        assert "tenant-b" in text("budgets")
        assert "ha-a" in text("routing") or "ha-b" in text("routing")
        assert "1 failovers" in text("failovers") and "ha → ha-b" in text("failovers")
        assert "EMAIL_ADDRESS" in text("interventions") and "budget_exceeded" in text("interventions")
        assert "tier 1" in text("alerts") and "rate_limit" in text("alerts") and "tenant-a" in text("alerts")
        assert "workers 2" in text("live")
        assert "Gateway daily report" in text("reports")
        assert browser.find_element(By.CSS_SELECTOR, '[data-panel="traffic"] svg polyline')
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        browser.quit()
