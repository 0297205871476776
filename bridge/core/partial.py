"""Rejoins the 16 KiB pieces dockerd cuts long lines into. Pure and I/O-free.

A piece without a trailing newline continues on the next line of the same stream. Joined lines
up to `max_bytes` become one record; a longer line leaves as several records marked partial,
each cut at a piece boundary so that every record covers whole Docker lines (which keeps the
resume position exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.core.cursor import Position
from bridge.core.record import PartialMark, Record

_NOTHING_HELD: Mapping[int, Position] = MappingProxyType({})


@dataclass(slots=True)
class _Pending:
    timestamp: bytes
    first: Position
    last: Position
    partial_id: str
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    ordinal: int = 0  # partial records already emitted for this line


class PartialJoiner:
    """Per-container joiner; stdout and stderr are joined independently."""

    __slots__ = ("_id_prefix", "_max_bytes", "_pending", "merged")

    def __init__(self, max_bytes: int, id_prefix: str = "") -> None:
        self._max_bytes = max_bytes
        self._id_prefix = id_prefix
        self._pending: dict[int, _Pending] = {}
        self.merged = 0  # pieces merged into a longer line, for telemetry

    @property
    def idle(self) -> bool:
        """No unfinished line on any stream: a complete line is a record as it is."""
        return not self._pending

    def holds(self) -> Mapping[int, Position]:
        """Per stream, the position of the first piece of an unfinished line."""
        if not self._pending:
            return _NOTHING_HELD
        return {stream: pending.first for stream, pending in self._pending.items()}

    def push(self, stream: int, timestamp: bytes, position: Position, body: bytes) -> list[Record]:
        complete = body.endswith(b"\n")
        if complete:
            body = body[:-1]
        pending = self._pending.get(stream)
        if pending is None:
            if complete:
                return [Record(stream, body, timestamp, position, position)]
            pending = _Pending(
                timestamp, position, position, f"{self._id_prefix}{position[-2]:x}{stream}"
            )
            self._pending[stream] = pending
        out: list[Record] = []
        if pending.pieces and pending.size + len(body) > self._max_bytes:
            out.append(self._emit_piece(stream, pending, last=False))
            pending.first = position
            pending.timestamp = timestamp
        pending.pieces.append(body)
        pending.size += len(body)
        pending.last = position
        if len(pending.pieces) > 1:
            self.merged += 1
        if complete:
            del self._pending[stream]
            out.append(self._emit_final(stream, pending))
        return out

    def flush(self) -> list[Record]:
        """Emits every unfinished line (the stream ended: the container exited)."""
        out = [self._emit_final(s, p) for s, p in sorted(self._pending.items())]
        self._pending.clear()
        return out

    def _emit_final(self, stream: int, pending: _Pending) -> Record:
        if pending.ordinal:
            return self._emit_piece(stream, pending, last=True)
        return Record(
            stream, b"".join(pending.pieces), pending.timestamp, pending.first, pending.last
        )

    def _emit_piece(self, stream: int, pending: _Pending, *, last: bool) -> Record:
        pending.ordinal += 1
        record = Record(
            stream,
            b"".join(pending.pieces),
            pending.timestamp,
            pending.first,
            pending.last,
            PartialMark(pending.partial_id, pending.ordinal, last),
        )
        pending.pieces = []
        pending.size = 0
        return record
