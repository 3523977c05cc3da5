"""Deployment fields the config accepts do something: ``max_concurrency`` is bounded (the router enforces it,
see tests/integration/test_routing.py); fields the gateway would ignore are refused, not silently accepted."""

from __future__ import annotations

import pytest
import yaml

from gateway.config import ConfigError, parse_config


def config(**dep: object) -> str:
    return yaml.safe_dump({"models": {"g": {"deployments": [{"id": "d", "model": "m", **dep}]}}})


def test_deployment_tags_are_refused():
    with pytest.raises(ConfigError, match="unknown field `tags`"):
        parse_config(config(tags=["eu"]))


@pytest.mark.parametrize("bad", [0, -1, "two"])
def test_max_concurrency_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="max_concurrency"):
        parse_config(config(max_concurrency=bad))


def test_max_concurrency_is_kept():
    assert parse_config(config(max_concurrency=3)).models["g"].deployments[0].max_concurrency == 3
