"""``${VAR}`` references in the config: a value that is only ``${VAR:-}`` and comes out empty is unset."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

BASE = """
models:
  m: {deployments: [{id: d, model: m, api_key: "${KEY}"}]}
state: {redis_url: "${REDIS_URL:-}"}
admin: {key: "${ADMIN:-}"}
"""


def test_empty_reference_leaves_the_field_unset() -> None:
    cfg = parse_config(BASE, env={"KEY": "sk-1"})
    assert cfg.state.redis_url is None and cfg.admin.key is None
    cfg = parse_config(BASE, env={"KEY": "sk-1", "REDIS_URL": "redis://r:6379/0", "ADMIN": "a" * 20})
    assert cfg.state.redis_url == "redis://r:6379/0" and cfg.admin.key == "a" * 20


def test_a_required_field_left_empty_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"\$\.models\.m\.deployments\[0\]\.model"):
        parse_config(BASE.replace("model: m", 'model: "${MODEL:-}"'), env={"KEY": "k"})
