"""AWS event-stream binary framing (``application/vnd.amazon.eventstream``).

Used by Bedrock's ``converse-stream`` / ``invoke-with-response-stream`` (and other AWS streaming APIs).
Each message is::

    prelude:  total_length (u32 BE) | headers_length (u32 BE) | prelude_crc (u32 BE, CRC32 of the 8 bytes)
    headers:  repeated [name_len (u8) | name (utf-8) | value_type (u8) | value]
    payload:  total_length - headers_length - 16 bytes
    trailer:  message_crc (u32 BE, CRC32 of everything before it)

Header value types: 0 bool true, 1 bool false, 2 byte, 3 short, 4 int, 5 long, 6 bytes (u16 length),
7 string (u16 length), 8 timestamp (i64 ms since epoch), 9 uuid (16 bytes).

The one codec for both sides: the Bedrock adapter decodes with :class:`EventStreamDecoder` (incremental,
CRC-checked) and the simulator encodes with :func:`encode_event` / :func:`encode_exception`.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime

__all__ = [
    "EventStreamDecoder",
    "EventStreamError",
    "decode_all",
    "encode_event",
    "encode_exception",
    "encode_message",
]

_PRELUDE = struct.Struct(">II")
_U32 = struct.Struct(">I")
_PRELUDE_LEN = 12
_MIN_MESSAGE_LEN = 16
MAX_MESSAGE_LEN = 24 * 1024 * 1024
MAX_HEADERS_LEN = 128 * 1024

HeaderValue = bool | int | str | bytes | datetime | uuid.UUID


class EventStreamError(ValueError):
    """Raised on a corrupt or oversized event-stream message (bad CRC, bad lengths, bad header)."""


# --------------------------------------------------------------------------------------------- encoding


def _encode_header(name: str, value: HeaderValue) -> bytes:
    nb = name.encode()
    if len(nb) > 255:
        raise EventStreamError(f"header name too long: {name!r}")
    head = bytes((len(nb),)) + nb
    if value is True:
        return head + b"\x00"
    if value is False:
        return head + b"\x01"
    if isinstance(value, str):
        vb = value.encode()
        return head + b"\x07" + struct.pack(">H", len(vb)) + vb
    if isinstance(value, bytes | bytearray | memoryview):
        vb = bytes(value)
        return head + b"\x06" + struct.pack(">H", len(vb)) + vb
    if isinstance(value, int):
        return head + b"\x04" + struct.pack(">i", value)
    if isinstance(value, datetime):
        return head + b"\x08" + struct.pack(">q", int(value.timestamp() * 1000))
    if isinstance(value, uuid.UUID):
        return head + b"\x09" + value.bytes
    raise EventStreamError(f"unsupported header value type for {name!r}: {type(value).__name__}")


def encode_headers(headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]) -> bytes:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return b"".join(_encode_header(k, v) for k, v in items)


def encode_message(
    headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | bytes, payload: bytes
) -> bytes:
    """Frame one message. ``headers`` may be pre-encoded bytes (see :func:`encode_headers`)."""
    hb = headers if isinstance(headers, bytes) else encode_headers(headers)
    total = _MIN_MESSAGE_LEN + len(hb) + len(payload)
    prelude = _PRELUDE.pack(total, len(hb))
    prelude += _U32.pack(zlib.crc32(prelude))
    msg = prelude + hb + payload
    return msg + _U32.pack(zlib.crc32(msg))


_EVENT_HEADER_CACHE: dict[str, bytes] = {}


def encode_event(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An ``:message-type: event`` message (headers cached per event type)."""
    key = event_type + "\x00" + content_type
    hb = _EVENT_HEADER_CACHE.get(key)
    if hb is None:
        hb = encode_headers(
            (
                (":event-type", event_type),
                (":content-type", content_type),
                (":message-type", "event"),
            )
        )
        _EVENT_HEADER_CACHE[key] = hb
    return encode_message(hb, payload)


