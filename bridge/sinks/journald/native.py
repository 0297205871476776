"""journald's native protocol: encoding entries as datagrams. Pure.

A field is `NAME=value\\n`, or, when the value holds a newline, `NAME\\n` + little-endian u64
length + raw bytes + `\\n`. Values are bytes; journald keeps invalid UTF-8 as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.core.cursor import Position, checked
from bridge.core.fields import encode_field
from bridge.core.record import STDERR, Record

_PRIORITY = {p: b"PRIORITY=%d\n" % p for p in range(8)}
_STREAM = {1: b"CONTAINER_STREAM=stdout\n", 2: b"CONTAINER_STREAM=stderr\n"}


def encode_fields(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(encode_field(name, value) for name, value in fields)


def default_priority(stream: int) -> int:
    return 3 if stream == STDERR else 6


def encode_record(record: Record, container_fields: bytes) -> bytes:
    """One journal entry for a record; `container_fields` is the pre-encoded fixed part."""
    message = record.message
    priority = record.priority if record.priority is not None else default_priority(record.stream)
    # One join for what every entry has: this runs once per line.
    entry = b"".join(
        (
            b"MESSAGE\n" + len(message).to_bytes(8, "little") if b"\n" in message else b"MESSAGE=",
            message,
            b"\n",
            _PRIORITY[priority],
            b"SYSLOG_TIMESTAMP=",
            record.timestamp,
            b"\n",
            _STREAM.get(record.stream, b""),
            container_fields,
        )
    )
    needs_cursor = record.needs_cursor_field
    if not (needs_cursor or record.partial is not None or record.extra_fields):
        return entry
    parts = [entry]
    if needs_cursor:
        parts.append(b"JOURNALD_BRIDGE_CURSOR=%s\n" % b":".join(b"%d" % n for n in record.last))
    partial = record.partial
    if partial is not None:
        parts.append(
            b"CONTAINER_PARTIAL_ID=%s\nCONTAINER_PARTIAL_ORDINAL=%d\nCONTAINER_PARTIAL_LAST=%s\n"
            % (partial.id.encode(), partial.ordinal, b"true" if partial.last else b"false")
        )
        if not partial.last:
            parts.append(b"CONTAINER_PARTIAL_MESSAGE=true\n")
    for name, value in record.extra_fields:
        parts.append(encode_field(name, value))
    return b"".join(parts)


def parse_cursor_field(value: bytes | str) -> Position:
    """Inverse of the JOURNALD_BRIDGE_CURSOR value written by `encode_record`: `ts:k`, or a
    position inside a clock step's window, `hw:k:s:ts:k2` (core/cursor.py). ValueError else."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) not in (2, 5) or not all(p.isdigit() and len(p) < 20 for p in parts):
        raise ValueError(f"not a position: {text[:80]!r}")
    return checked(tuple(int(p) for p in parts))
