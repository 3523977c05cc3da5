"""What the gateway takes from an upstream's error: Retry-After parsed strictly, credentials scrubbed in part."""

from __future__ import annotations

import email.utils

import pytest

from gateway.providers.base import parse_retry_after, scrub_secrets


@pytest.mark.parametrize(
    "value, expected",
    [("0", 0.0), ("7", 7.0), (" 12 ", 12.0), ("1.5", 1.5), ("315360000", 315360000.0)],
)
def test_retry_after_delay_seconds(value, expected):
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize(
    "value", ["inf", "-inf", "nan", "1e308", "-5", "+5", "0x10", "1_000", "soon", "", "9" * 400, "Infinity"]
)
def test_retry_after_junk_is_ignored(value):
    assert parse_retry_after(value) is None


def test_retry_after_http_date():
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59", now=now) is None  # no zone: not an HTTP date


KEY = "sk-proj-Zq8xT3nP0aLk5VbW2cYr7HmJ4sEd9uFg"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {KEY}.",
        f"Incorrect API key provided: {KEY[:12]}*************{KEY[-6:]}.",
        f"key '{KEY[10:30]}' is not valid",
        f"quota exceeded for {KEY[-8:]}",
    ],
)
def test_scrubbing_catches_fragments_of_a_credential(text):
    out = scrub_secrets(text, [KEY])
    for i in range(len(KEY) - 5):
        assert KEY[i : i + 6] not in out, out
    assert "***" in out


def test_scrubbing_leaves_other_text_alone():
    text = "The model `gpt-4o` does not exist or you do not have access to it."
    assert scrub_secrets(text, [KEY]) == text
    assert scrub_secrets(text, []) == text
