"""The unit that flows from a source through the transforms to the journal sink."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.cursor import Position

# Stream numbers, as Docker's multiplexed log stream numbers them.
STDOUT, STDERR = 1, 2


@dataclass(slots=True, frozen=True)
class PartialMark:
    """One piece of a line longer than max_line_bytes (Docker's CONTAINER_PARTIAL_* fields)."""

    id: str
    ordinal: int
    last: bool


@dataclass(slots=True)
class Record:
    """One journal entry's worth of a container's output.

    `first` and `last` are the positions of the first and last Docker line it holds; the sink
    commits `last` once the entry is in the journal, and writes it into the entry whenever
    `(SYSLOG_TIMESTAMP, 1)` alone would not say exactly how far it reaches (lines sharing a
    stamp, merged lines, a line inside a clock step's window).
    """

    stream: int
    message: bytes
    timestamp: bytes  # RFC3339Nano of the first line, as Docker sent it
    first: Position
    last: Position
    partial: PartialMark | None = None
    priority: int | None = None  # set by a transform; None means by stream (6 stdout, 3 stderr)
    extra_fields: tuple[tuple[bytes, bytes], ...] = ()  # set by transforms, already sanitized
    dropped: str | None = None  # why a transform dropped it (the position still counts as consumed)

    @property
    def needs_cursor_field(self) -> bool:
        last = self.last
        return self.first != last or len(last) != 2 or last[1] != 1


# Memory one record holds beyond its message bytes (timestamp, positions, the record itself),
# measured with tracemalloc; used wherever records count against `max_pending_bytes`.
RECORD_OVERHEAD_BYTES = 384


def footprint(records: list[Record]) -> int:
    """Memory a list of records holds, for the pending budget."""
    return sum(len(r.message) for r in records) + RECORD_OVERHEAD_BYTES * len(records)
