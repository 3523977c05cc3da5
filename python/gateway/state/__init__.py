"""State backends behind one interface: ``LocalState`` (in-process, the Rust limiter) and ``RedisState`` (shared by
every worker and replica). ``make_state`` picks one from the config."""

from __future__ import annotations

import logging
from typing import Any

from gateway.config import Config
from gateway.state.local import LocalState

log = logging.getLogger("gateway.state")


def make_state(cfg: Config) -> Any:
    if cfg.state.redis_url:
        from gateway.state.redis import RedisState

        return RedisState(cfg.state.redis_url, cfg.state.on_redis_failure)
    return LocalState()


def warn_if_per_worker(cfg: Config, workers: int) -> None:
    """Limits and budgets without Redis are per worker process: say so loudly, or refuse when asked to."""
    uses_state = cfg.stages.limits.enabled or cfg.stages.budget.enabled
    if cfg.state.redis_url or workers <= 1 or not uses_state:
        return
    msg = (
        f"{workers} workers and no state.redis_url: rate limits and budgets are enforced per worker "
        f"(up to {workers}x the configured values). Set state.redis_url to share them."
    )
    if cfg.state.require_shared:
        raise SystemExit(f"refusing to start: {msg}")
    log.warning(msg)
    print(f"WARNING: {msg}", flush=True)
