"""The worker's frames on its pipe to the bridge, and the events they become. Pure.

A frame is a kind byte, a little-endian u32 payload length and the payload. Invariants:

- No frame is longer than `max_frame_bytes(max_message_bytes)`: an entry frame holds one
  entry already mapped and capped by `fields.map_entry` (MESSAGE at most `max_message_bytes`,
  at most MAX_INNER_FIELDS + 1 other fields of at most MAX_INNER_FIELD_BYTES together), its
  cursor (at most MAX_CURSOR_LENGTH) and fixed-size numbers. `FrameReader` refuses anything
  longer, any unknown kind and any malformed payload with `ProtocolError`: the bridge treats
  such a worker as broken, whatever bytes it sends.
- Entry frames are binary (they are the hot path); the rare frames (gap, log, end) are JSON.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.core.fields import encode_field
from bridge.sources.inner_journal.fields import (
    DROP_REASONS,
    MAX_INNER_FIELD_BYTES,
    MAX_INNER_FIELDS,
    Mapped,
)
from bridge.sources.inner_journal.position import (
    MAX_CURSOR_LENGTH,
    Gap,
    GapKind,
    InnerPosition,
)

ENTRY, HEARTBEAT, GAP, LOG, END = b"E", b"H", b"G", b"L", b"X"
_KINDS = frozenset((ENTRY, HEARTBEAT, GAP, LOG, END))
_HEADER = struct.Struct("<cI")
# realtime, monotonic, priority (-1: none), field count, a count per drop reason, then the
# lengths of what follows: cursor, machine id, message, native fields
_ENTRY_HEAD = struct.Struct(f"<QQbH{len(DROP_REASONS)}IHBII")
_SMALL_FRAME = 64 << 10  # the JSON frames: a log line, a gap, the end
MAX_COUNT = 1 << 32  # a count in a log frame above this is not believed


class ProtocolError(Exception):
    """The worker sent something that is not a well-formed frame."""


def max_frame_bytes(max_message_bytes: int) -> int:
    # a field in the native protocol takes at most its name and value and 10 bytes more
    fields = (MAX_INNER_FIELDS + 1) * (64 + 10) + MAX_INNER_FIELD_BYTES + 24
    return _ENTRY_HEAD.size + MAX_CURSOR_LENGTH + 32 + max_message_bytes + fields


@dataclass(frozen=True, slots=True)
class InnerEntry:
    """One inner journal entry, ready for the host journal.

    `native_fields` are the entry's other fields (all but MESSAGE and PRIORITY, which are
    `message` and `priority`), mapped and capped by `fields.map_entry` and already encoded in
    journald's native protocol by the worker: a sink appends them to the datagram as they are.
    `fields` decodes them, for whoever needs to look. `position` is where the journal stands
    once this entry is consumed; `dropped` counts what the caps left out.
    """

    message: bytes
    priority: int | None
    native_fields: bytes
    realtime_us: int
    monotonic_us: int
    position: InnerPosition
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def fields(self) -> tuple[tuple[bytes, bytes], ...]:
        return decode_native(self.native_fields)

    @property
    def boot_id(self) -> str:
        return self.position.boot_id


@dataclass(frozen=True, slots=True)
class InnerGap:
    """Entries after the saved position were lost before they could be read."""

    gap: Gap


@dataclass(frozen=True, slots=True)
class InnerEnd:
    """The container exited and its journal was read to the end; `position` says how far."""

    position: InnerPosition | None


InnerEvent = InnerEntry | InnerGap | InnerEnd


def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def encode_entry(
    mapped: Mapped, realtime_us: int, monotonic_us: int, cursor: str, machine_id: str
) -> bytes:
    counts = [mapped.dropped.get(r, 0) for r in DROP_REASONS]
    priority = -1 if mapped.priority is None else mapped.priority
    native = b"".join([encode_field(name, value) for name, value in mapped.fields])
    raw_cursor, raw_machine = cursor.encode("ascii"), machine_id.encode("ascii")
    head = _ENTRY_HEAD.pack(
        realtime_us,
        monotonic_us,
        priority,
        len(mapped.fields),
        *counts,
        len(raw_cursor),
        len(raw_machine),
        len(mapped.message),
        len(native),
    )
    return frame(ENTRY, b"".join((head, raw_cursor, raw_machine, mapped.message, native)))


def decode_entry(payload: bytes) -> InnerEntry:
    """Raises ProtocolError for anything `encode_entry` cannot have written."""
    try:
        head = _ENTRY_HEAD.unpack_from(payload, 0)
        realtime, monotonic, priority, n_fields = head[:4]
        cursor_len, machine_len, message_len, native_len = head[-4:]
        pos = _ENTRY_HEAD.size
        end = pos + cursor_len + machine_len + message_len + native_len
        # the native fields are checked whole only when someone decodes them (`fields`); here
        # only that they end where a field ends: the hot path stays a few slices long
        if (
            end != len(payload)
            or not 1 <= n_fields <= MAX_INNER_FIELDS + 1
            or not native_len
            or not -1 <= priority <= 7
            or payload[end - 1] != 10  # b"\n"
        ):
            raise ProtocolError("entry frame out of bounds")
        counts = head[4:-4]
        dropped = (
            {r: c for r, c in zip(DROP_REASONS, counts, strict=True) if c} if any(counts) else {}
        )
        cursor = payload[pos : pos + cursor_len].decode("ascii")
        pos += cursor_len
        machine_id = payload[pos : pos + machine_len].decode("ascii")
        pos += machine_len
        message = payload[pos : pos + message_len]
        native = payload[pos + message_len : end]
        position = InnerPosition(cursor, machine_id)
    except (struct.error, ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"bad entry frame: {exc}") from None
    return InnerEntry(
        message, None if priority < 0 else priority, native, realtime, monotonic, position, dropped
    )


def decode_native(blob: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Fields in journald's native protocol, as (name, value) pairs; raises ProtocolError."""
    fields: list[tuple[bytes, bytes]] = []
    pos, end = 0, len(blob)
    while pos < end:
        newline = blob.find(b"\n", pos)
        if newline < 0:
            raise ProtocolError("native field without an end")
        line = blob[pos:newline]
        name, sep, value = line.partition(b"=")
        if sep:
            fields.append((name, value))
            pos = newline + 1
            continue
        size = int.from_bytes(blob[newline + 1 : newline + 9], "little")
        start = newline + 9
        if start > end or blob[start + size : start + size + 1] != b"\n":
            raise ProtocolError("binary native field out of bounds")
        fields.append((line, blob[start : start + size]))
        pos = start + size + 1
    return tuple(fields)