def encode_exception(exception_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An ``:message-type: exception`` message, e.g. ``throttlingException`` mid-stream."""
    return encode_message(
        (
            (":exception-type", exception_type),
            (":content-type", content_type),
            (":message-type", "exception"),
        ),
        payload,
    )


# --------------------------------------------------------------------------------------------- decoding


def _decode_headers(buf: bytes | memoryview) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    i, n = 0, len(buf)
    try:
        while i < n:
            nlen = buf[i]
            i += 1
            name = bytes(buf[i : i + nlen]).decode()
            i += nlen
            t = buf[i]
            i += 1
            if t == 0:
                val: HeaderValue = True
            elif t == 1:
                val = False
            elif t == 2:
                val = struct.unpack_from(">b", buf, i)[0]
                i += 1
            elif t == 3:
                val = struct.unpack_from(">h", buf, i)[0]
                i += 2
            elif t == 4:
                val = struct.unpack_from(">i", buf, i)[0]
                i += 4
            elif t == 5:
                val = struct.unpack_from(">q", buf, i)[0]
                i += 8
            elif t in (6, 7):
                vlen = struct.unpack_from(">H", buf, i)[0]
                i += 2
                raw = bytes(buf[i : i + vlen])
                if len(raw) != vlen:
                    raise EventStreamError("truncated header value")
                i += vlen
                val = raw.decode() if t == 7 else raw
            elif t == 8:
                val = struct.unpack_from(">q", buf, i)[0]  # ms since epoch, left as int
                i += 8
            elif t == 9:
                raw = bytes(buf[i : i + 16])
                if len(raw) != 16:
                    raise EventStreamError("truncated uuid header")
                val = uuid.UUID(bytes=raw)
                i += 16
            else:
                raise EventStreamError(f"unknown header value type {t}")
            out[name] = val
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise EventStreamError(f"malformed headers: {e}") from e
    if i != n:
        raise EventStreamError("headers overrun their declared length")
    return out


class EventStreamDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the complete messages now available.

    Each message is ``(headers: dict, payload: bytes)``. Raises :class:`EventStreamError` on a CRC
    mismatch or impossible lengths (after which the decoder is unusable: the stream is corrupt).
    """

    __slots__ = ("_broken", "_buf")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[tuple[dict[str, HeaderValue], bytes]]:
        if self._broken:
            raise EventStreamError("decoder already failed on a corrupt stream")
        buf = self._buf
        buf += data
        out: list[tuple[dict[str, HeaderValue], bytes]] = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= _PRELUDE_LEN:
                total, hlen = _PRELUDE.unpack_from(buf, pos)
                (pcrc,) = _U32.unpack_from(buf, pos + 8)
                if zlib.crc32(memoryview(buf)[pos : pos + 8]) != pcrc:
                    raise EventStreamError("prelude CRC mismatch")
                if total < _MIN_MESSAGE_LEN or total > MAX_MESSAGE_LEN:
                    raise EventStreamError(f"invalid message length {total}")
                if hlen > total - _MIN_MESSAGE_LEN or hlen > MAX_HEADERS_LEN:
                    raise EventStreamError(f"invalid headers length {hlen}")
                if n - pos < total:
                    break
                mv = memoryview(buf)
                (mcrc,) = _U32.unpack_from(buf, pos + total - 4)
                if zlib.crc32(mv[pos : pos + total - 4]) != mcrc:
                    raise EventStreamError("message CRC mismatch")
                hstart = pos + _PRELUDE_LEN
                headers = _decode_headers(mv[hstart : hstart + hlen])
                payload = bytes(mv[hstart + hlen : pos + total - 4])
                mv.release()
                out.append((headers, payload))
                pos += total
        except EventStreamError:
            self._broken = True
            raise
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet forming a complete message."""
        return len(self._buf)

    def close(self) -> None:
        """Signal end of stream: raises if a partial message is still buffered."""
        if self._buf:
            raise EventStreamError(f"stream ended inside a message ({len(self._buf)} bytes pending)")


def decode_all(data: bytes) -> list[tuple[dict[str, HeaderValue], bytes]]:
    """Decode a complete byte string (raises on trailing partial data)."""
    dec = EventStreamDecoder()
    out = dec.feed(data)
    dec.close()
    return out
