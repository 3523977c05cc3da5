"""Fixtures of the adversarial suite: a misbehaving upstream, and a look at the gateway's worker processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, ROOT, free_port, stop, wait_http


@dataclass
class Upstream:
    url: str
    proc: subprocess.Popen[Any]


@pytest.fixture(scope="session")
def misbehaving() -> Iterator[Upstream]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "tests.adversarial.misbehaving", "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc, timeout_s=180)  # it builds its gzip bomb first
        yield Upstream(url, proc)
    finally:
        stop(proc)


def workers(pid: int) -> list[int]:
    """The Granian worker processes under the gateway's main process."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out += [int(c) for c in children]
    return out


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of a process's resident memory (the kernel keeps it: no sampling to miss a peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")
