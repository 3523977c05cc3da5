"""State backends behind one interface: ``LocalState`` (in-process, the Rust limiter) and ``RedisState`` (shared by
every worker and replica). ``make_state`` picks one from the config and gives it the run-time ``policies``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.config import Config
from gateway.state.local import LocalState
from gateway.state.policies import Policies
from gateway.state.types import StateBackend

__all__ = ["StateBackend", "make_state", "uses_state", "warn_if_per_worker"]

if TYPE_CHECKING:
    from gateway.state.redis import RedisState
    from gateway.store.sqlite import SqliteStore

log = logging.getLogger("gateway.state")


def make_state(cfg: Config, store: SqliteStore | None = None) -> StateBackend:
    st = cfg.state
    state: LocalState | RedisState
    if st.redis_url:
        from gateway.state.redis import RedisState

        state = RedisState(
            st.redis_url,
            st.on_redis_failure,
            prefix=st.key_prefix,
            cluster=st.redis_cluster,
            timeout_s=st.socket_timeout_s,
            store=store,
        )
    else:
        state = LocalState(store)
    state.policies = Policies(cfg, state)
    return state


def uses_state(cfg: Config) -> bool:
    quotas = any(d.rpm or d.tpm for g in cfg.models.values() for d in g.deployments)
    return cfg.stages.limits.enabled or cfg.stages.budget.enabled or quotas


def warn_if_per_worker(cfg: Config, workers: int) -> None:
    """Limits and budgets without Redis are per worker process: say so loudly, or refuse when asked to."""
    if cfg.state.redis_url or workers <= 1 or not uses_state(cfg):
        return
    msg = (
        f"{workers} workers and no state.redis_url: rate limits, budgets and deployment quotas are enforced per "
        f"worker (up to {workers}x the configured values). Set state.redis_url to share them, or "
        "state.require_shared: true to refuse to start like this."
    )
    if cfg.state.require_shared:
        raise SystemExit(f"refusing to start: {msg}")
    log.warning(msg)
    print(f"WARNING: {msg}", flush=True)
