"""What the README shows must work: its configuration example is a valid config."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_example_is_valid():
    text = README.read_text()
    section = text[text.index("## Configuration") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    env = {name: "gw-" + "x" * 40 for name in re.findall(r"\$\{([A-Z_]+)", example.group(1))}
    cfg = parse_config(example.group(1), env=env, source="README.md")
    assert cfg.stages.budget.agent_runs["*"].max_request_usd == 0.5
    assert cfg.stages.limits.on_exceed == "queue"
