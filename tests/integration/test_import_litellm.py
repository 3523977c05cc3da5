"""``gateway import litellm`` on LiteLLM's own example proxy configs (the ``litellm`` wheel from PyPI ships them
under ``litellm/proxy/example_config_yaml/``; downloaded at test time, nothing of LiteLLM is kept in this
repository): every one converts, every converted config passes ``gateway check-config``, and what could not be
converted is listed by path.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from tests.conftest import PY

LITELLM = "litellm==1.110.2"  # pinned: the same example configs on every run


@pytest.fixture(scope="module")
def litellm_examples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("litellm")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", LITELLM, "-d", str(d)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = d.glob("litellm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if "/proxy/example_config_yaml/" in n and n.endswith(".yaml")]
        z.extractall(d / "x", members=names)
    return sorted((d / "x").rglob("*.yaml"))


def env_for(text: str) -> dict[str, str]:
    return {v: f"value-of-{v}" for v in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}


def test_every_example_config_converts_and_passes_check_config(
    litellm_examples: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    assert len(litellm_examples) >= 20
    groups = deployments = skipped = 0
    for src in litellm_examples:
        out = tmp_path / f"{src.stem}.gateway.yaml"
        assert main(["import", "litellm", str(src), "-o", str(out)]) == 0
        err = capsys.readouterr().err
        text = out.read_text()
        for name, value in env_for(text).items():
            monkeypatch.setenv(name, value)
        assert main(["check-config", str(out)]) == 0, (src.name, capsys.readouterr().err)
        ok = capsys.readouterr().out
        g, d = map(int, re.match(r"ok: (\d+) model groups, (\d+) deployments", ok).groups())
        groups, deployments = groups + g, deployments + d
        skipped += text.count("\n#   ")
        assert ("not converted:" in err) == ("# Not converted:" in text)
    print(
        f"\n{len(litellm_examples)} LiteLLM configs: {groups} groups, {deployments} deployments, {skipped} items listed"
    )
    assert groups >= 25


def test_mappings_on_litellm_examples(litellm_examples: list[Path], tmp_path: Path) -> None:
    by_name = {p.name: p for p in litellm_examples}
    out = tmp_path / "lb.yaml"
    # the real command line, as a user runs it
    run = subprocess.run(
        [PY, "-m", "gateway", "import", "litellm", str(by_name["load_balancer.yaml"]), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "model_list[3]: provider 'mistralai'" in run.stderr  # listed, not silently dropped
    cfg = yaml.safe_load(out.read_text())
    deps = cfg["models"]["gpt-3.5-turbo"]["deployments"]
    assert [d["api_key"] for d in deps[:2]] == ["sk-uj6F", "sk-Imn"]
    assert deps[0]["rpm"] == 3 and deps[0]["tpm"] == 20000
    assert deps[2]["api_base"] == "https://openrouter.ai/api/v1"

    azure = yaml.safe_load(_convert(by_name["azure_config.yaml"], tmp_path))
    dep = azure["models"]["gpt-4-team1"]["deployments"][0]
    assert dep["provider"] == "azure" and dep["model"] == "chatgpt-v-2"
    assert (
        dep["api_key"] == "${AZURE_API_KEY}" and dep["api_version"] == "2023-05-15" and dep["timeout_s"] == 5
    )

    misc = yaml.safe_load(_convert(by_name["oai_misc_config.yaml"], tmp_path))
    assert misc["admin"]["key"] == "${LITELLM_MASTER_KEY}"
    assert misc["keys"][0]["key"] == "${LITELLM_MASTER_KEY}"  # clients using the master key keep working
    assert misc["models"]["gpt-5-mini-end-user-test"]["deployments"][0]["region"] == "eu"
    assert misc["models"]["gpt-5-mini-end-user-test"]["max_attempts"] == 6  # num_retries: 5

    adaptive = yaml.safe_load(_convert(by_name["adaptive_router_example.yaml"], tmp_path))
    assert adaptive["models"]["fast"]["deployments"][0]["price"] == {"input": 0.15}  # USD per million

    spend = yaml.safe_load(_convert(by_name["spend_tracking_config.yaml"], tmp_path))
    assert spend["state"]["redis_url"] == "redis://${REDIS_HOST}:${REDIS_PORT}/0"


def test_router_settings_fallbacks_and_budget(tmp_path: Path) -> None:
    src = tmp_path / "litellm.yaml"
    src.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "gpt-4o",
                        "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/K"},
                    },
                    {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
                    {"model_name": "gem", "litellm_params": {"model": "gemini/gemini-2.0-flash"}},
                ],
                "router_settings": {
                    "routing_strategy": "latency-based-routing",
                    "fallbacks": [{"gpt-4o": ["claude", "gem", "missing"]}],
                    "allowed_fails": 3,
                    "cooldown_time": 30,
                    "redis_host": "redis",
                    "redis_port": 6379,
                },
                "litellm_settings": {"max_budget": 100, "budget_duration": "30d"},
            }
        )
    )
    cfg = yaml.safe_load(_convert(src, tmp_path))
    g = cfg["models"]["gpt-4o"]
    assert g["strategy"] == "least_latency" and g["fallbacks"] == ["claude", "gem"]
    assert g["failure_threshold"] == 3 and g["open_s"] == 30
    assert cfg["models"]["claude"]["deployments"][0]["provider"] == "anthropic"
    assert cfg["models"]["gem"]["deployments"][0]["provider"] == "gemini"
    assert cfg["state"]["redis_url"] == "redis://redis:6379/0"
    assert cfg["stages"]["budget"]["tenants"]["*"] == {"usd": 100.0, "window_s": 30 * 86400}
    text = (tmp_path / "litellm.gw.yaml").read_text()
    assert "router_settings.fallbacks[0]: fallbacks ['missing'] are not model groups here" in text


def _convert(src: Path, tmp_path: Path) -> str:
    out = tmp_path / f"{src.stem}.gw.yaml"
    assert main(["import", "litellm", str(src), "-o", str(out)]) == 0
    return out.read_text()
