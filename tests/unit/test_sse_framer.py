"""SSE framing: the same events however the network splits the bytes, in time linear in the bytes (issue 11,
defect 5: an event without a blank line was re-joined and re-searched on every piece, quadratic time)."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import UpstreamError
from gateway.providers.base import SseFramer

STREAM = (
    b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b": a comment\n\n"
    b"event: ping\ndata: {}\r\n\r\n"
    b"data: [DONE]\n\n"
)
EVENTS = [(b"message_start", b'{"a":1}'), (b"", b"line one\nline two"), (b"ping", b"{}"), (b"", b"[DONE]")]


def frame(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    f = SseFramer()
    out = []
    for p in pieces:
        out += f.feed(p)
    f.check_complete()
    return out


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_gives_the_same_events(cuts):
    cuts = sorted({0, len(STREAM), *cuts})
    assert frame([STREAM[a:b] for a, b in itertools.pairwise(cuts)]) == EVENTS


def test_byte_by_byte():
    assert frame([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS


def test_a_stream_that_ends_inside_an_event_is_an_error():
    f = SseFramer()
    f.feed(b"data: partial")
    with pytest.raises(UpstreamError):
        f.check_complete()


def test_one_huge_event_in_many_pieces_is_framed_in_linear_time():
    """32 MiB in 16 KiB pieces: linear framing copies it a few times (well under a second); the quadratic one
    copied and searched ~32 GiB. The bound is generous: it only fails the quadratic kind."""
    f = SseFramer()
    piece = b"x" * 16384
    t0 = time.process_time()
    f.feed(b"data: ")
    for i in range(2048):
        assert f.feed(piece) == []
        assert time.process_time() - t0 < 10.0, f"still framing after {i} pieces"
    events = f.feed(b"\n\n")
    assert len(events) == 1 and len(events[0][1]) == 2048 * 16384
    assert time.process_time() - t0 < 10.0
