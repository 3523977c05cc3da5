"""The gateway's process: Granian's main process, with config reload and graceful drain.

Reload (``SIGHUP`` or ``POST /admin/reload``): the main process reads and validates the config file. A valid one is
handed, as the exact text validated, to fresh workers: Granian respawns them one at a time, the new worker
accepting on the shared socket before the old one stops, and the old one finishing what it has in flight. Every
request is served by one config from start to end. One race is Granian's (hyper's graceful stop): a connection
the old worker accepted in its last instant, before a byte of its request was read, is closed unanswered. No part
of that request reached the gateway, so clients retry it safely (the OpenAI and Anthropic SDKs do by default).
An invalid file is refused with the field path that is wrong, and the running workers keep serving the config
they have.

Drain (``SIGTERM`` / ``SIGINT``): the workers answer ``/readyz`` with 503 at once and keep accepting for
``server.drain_grace_s`` (load balancers take the replica out meanwhile); then they stop accepting, finish the
requests and streams in flight (up to ``server.drain_timeout_s``), flush their records and settle budgets, and the
process exits 0. A second signal skips what is left of the grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from granian.server import MPServer

from gateway.config import Config, ConfigError, parse_config

log = logging.getLogger("gateway")

CONFIG_TEXT_ENV = "GATEWAY_CONFIG_TEXT"  # the validated config text every worker builds from
DRAIN_SIGNAL = signal.SIGUSR1  # main process → workers: report not ready, a shutdown is coming
# main process → workers: a replacement is coming, stop keeping connections open
RETIRE_SIGNAL = signal.SIGUSR2
_CLOSE = ("connection", "close")


class CloseAfterResponse:
    """The RSGI protocol of a request served by a worker that is about to stop: every response asks the client
    to close its connection, so no keep-alive connection sits idle on the worker when it stops (a request sent
    on it at that moment would fail). Clients reconnect, to this worker's replacement or another replica."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def __call__(self) -> Any:
        return self._proto()

    def __aiter__(self) -> Any:
        return self._proto.__aiter__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proto, name)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._proto.response_bytes(status, [*headers, _CLOSE], body)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self._proto.response_str(status, [*headers, _CLOSE], body)

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._proto.response_empty(status, [*headers, _CLOSE])

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        return self._proto.response_stream(status, [*headers, _CLOSE])


def read_config(path: str) -> tuple[str, Config]:
    """The file's text and the config it validates to (raises ConfigError naming the field path)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    return text, parse_config(text, source=str(p))


def worker_config(default_path: str) -> Config:
    """The config a worker serves: the text its main process validated, else the file."""
    path = os.environ.get("GATEWAY_CONFIG", default_path)
    text = os.environ.get(CONFIG_TEXT_ENV)
    return parse_config(text, source=path) if text is not None else read_config(path)[1]


def request_reload() -> dict[str, Any]:
    """Called by a worker (``POST /admin/reload``): validate the file now, so the caller hears what is wrong,
    then ask the main process to apply it to every worker."""
    path = os.environ["GATEWAY_CONFIG"]
    _, cfg = read_config(path)
    os.kill(os.getppid(), signal.SIGHUP)
    n = sum(len(g.deployments) for g in cfg.models.values())
    return {"status": "reloading", "config": path, "model_groups": len(cfg.models), "deployments": n}


class GatewayServer(MPServer):
    """Granian's multi-process server with the gateway's reload and drain."""

    def __init__(self, config_path: str, text: str, cfg: Config, **kwargs: Any) -> None:
        # A worker enforces drain_timeout_s itself and then exits. Granian's kill timeout is not used: its join
        # can return while a worker is still exiting, and the kill that follows would cut what it still serves.
        kwargs.setdefault("workers_kill_timeout", None)
        super().__init__("gateway.app:app", **kwargs)
        self.config_path = config_path
        self.drain_grace_s = cfg.server.drain_grace_s
        self.draining = False
        os.environ["GATEWAY_CONFIG"] = config_path
        os.environ[CONFIG_TEXT_ENV] = text

    def _signal_workers(self, sig: signal.Signals) -> None:
        for wrk in list(self.wrks):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(wrk.inner.pid, sig)

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if self.draining:  # a second signal: no more grace
            super().signal_handler_interrupt()
            return
        self.draining = True
        self._signal_workers(DRAIN_SIGNAL)
        if self.drain_grace_s > 0:
            timer = threading.Timer(self.drain_grace_s, super().signal_handler_interrupt)
            timer.daemon = True
            timer.start()
        else:
            super().signal_handler_interrupt()

    def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
        self.reload_signal = False
        if self.draining:
            return None
        try:
            text, _ = read_config(self.config_path)
        except ConfigError as e:
            if not self.interrupt_signal:
                self.main_loop_interrupt.clear()
            log.error("config reload refused, the running config keeps serving: %s", e)
            return None
        os.environ[CONFIG_TEXT_ENV] = text
        log.info("config reload: respawning workers with %s", self.config_path)
        self._signal_workers(RETIRE_SIGNAL)
        return super()._reload(spawn_target, target_loader)
