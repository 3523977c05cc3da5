"""The per-request record writer: off the request path, batched, and lossless at shutdown.

The request path only appends to a queue (a few hundred nanoseconds); a daemon thread drains it in batches into
the store. ``close()`` drains what is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import msgspec

from gateway.context import Record

log = logging.getLogger("gateway.records")
_STOP = object()


class RecordWriter:
    def __init__(
        self,
        sink: Callable[[Sequence[Record]], None],
        batch_size: int = 256,
        flush_ms: int = 200,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.written = 0
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self.thread.start()

    def submit(self, record: Record) -> None:
        self.q.put(record)

    def close(self, timeout: float = 10.0) -> None:
        self.q.put(_STOP)
        self.thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[Record] = []
            try:
                item = self.q.get(timeout=self.flush_s)
            except queue.Empty:
                continue
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)

    def _write(self, batch: list[Record]) -> None:
        for attempt in range(3):
            try:
                self.sink(batch)
                self.written += len(batch)
                return
            except Exception:  # the store may be briefly locked by another worker
                if attempt == 2:
                    self.failed += len(batch)
                    log.exception("dropping %d records after 3 failed writes", len(batch))


def encode(record: Record) -> bytes:
    return msgspec.json.encode(record)
