"""Automatic quality signals and the demotion alert: small helpers the router calls for ``quality`` groups."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.types import ChatRequest, ChatResponse

log = logging.getLogger("gateway.quality")


# How assistants decline, at the very start of an answer ("I'm sorry, but I can't help with that."). Only the
# opening is read, and only of a short answer: a long one that begins with an apology usually goes on to answer.
_REFUSAL = re.compile(
    r"^\W{0,3}(?:(?:i'?m|i am) (?:really |very )?sorry,?(?: but)? |unfortunately,? |sorry,?(?: but)? )?"
    r"(?:as an ai(?: language model| assistant)?,? )?"
    r"(?:i (?:can(?:no|')?t|cannot|won'?t(?: be able to)?|will not(?: be able to)?|am not able to|'?m not able to|am unable to|'?m unable to)"
    r"(?: \w+){0,2} (?:help|assist|comply|provide|answer|do that|fulfil+|support|engage|create|write|generate|"
    r"share|give)|i (?:must|have to) (?:decline|refuse))"
)
REFUSAL_MAX_CHARS = 600  # longer answers are not taken for refusals
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def refusal_text(text: str) -> bool:
    """Whether an answer's text is a refusal: short, and opening with the way assistants decline."""
    if not text or len(text) > REFUSAL_MAX_CHARS:
        return False
    return _REFUSAL.match(text[:200].lower().translate(_APOSTROPHES)) is not None


def refused(resp: ChatResponse) -> bool:
    """The provider declined to answer: a content filter, or a refusal in place of an answer."""
    for c in resp.choices:
        if c.finish_reason == "content_filter":
            return True
        if (
            isinstance(c.message.content, str)
            and not c.message.tool_calls
            and refusal_text(c.message.content)
        ):
            return True
    return False


def prompt_hash(req: ChatRequest) -> str:
    """The request's messages, hashed: the same prompt asked again has the same hash."""
    h = hashlib.blake2b(digest_size=12)
    for m in req.messages:
        h.update(m.role.encode())
        c = m.content
        h.update((c if isinstance(c, str) else repr(c)).encode())
    return h.hexdigest()


def quality_event(cfg: Config) -> Callable[[dict[str, Any]], None]:
    """What happens when the loop demotes (or restores) a category's deployment: a log line and a tier-1 alert
    delivered like every other (the store's alerts table and the configured webhooks), off the event loop."""

    def deliver(event: dict[str, Any]) -> None:
        from gateway.observability.alerts import Alert, AlertRunner, ensure_schema

        now = time.time()
        subject = f"{event['group']}/{event['category']}/{event['from']}"
        firing = event["event"] == "demoted"
        alert = Alert(
            id=f"quality-{subject}-{int(now)}",
            tier=1,
            signal="quality_demotion",
            subject=subject,
            state="firing" if firing else "resolved",
            started_at=now,
            updated_at=now,
            value=float(event["lower"]),
            threshold=float(event["threshold"]),
            message=(
                f"{event['from']} {'demoted' if firing else 'restored'} for category {event['category']} of "
                f"{event['group']}: quality lower bound {event['lower']:.3f} vs bar {event['threshold']:.3f} after "
                f"{event['signals']:g} signals; now served by {event['to']}"
            ),
            resolved_at=None if firing else now,
        )

        def run() -> None:
            try:
                conn = sqlite3.connect(cfg.store.sqlite_path, timeout=30.0, isolation_level=None)
                try:
                    ensure_schema(conn)
                    AlertRunner(cfg).deliver(conn, alert)
                finally:
                    conn.close()
            except Exception:
                log.exception("quality alert delivery failed")

        threading.Thread(target=run, name="quality-alert", daemon=True).start()

    return deliver
