"""Output content filtering: what a model's answer may carry, per the request's profile.

Each category the scanner reports (text classes, dangerous instructions, secrets, PII, canary leaks) whose score
reaches the profile's threshold gets the profile's action: ``allow``, ``flag`` (recorded), ``redact`` (span
categories: the span becomes ``[REDACTED:<category>]``; text categories: the answer becomes the refusal) or
``block``. A blocked non-stream answer becomes the dialect's error (``content_filtered``) or a refusal message,
by policy; a blocked stream ends with an error event in the caller's dialect and nothing after it.
"""

from __future__ import annotations

import os
from typing import Any

from gateway import _core
from gateway.compliance import models

SEVERITY = {"allow": 0, "flag": 1, "redact": 2, "block": 3}
SPAN_CATEGORIES = frozenset({"secrets", "pii", "canary"})
CANARY_PREFIX = "gwcanary-"


_CANARIES: list[str] = []


def new_canary() -> str:
    """A fresh unguessable token; drawn from the OS 256 at a time (one system call instead of one per
    request)."""
    if not _CANARIES:
        raw = os.urandom(8 * 256).hex()
        _CANARIES.extend(CANARY_PREFIX + raw[i : i + 16] for i in range(0, len(raw), 16))
    return _CANARIES.pop()


class Verdict:
    """What the filter decided for one text (or one stream so far)."""

    __slots__ = ("action", "categories", "redactions")

    def __init__(self) -> None:
        self.action = "allow"
        self.categories: dict[str, float] = {}  # category -> highest score that reached its threshold
        self.redactions: list[tuple[int, int, str]] = []

    def add(self, profile: Any, findings: list[tuple[str, float, int, int, str]]) -> None:
        rules = profile.content_rules  # category -> (threshold, action), for the categories it acts on
        for cat, score, start, end, _detail in findings:
            rule = rules.get(cat)
            if rule is None or score < rule[0]:
                continue
            action = rule[1]
            self.categories[cat] = max(self.categories.get(cat, 0.0), round(score, 4))
            if action == "redact":
                # a span is cut out; a whole answer can't be partly hateful, so it becomes the refusal
                span = cat in SPAN_CATEGORIES and start >= 0
                self.redactions.append((start, end, cat) if span else (-1, -1, cat))
            if SEVERITY[action] > SEVERITY[self.action]:
                self.action = action

    @property
    def refuse(self) -> bool:
        return any(s < 0 for s, _, _ in self.redactions)

    def apply(self, text: str, refusal: str) -> str:
        if self.refuse:
            return refusal
        for start, end, cat in sorted(self.redactions, reverse=True):
            text = f"{text[:start]}[REDACTED:{cat}]{text[end:]}"
        return text


def scan(text: str, profile: Any) -> Verdict | None:
    """The verdict on one answer, or None when nothing in it is acted on (the core returns only findings that
    reach the profile's floors, so most answers come back with none)."""
    findings = models.content_scanner().scan(text, profile.content_floors)
    if not findings:
        return None
    v = Verdict()
    v.add(profile, findings)
    return v


def new_stream(profile: Any) -> _core.ContentStream:
    """An incremental scan of one stream that returns only the findings ``profile`` acts on."""
    return _core.ContentStream(models.content_scanner(), profile.content_floors, profile.stream_hold)
