"""The per-request record writer: off the request path, batched, and lossless at shutdown.

The request path only appends its finished RequestContext to a list (no lock, no wake-up, no system call:
list.append is atomic under the GIL); a daemon thread swaps the list out every ``flush_ms``, turns the contexts
into store rows and writes the batch. It does its Python work in small slices and yields the GIL between them,
so a large batch never stalls the event loop for more than a few tens of microseconds (a thread holding the GIL
otherwise keeps it for up to the 5 ms switch interval, which shows up as tail latency). ``close()`` writes
what is left, so a clean shutdown loses nothing. A batch the store refuses three times is appended to a JSONL
file beside the database instead of being dropped.

Observers (metrics, traces) get each batch of finished requests (their contexts and the records built from
them) on the same thread, before the records are written, and once per tick with an empty batch (to publish
what they hold): what they derive from a request costs the request path nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.context import Record, RequestContext

log = logging.getLogger("gateway.records")
SLICE = 32  # records built per hold of the GIL
Observer = Callable[[list[RequestContext], list[Record]], None]


class RecordWriter:
    def __init__(
        self,
        sink: Callable[[Sequence[tuple[Any, ...]]], None],
        to_row: Callable[[Record], tuple[Any, ...]],
        flush_ms: int = 200,
        spill_path: str | Path | None = None,
        observers: Sequence[Observer] = (),
        build: Callable[[RequestContext], Record] | None = None,
    ) -> None:
        self.sink = sink
        self.to_row = to_row
        self.build = build or RequestContext.record  # e.g. a Redactor's: what a record may keep
        self.flush_s = flush_ms / 1000
        self.spill_path = Path(spill_path) if spill_path else None
        self.observers = list(observers)
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

    def _observe(self, contexts: list[RequestContext], records: list[Record]) -> None:
        for observe in self.observers:
            try:
                observe(contexts, records)
            except Exception:  # an observer never costs a record
                log.exception("a record observer failed")

    def _flush(self) -> None:
        if not self.pending:
            if self.observers:
                self._observe([], [])
            return
        done, self.pending = self.pending, []
        batch: list[tuple[Any, ...]] = []
        for i in range(0, len(done), SLICE):
            if i:
                time.sleep(0)  # let the event loop thread have the GIL between slices
            contexts = done[i : i + SLICE]
            records = [self.build(ctx) for ctx in contexts]
            if self.observers:
                self._observe(contexts, records)
            batch.extend(self.to_row(r) for r in records)
        for attempt in range(3):
            try:
                self.sink(batch)
                self.written += len(batch)
                return
            except Exception:  # the store may be briefly locked by another worker
                if attempt == 2:
                    self._spill(batch)

    def _spill(self, batch: list[tuple[Any, ...]]) -> None:
        """The encoded record is the last column of a row; append those to a JSONL file."""
        log.exception("the store refused %d records; spilling them to %s", len(batch), self.spill_path)
        if self.spill_path is None:
            return
        with self.spill_path.open("ab") as f:
            for row in batch:
                f.write(row[-1] + b"\n")
        self.spilled += len(batch)
