"""The per-request record writer: off the request path, batched, and lossless at shutdown.

The request path only appends its finished RequestContext to a list (no lock, no wake-up, no system call:
list.append is atomic under the GIL); a daemon thread swaps the list out every ``flush_ms``, builds the records
and writes the batch to the store. ``close()`` writes
what is left, so a clean shutdown loses nothing. A batch the store refuses three times is appended to a JSONL
file beside the database instead of being dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from gateway.context import Record, RequestContext

log = logging.getLogger("gateway.records")


class RecordWriter:
    def __init__(
        self,
        sink: Callable[[Sequence[Record]], None],
        flush_ms: int = 200,
        spill_path: str | Path | None = None,
    ) -> None:
        self.sink = sink
        self.flush_s = flush_ms / 1000
        self.spill_path = Path(spill_path) if spill_path else None
        self.pending: list[RequestContext] = []
        self.written = 0
        self.spilled = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self.thread.start()

    def submit(self, ctx: RequestContext) -> None:
        self.pending.append(ctx)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.thread.join(timeout)
        self._flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        done, self.pending = self.pending, []
        batch = [ctx.record() for ctx in done]
        for attempt in range(3):
            try:
                self.sink(batch)
                self.written += len(batch)
                return
            except Exception:  # the store may be briefly locked by another worker
                if attempt == 2:
                    self._spill(batch)

    def _spill(self, batch: list[Record]) -> None:
        log.exception("the store refused %d records; spilling them to %s", len(batch), self.spill_path)
        if self.spill_path is None:
            return
        with self.spill_path.open("ab") as f:
            for r in batch:
                f.write(msgspec.json.encode(r) + b"\n")
        self.spilled += len(batch)