def encode_json(kind: bytes, data: Mapping[str, object]) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return frame(kind, payload[:_SMALL_FRAME])


def encode_gap(gap: Gap) -> bytes:
    return encode_json(
        GAP,
        {
            "kind": gap.kind,
            "lost": gap.lost,
            "saved": gap.saved.to_json(),
            "first": gap.first_cursor,
        },
    )


def decode_gap(payload: bytes | memoryview) -> InnerGap:
    data = decode_json(payload)
    kind, lost, first = data.get("kind"), data.get("lost"), data.get("first")
    if kind not in ("vacuumed", "reset") or not isinstance(first, str):
        raise ProtocolError("bad gap frame")
    if lost is not None and (not isinstance(lost, int) or isinstance(lost, bool) or lost < 0):
        raise ProtocolError("bad gap frame")
    try:
        saved = InnerPosition.from_json(data.get("saved"))
    except ValueError as exc:
        raise ProtocolError(f"bad gap frame: {exc}") from None
    gap_kind: GapKind = "vacuumed" if kind == "vacuumed" else "reset"
    return InnerGap(Gap(gap_kind, lost, saved, first))


def decode_json(payload: bytes | memoryview) -> dict[str, object]:
    try:
        data = json.loads(bytes(payload))
    except ValueError as exc:
        raise ProtocolError(f"bad frame: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad frame: not an object")
    return data


class FrameReader:
    """Splits the worker's byte stream into (kind, payload) frames, bounded."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_frame_bytes(max_message_bytes)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The complete frames that `data` finishes, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[bytes, bytes]] = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            kind, size = _HEADER.unpack_from(buffer, start)
            if kind not in _KINDS:
                raise ProtocolError(f"unknown frame kind {kind!r}")
            if size > (self._limit if kind == ENTRY else _SMALL_FRAME):
                raise ProtocolError(f"frame of {size} bytes is over the limit")
            end = start + _HEADER.size + size
            if end > len(buffer):
                break
            frames.append((kind, bytes(buffer[start + _HEADER.size : end])))
            start = end
        if start:  # drop what is consumed once per read, not once per frame
            del buffer[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buffer)
