"""``POST /v1/feedback``: a caller's verdict on an answer it got.

Body: ``{"request_id": "...", "score": 0.0-1.0}`` or ``{"request_id": "...", "thumbs": "up"|"down"}``, with an
optional ``label`` (short text, kept in the record). Only the key that made the request may rate it (any other
key hears ``not_found``, as if there were no such request). The rating updates the quality estimate of the
deployment that served, in the request's category (``loop.py``); the feedback call's own record keeps what was
rated and any demotion it caused (the audit trail).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import msgspec
import orjson

from gateway.errors import GatewayError


class Feedback(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    score: float | None = None
    thumbs: str | None = None
    label: str | None = None

    def value(self) -> float:
        if self.score is not None:
            if not 0.0 <= self.score <= 1.0:
                raise GatewayError("invalid_request", "score must be within [0, 1].", param="score")
            return float(self.score)
        if self.thumbs in ("up", "down"):
            return 1.0 if self.thumbs == "up" else 0.0
        raise GatewayError(
            "invalid_request", 'Give a score in [0, 1] or thumbs: "up" | "down".', param="score"
        )


def parse(body: bytes) -> Feedback:
    try:
        fb = msgspec.json.decode(body, type=Feedback)
    except msgspec.ValidationError as e:
        raise GatewayError("invalid_request", f"Bad feedback: {e}.") from None
    except msgspec.DecodeError:
        raise GatewayError("invalid_json", "The feedback body is not valid JSON.") from None
    if not fb.request_id or len(fb.request_id) > 128:
        raise GatewayError("invalid_request", "request_id is required.", param="request_id")
    if fb.label is not None and len(fb.label) > 200:
        raise GatewayError("invalid_request", "label is at most 200 characters.", param="label")
    fb.value()
    return fb


def _lookup(db: str, request_id: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT body FROM records WHERE request_id = ? ORDER BY seq LIMIT 1", (request_id,)
        ).fetchone()
    finally:
        conn.close()
    return orjson.loads(row[0]) if row else None


async def find_record(db: str, request_id: str, key_id: str | None, wait_s: float = 2.0) -> dict[str, Any]:
    """The rated request's record (it may still be on its way to the store: records are written in batches)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        rec = await asyncio.to_thread(_lookup, db, request_id)
        if rec is not None or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.1)
    if rec is None or rec.get("key_id") != key_id:
        raise GatewayError(
            "not_found",
            f"No request {request_id!r} made with this key (feedback is accepted from the key that made the request,"
            " for requests in the store).",
        )
    return rec
