"""Multi-line records (stack traces) merged into one entry. Pure and I/O-free.

A line matching `start` opens a record; while one is open, lines matching `continuation` join
it; any other line closes it and passes alone (or opens the next record, if it matches
`start`). stdout and stderr merge separately, at most one open record each. Invariants:

- An open record is closed when `flush_after` seconds pass without a new line, when it reaches
  `max_lines` lines, or when a line would take its message past `max_bytes`: memory held per
  stream is bounded in records as well as bytes, whatever a container prints.
- A record closed by one of those caps goes on as the next part: a continuation line that
  follows it (within `flush_after`) opens a record of its own, marked with its part number
  (`CONTINUED_FIELD`, 2, 3, ...), so a flood of continuation lines costs one entry per
  `max_lines` lines, not one per line. Nothing is held between parts but that number.
- No line is lost or reordered within a stream: records leave in the order their lines came.
- `held_bytes` is the `bridge.core.record.footprint` of the input records held, kept incrementally;
  `held_first()` is, per stream, the position of the first line held.
- Methods change state only once everything that can fail (matching, joining) has succeeded,
  so a failure leaves the merger as it was; `release` then hands back a stream's lines unmerged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.cursor import Position
from bridge.core.record import RECORD_OVERHEAD_BYTES, Record
from bridge.transforms.regex import Matcher, compile_trusted

PRESETS: dict[str, tuple[str, str]] = {
    "python": (
        r"^Traceback \(most recent call last\):$",
        r"^(\s|$|[\w.]*(Error|Exception|Warning|Exit|Interrupt|StopIteration)\b|"
        r"During handling of the above exception|The above exception was the direct cause)",
    ),
    "java": (
        r"^([\w$]+\.)*[\w$]*(Exception|Error|Throwable)(: .*)?$|^Exception in thread \"",
        r"^(\s+at |\s+\.\.\. \d+ (more|common frames omitted)|Caused by: |\s+Suppressed: )",
    ),
}

DEFAULT_MAX_LINES = 500
# On a record that continues one closed at a cap: its part number (2, 3, ...). CONTAINER_* is
# a namespace no label or JSON key may write (bridge.core.fields), so a container cannot forge it.
CONTINUED_FIELD = b"CONTAINER_MULTILINE_PART"


@dataclass
class _Open:
    records: list[Record] = field(default_factory=list)
    size: int = 0  # bytes of the merged message
    held: int = 0  # footprint of `records`
    deadline: float = 0.0
    part: int = 1  # 2, 3, ... when it continues a record closed at a cap


def _cost(record: Record) -> int:
    return len(record.message) + RECORD_OVERHEAD_BYTES  # footprint([record])


class MultilineMerger:
    def __init__(
        self,
        start: Matcher,
        continuation: Matcher,
        flush_after: float,
        max_bytes: int,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> None:
        self._start = start
        self._continuation = continuation
        self._flush_after = flush_after
        self._max_bytes = max_bytes
        self._max_lines = max(max_lines, 2)
        self._open: dict[int, _Open] = {}
        # per stream, after a record closed at a cap: (its part, until when a line continues it)
        self._capped: dict[int, tuple[int, float]] = {}
        self._held = 0
        self.merged_records = 0

    @classmethod
    def preset(
        cls, name: str, flush_after: float, max_bytes: int, max_lines: int = DEFAULT_MAX_LINES
    ) -> MultilineMerger:
        start, continuation = PRESETS[name]
        return cls(
            compile_trusted(start), compile_trusted(continuation), flush_after, max_bytes, max_lines
        )

    @property
    def held_bytes(self) -> int:
        return self._held

    def held_first(self) -> dict[int, Position]:
        return {stream: o.records[0].first for stream, o in self._open.items()}

    def push(self, record: Record, now: float) -> list[Record]:
        stream = record.stream
        if record.partial is not None:  # pieces of an overlong line are never merged further
            out = self.close(stream)
            self._capped.pop(stream, None)
            out.append(record)
            return out
        current = self._open.get(stream)
        capped = self._capped.get(stream)
        message = record.message
        after_cap = current is None and capped is not None and now < capped[1]
        if (current is not None or after_cap) and self._continuation(message):
            if current is None:
                assert capped is not None
                del self._capped[stream]
                self._begin(record, now, capped[0] + 1)
                return []
            if current.size + 1 + len(message) > self._max_bytes:
                out = self.close(stream)
                self._begin(record, now, current.part + 1)
                return out
            cost = _cost(record)
            current.records.append(record)
            current.size += 1 + len(message)
            current.held += cost
            self._held += cost
            current.deadline = now + self._flush_after
            if len(current.records) < self._max_lines:
                return []
            out = self.close(stream)
            self._capped[stream] = (current.part, current.deadline)
            return out
        starts = bool(self._start(message))
        out = self.close(stream)
        self._capped.pop(stream, None)
        if starts:
            self._begin(record, now, 1)
        else:
            out.append(record)
        return out

    def _begin(self, record: Record, now: float, part: int) -> None:
        cost = _cost(record)
        self._open[record.stream] = _Open(
            [record], len(record.message), cost, now + self._flush_after, part
        )
        self._held += cost

    def next_deadline(self) -> float | None:
        return min((o.deadline for o in self._open.values()), default=None)

    def due(self, now: float) -> list[int]:
        """The streams whose open record's flush deadline has passed."""
        return [stream for stream, o in self._open.items() if o.deadline <= now]

    def streams(self) -> list[int]:
        return list(self._open)

    def flush_due(self, now: float) -> list[Record]:
        out: list[Record] = []
        for stream in self.due(now):
            out.extend(self.close(stream))
        return out

    def flush(self) -> list[Record]:
        out: list[Record] = []
        for stream in self.streams():
            out.extend(self.close(stream))
        return out

    def close(self, stream: int) -> list[Record]:
        """The stream's open record, merged into one; [] when none is open."""
        current = self._open.get(stream)
        if current is None:
            return []
        records = current.records
        if len(records) == 1:
            merged = records[0]
        else:
            first, last = records[0], records[-1]
            merged = Record(
                stream,
                b"\n".join([r.message for r in records]),
                first.timestamp,
                first.first,
                last.last,
            )
            self.merged_records += 1
        if current.part > 1:
            merged.extra_fields += ((CONTINUED_FIELD, b"%d" % current.part),)
        self._forget(stream, current)
        return [merged]

    def release(self, stream: int) -> list[Record]:
        """The stream's held lines as they came, unmerged: the way out when merging failed."""
        current = self._open.get(stream)
        if current is None:
            return []
        self._forget(stream, current)
        return current.records

    def _forget(self, stream: int, current: _Open) -> None:
        del self._open[stream]
        self._held -= current.held
