"""Starting and stopping the real processes tests and benchmarks run against (the gateway, the simulator, a
redis-server): one copy of the helpers, shared by ``tests/conftest.py`` and ``benches/``."""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from typing import Any, NamedTuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 60) -> None:
    """Until ``url`` answers 2xx (GET); fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if 200 <= r.status < 300:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout_s}s")


def stop(proc: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """SIGINT (a clean shutdown: records flushed), then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs: list[subprocess.Popen[Any]], timeout_s: float = 10) -> None:
    """``stop`` for several processes at once: every one is signalled before any is waited for."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_redis(port: int) -> subprocess.Popen[Any]:
    """A throwaway redis-server (no persistence) on ``port``, accepting connections when this returns."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; run scripts/setup.sh --test (make test does)")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


class Webhooks:
    """A webhook receiver on a free port (alert pages and recoveries): keeps every JSON body POSTed to it, with
    its path and arrival time, in ``received``. ``close()`` stops it."""

    def __init__(self) -> None:
        received: list[Hook] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                received.append(Hook(self.path, json.loads(self.rfile.read(n)), time.time()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        """The bodies received so far (on ``path`` only, when given)."""
        return [h.body for h in list(self.received) if path is None or h.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Hook(NamedTuple):
    path: str
    body: dict[str, Any]
    at: float  # time.time() when it arrived
