"""Pipeline stages. ``build_stages`` turns the config into the ordered list the pipeline runs:
limits → budget → pii → injection → cache → (route) → … post hooks in reverse."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.pipeline import Stage


def build_stages(cfg: Config, gw: Any) -> list[Stage]:
    stages: list[Stage] = []
    return stages
